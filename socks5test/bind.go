package socks5test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/relay"
)

// A BindMode selects what the server does with a BIND's listening socket
// once its peer was accepted.
type BindMode int

const (
	// BindDante closes the listening socket when the peer is accepted:
	// one connection per BIND, as Dante and every standards-following
	// server do. A second peer connecting to the port is refused. The
	// socket is made without SO_REUSEADDR, so asking for the same port
	// again while the accepted connection is open, or while the port is
	// in TIME_WAIT, binds a different port.
	BindDante BindMode = iota

	// BindReuse keeps the listening socket open once its peer was
	// accepted, in a pool keyed by its address, as some servers do. A
	// later BIND, from any client, with an unspecified DST.ADDR of the
	// same family and the socket's port as DST.PORT takes the pooled
	// socket, so it gets the same port even while the previous
	// connection is still open. A peer that connects while no BIND is
	// waiting stays in the kernel's backlog and is accepted by the next
	// BIND of that port. A socket whose client gave up before a peer came
	// also goes back to the pool. Pooled sockets close with the server.
	BindReuse
)

func (m BindMode) String() string {
	switch m {
	case BindDante:
		return "dante"
	case BindReuse:
		return "reuse"
	}
	return "bind mode " + strconv.Itoa(int(m))
}

type acceptResult struct {
	conn net.Conn
	err  error
}

func (s *Server) bind(c net.Conn, req *Request) {
	dst := req.Dst
	if dst.Name != "" {
		writeReply(c, socksbind.ReplyAddressTypeNotSupported, socksbind.Addr{})
		return
	}
	ln, err := s.bindListener(dst)
	if err != nil {
		writeReply(c, socksbind.ReplyGeneralFailure, socksbind.Addr{})
		return
	}
	if err := writeReply(c, socksbind.ReplySucceeded, s.bound(ln.Addr())); err != nil {
		s.releaseBind(ln)
		return
	}

	// Wait for a peer while watching the control connection: the client
	// closing it, or sending anything at all, kills the BIND.
	accepted := make(chan acceptResult, 1)
	s.wg.Go(func() {
		conn, err := ln.Accept()
		accepted <- acceptResult{conn, err}
	})
	control := make(chan error, 1)
	s.wg.Go(func() {
		var b [1]byte
		_, err := c.Read(b[:])
		control <- err
	})

	var peer net.Conn
	select {
	case r := <-accepted:
		s.releaseBind(ln)
		// Stop watching the control connection. Anything that arrived
		// before, even together with the peer, killed the BIND.
		c.SetReadDeadline(deadlines.LongAgo)
		err := <-control
		if r.err != nil {
			return
		}
		if !s.conns.Track(r.conn) {
			return
		}
		peer = r.conn
		defer s.conns.Release(peer)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if c.SetReadDeadline(time.Time{}) != nil {
			return
		}
	case <-control:
		if s.BindMode == BindDante {
			// Close at once, so that a peer connecting from now on
			// is refused.
			s.releaseBind(ln)
		} else {
			// Keep the socket for the pool: only stop the Accept.
			ln.(*net.TCPListener).SetDeadline(deadlines.LongAgo)
		}
		if r := <-accepted; r.conn != nil {
			// A peer raced in: accepted, then reset.
			r.conn.Close()
		}
		if s.BindMode == BindReuse {
			s.releaseBind(ln)
		}
		return
	}

	if s.fault(StageBindReply, c, req) {
		return
	}
	peerAddr := netutil.AddrPort(peer.RemoteAddr())
	rep := s.peerReply(req, peer)
	if err := writeReply(c, rep, socksbind.Addr{IP: peerAddr.Addr(), Port: peerAddr.Port()}); err != nil {
		return
	}
	if rep != socksbind.ReplySucceeded {
		return
	}
	relay.Run(&s.wg, c, peer)
}

// peerReply decides whether the peer of the BIND or MBIND request req may
// in: a DST.ADDR other than the unspecified address lets only that IP in,
// then PeerRules have their say.
func (s *Server) peerReply(req *Request, peer net.Conn) socksbind.Reply {
	if ip := req.Dst.IP.Unmap(); !ip.IsUnspecified() && netutil.AddrPort(peer.RemoteAddr()).Addr() != ip {
		return socksbind.ReplyNotAllowed
	}
	for _, rule := range s.PeerRules {
		if rep := rule(req, peer.RemoteAddr()); rep != socksbind.ReplySucceeded {
			return rep
		}
	}
	return socksbind.ReplySucceeded
}

// bindAddr returns where a BIND or MBIND to dst listens: the loopback
// address of dst's family and, for an unspecified dst, the port it asks for.
func bindAddr(dst socksbind.Addr) (network string, ip netip.Addr, port uint16) {
	ip = netip.IPv6Loopback()
	network = "tcp6"
	if dst.IP.Unmap().Is4() {
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		network = "tcp4"
	}
	if dst.IP.Unmap().IsUnspecified() {
		port = dst.Port
	}
	return network, ip, port
}

// bindListener opens, or in BindReuse mode takes from the pool, the
// listening socket for a BIND to dst, and registers it.
func (s *Server) bindListener(dst socksbind.Addr) (net.Listener, error) {
	network, ip, port := bindAddr(dst)
	if port != 0 && s.BindMode == BindReuse {
		s.mu.Lock()
		key := netip.AddrPortFrom(ip, port)
		ln, ok := s.pool[key]
		delete(s.pool, key)
		s.mu.Unlock()
		if ok {
			return ln, nil
		}
	}

	lc := net.ListenConfig{}
	if s.BindMode == BindDante {
		lc.Control = netutil.NoReuseAddr
	}
	return s.listenBind(lc, network, ip, port)
}

// listenBind opens a listening socket on ip and port, or on another port
// when port is taken, and registers it.
func (s *Server) listenBind(lc net.ListenConfig, network string, ip netip.Addr, port uint16) (net.Listener, error) {
	ln, err := lc.Listen(s.ctx, network, netip.AddrPortFrom(ip, port).String())
	if port != 0 && errors.Is(err, syscall.EADDRINUSE) {
		ln, err = lc.Listen(s.ctx, network, netip.AddrPortFrom(ip, 0).String())
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		ln.Close()
		return nil, net.ErrClosed
	}
	s.binds[ln] = struct{}{}
	return ln, nil
}

// releaseBind is done with a BIND's listening socket: BindDante closes it,
// BindReuse puts it back in the pool, ready for the next BIND of its port.
// It does nothing for a socket Close already closed.
func (s *Server) releaseBind(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.binds[ln]; !ok {
		// Already closed, by Close or an earlier call.
		return
	}
	if s.BindMode == BindReuse && ln.(*net.TCPListener).SetDeadline(time.Time{}) == nil {
		s.pool[netutil.AddrPort(ln.Addr())] = ln
		return
	}
	delete(s.binds, ln)
	ln.Close()
}
