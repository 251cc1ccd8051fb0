package socks5test

import (
	"net"
	"time"

	"github.com/xtaci/smux"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/relay"
)

// multiplexConfig returns the smux configuration of an MBIND session, the
// one GOST v3 uses, and smux's default: smux protocol version 1, a keep-alive every 10 seconds,
// the session dropped after 30 seconds without a frame from the other side,
// frames of at most 32 KiB, 4 MiB of receive buffer for the session and
// 64 KiB per stream. The server is the smux client of the session; a SOCKS
// client runs the smux server with the same configuration.
func multiplexConfig() *smux.Config {
	return &smux.Config{
		Version:           1,
		KeepAliveInterval: 10 * time.Second,
		KeepAliveTimeout:  30 * time.Second,
		MaxFrameSize:      32768,
		MaxReceiveBuffer:  4194304,
		MaxStreamBuffer:   65536,
	}
}

// multiplexBind serves an MBIND: reply 1, then an smux session over the
// control connection in which every peer accepted on the bound socket gets a
// stream of its own. It owns the bound socket and the session; the session's
// end closes the socket, and the socket's end the session.
func (s *Server) multiplexBind(c net.Conn, req *Request) {
	dst := req.Dst
	if dst.Name != "" {
		writeReply(c, socksbind.ReplyAddressTypeNotSupported, socksbind.Addr{})
		return
	}
	network, ip, port := bindAddr(dst)
	// A plain socket, SO_REUSEADDR set as Go does: GOST's own listener.
	ln, err := s.listenBind(net.ListenConfig{}, network, ip, port)
	if err != nil {
		writeReply(c, socksbind.ReplyGeneralFailure, socksbind.Addr{})
		return
	}
	defer s.closeBind(ln)
	if err := writeReply(c, socksbind.ReplySucceeded, s.bound(ln.Addr())); err != nil {
		return
	}

	cfg := multiplexConfig()
	if s.MultiplexVersion != 0 {
		cfg.Version = s.MultiplexVersion
	}
	sess, err := smux.Client(c, cfg)
	if err != nil {
		return
	}
	if !s.conns.Track(sess) {
		return
	}
	defer s.conns.Release(sess)

	// Streams the client opens are closed at once, as GOST does. The
	// session ends (the client closed it, the control connection failed,
	// keep-alives stopped) when AcceptStream fails: the socket closes.
	s.wg.Go(func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				break
			}
			st.Close()
		}
		s.closeBind(ln)
	})

	for {
		peer, err := ln.Accept()
		if err != nil {
			return
		}
		if !s.conns.Track(peer) {
			return
		}
		s.wg.Go(func() { s.multiplexPeer(sess, req, peer) })
	}
}

// multiplexPeer opens the stream of one MBIND peer, sends the SOCKS5 reply
// naming the peer, unless MultiplexNoHeader is set, and relays.
func (s *Server) multiplexPeer(sess *smux.Session, req *Request, peer net.Conn) {
	defer s.conns.Release(peer)
	if s.peerReply(req, peer) != socksbind.ReplySucceeded {
		// No reply 2 to carry a refusal: the peer is closed, and the
		// client never hears of it.
		return
	}
	st, err := sess.OpenStream()
	if err != nil {
		return
	}
	defer st.Close()
	if !s.MultiplexNoHeader {
		pa := netutil.AddrPort(peer.RemoteAddr())
		if err := writeReply(st, socksbind.ReplySucceeded, socksbind.Addr{IP: pa.Addr(), Port: pa.Port()}); err != nil {
			return
		}
	}
	relay.Run(&s.wg, st, peer)
}

// closeBind closes a listening socket that is never pooled, an MBIND's.
// It does nothing for a socket already closed.
func (s *Server) closeBind(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.binds[ln]; ok {
		delete(s.binds, ln)
		ln.Close()
	}
}
