package socks5test

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/srvwire"
)

// CmdUDPTun is the command of GOST's UDP-over-TCP (UDP-TUN), 0xF3, the same
// as [socksbind.CmdUDPTun]. See [Server.UDPTun].
const CmdUDPTun = socksbind.CmdUDPTun

// maxDatagram is the largest UDP datagram on loopback, header included.
const maxDatagram = 65535

// associate serves UDP ASSOCIATE as Dante does: a relay socket the client
// sends to, another socket that talks to targets, and the association held
// for exactly as long as the control connection. Datagrams to the relay
// from anyone but the client, and those whose header is malformed or has
// RSV or FRAG not 0, are dropped. The client is the address DST.ADDR and
// DST.PORT declare, an unspecified IP standing for the control connection's
// and port 0 for whichever port of that IP sends first.
func (s *Server) associate(c net.Conn, req *Request) {
	host := netutil.AddrPort(c.LocalAddr()).Addr()
	relaySock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)))
	if err != nil {
		writeReply(c, socksbind.ReplyGeneralFailure, socksbind.Addr{})
		return
	}
	out, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)))
	if err != nil {
		relaySock.Close()
		writeReply(c, socksbind.ReplyGeneralFailure, socksbind.Addr{})
		return
	}
	spoof, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)))
	if err != nil {
		relaySock.Close()
		out.Close()
		writeReply(c, socksbind.ReplyGeneralFailure, socksbind.Addr{})
		return
	}
	for _, u := range []*net.UDPConn{relaySock, out, spoof} {
		if !s.conns.Track(u) {
			relaySock.Close()
			out.Close()
			spoof.Close()
			return
		}
		defer s.conns.Release(u)
	}
	if err := writeReply(c, socksbind.ReplySucceeded, s.bound(relaySock.LocalAddr())); err != nil {
		return
	}

	clientIP := netutil.AddrPort(c.RemoteAddr()).Addr()
	if ip := req.Dst.IP.Unmap(); req.Dst.Name == "" && ip.IsValid() && !ip.IsUnspecified() {
		clientIP = ip
	}
	a := &association{s: s, ctrl: c, relay: relaySock, out: out, spoof: spoof, clientIP: clientIP}
	if req.Dst.Port != 0 {
		ap := netip.AddrPortFrom(clientIP, req.Dst.Port)
		a.client.Store(&ap)
	}
	var wg sync.WaitGroup
	s.wg.Add(2)
	wg.Add(2)
	go func() { defer s.wg.Done(); defer wg.Done(); a.up() }()
	go func() { defer s.wg.Done(); defer wg.Done(); a.down() }()
	// The association ends with the control connection.
	io.Copy(io.Discard, c)
	relaySock.Close()
	out.Close()
	spoof.Close()
	wg.Wait()
}

// association is one UDP ASSOCIATE being served.
type association struct {
	s                 *Server
	ctrl              net.Conn
	relay, out, spoof *net.UDPConn
	clientIP          netip.Addr
	client            atomic.Pointer[netip.AddrPort] // nil until known
}

// up relays datagrams from the client to their targets.
func (a *association) up() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := a.relay.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if cl := a.client.Load(); cl != nil {
			if *cl != from {
				continue
			}
		} else if from.Addr() != a.clientIP {
			continue
		} else {
			learned := from
			a.client.Store(&learned)
		}
		dst, data, err := srvwire.ParseUDPHeader(buf[:n])
		if err != nil {
			continue
		}
		to, ok := a.s.resolveUDP(dst)
		if !ok {
			continue
		}
		a.out.WriteToUDPAddrPort(data, to)
	}
}

// down relays datagrams from targets to the client, through the Datagram
// hook.
func (a *association) down() {
	buf := make([]byte, maxDatagram)
	pkt := make([]byte, 0, srvwire.MaxUDPHeader+maxDatagram)
	for {
		n, from, err := a.out.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		cl := a.client.Load()
		if cl == nil {
			continue
		}
		src := socksbind.Addr{IP: from.Addr().Unmap(), Port: from.Port()}
		pkt = srvwire.AppendUDPHeader(pkt[:0], src)
		pkt = append(pkt, buf[:n]...)
		if a.s.Hooks.Datagram == nil {
			a.relay.WriteToUDPAddrPort(pkt, *cl)
			continue
		}
		for _, d := range a.s.Hooks.Datagram(pkt) {
			sock := a.relay
			if d.Spoofed {
				sock = a.spoof
			}
			if d.Bytes != nil {
				sock.WriteToUDPAddrPort(d.Bytes, *cl)
			}
			if d.Close {
				a.ctrl.Close()
				return
			}
		}
	}
}

// resolveUDP is where a datagram to dst goes: Hosts first, then a lookup.
func (s *Server) resolveUDP(dst socksbind.Addr) (netip.AddrPort, bool) {
	if dst.Name == "" {
		return netip.AddrPortFrom(dst.IP.Unmap(), dst.Port), true
	}
	if ip, ok := s.Hosts[dst.Name]; ok {
		return netip.AddrPortFrom(ip, dst.Port), true
	}
	ua, err := net.ResolveUDPAddr("udp", dst.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// udpTun serves GOST's UDP-TUN: the reply carries 0.0.0.0 and the port of
// the socket that talks to targets, as GOST's does, then frames travel on
// the connection both ways until it ends. A malformed frame ends it.
func (s *Server) udpTun(c net.Conn, req *Request) {
	if req.Dst.Port != 0 {
		// GOST's UDP BIND, which this server does not have.
		writeReply(c, socksbind.ReplyNotAllowed, socksbind.Addr{})
		return
	}
	host := netutil.AddrPort(c.LocalAddr()).Addr()
	out, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)))
	if err != nil {
		writeReply(c, socksbind.ReplyGeneralFailure, socksbind.Addr{})
		return
	}
	if !s.conns.Track(out) {
		return
	}
	defer s.conns.Release(out)
	port := uint16(out.LocalAddr().(*net.UDPAddr).Port)
	if err := writeReply(c, socksbind.ReplySucceeded, socksbind.Addr{IP: netip.IPv4Unspecified(), Port: port}); err != nil {
		return
	}
	done := make(chan struct{})
	s.wg.Go(func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		pkt := make([]byte, 0, srvwire.MaxUDPHeader+maxDatagram)
		for {
			n, from, err := out.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			src := socksbind.Addr{IP: from.Addr().Unmap(), Port: from.Port()}
			if pkt, err = srvwire.AppendTunHeader(pkt[:0], n, src); err != nil {
				continue // an empty datagram: a frame cannot carry it
			}
			pkt = append(pkt, buf[:n]...)
			if s.Hooks.Datagram == nil {
				if _, err := c.Write(pkt); err != nil {
					c.Close()
					return
				}
				continue
			}
			for _, d := range s.Hooks.Datagram(pkt) {
				if _, err := c.Write(d.Bytes); err != nil || d.Close {
					c.Close()
					return
				}
			}
		}
	})
	br := bufio.NewReaderSize(c, 64<<10)
	buf := make([]byte, srvwire.MaxTunData)
	for {
		dst, data, err := srvwire.ReadTunFrame(br, buf)
		if err != nil {
			break
		}
		if to, ok := s.resolveUDP(dst); ok {
			out.WriteToUDPAddrPort(data, to)
		}
	}
	out.Close()
	<-done
}
