package socks5test_test

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

func TestBind(t *testing.T) {
	for _, tc := range []struct {
		name string
		dst  socksbind.Addr
		ip   netip.Addr
		ipv6 bool
	}{
		{"ipv4", addr(any4, 0), ip4, false},
		{"ipv6", addr(any6, 0), ip6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ipv6 {
				requireIPv6(t)
			}
			srv := testkit.Proxy(t, nil)
			c, bnd := bind(t, srv, tc.dst)
			assert.Equal(t, tc.ip, bnd.IP)
			require.NotZero(t, bnd.Port)
			assert.Equal(t, 1, srv.ActiveBinds())

			peer := dial(t, bnd.String())
			rep, peerAddr := readReply(t, c)
			require.Equal(t, socksbind.ReplySucceeded, rep, "reply 2")
			assert.Equal(t, wireAddr(peer.LocalAddr()), peerAddr)

			// One connection per BIND: the socket is gone by reply 2.
			assert.Zero(t, srv.ActiveBinds())
			requireRefused(t, bnd)

			exchange(t, c, peer)
		})
	}

	t.Run("peer to client half-close", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		c, bnd := bind(t, srv, addr(any4, 0))
		peer := arrive(t, c, bnd.String())
		exchange(t, peer, c)
	})

	t.Run("report unspecified", func(t *testing.T) {
		srv := testkit.Proxy(t, func(s *socks5test.Server) { s.ReportUnspecified = true })
		c, bnd := bind(t, srv, addr(any4, 0))
		assert.Equal(t, any4, bnd.IP)
		require.NotZero(t, bnd.Port)
		peer := dial(t, addr(ip4, bnd.Port).String())
		rep, peerAddr := readReply(t, c)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		// Reply 2 always carries the real peer address.
		assert.Equal(t, wireAddr(peer.LocalAddr()), peerAddr)
	})

	t.Run("peer data before reply 2", func(t *testing.T) {
		// The peer writes before the server answers: nothing is lost, and
		// the data follows reply 2 on the control connection.
		srv := testkit.Proxy(t, nil)
		c, bnd := bind(t, srv, addr(any4, 0))
		peer := dial(t, bnd.String())
		_, err := peer.Write([]byte("early"))
		require.NoError(t, err)
		require.NoError(t, peer.(*net.TCPConn).CloseWrite())
		rep, _ := readReply(t, c)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, "early", string(got))
	})
}

func TestBindPort(t *testing.T) {
	t.Run("free port is bound", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		c, p := bindFreePort(t, srv)
		peer := arrive(t, c, addr(ip4, p).String())
		exchange(t, c, peer)
	})

	t.Run("busy port gives another", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { busy.Close() })
		p := wireAddr(busy.Addr()).Port
		c, bnd := bind(t, srv, addr(any4, p))
		assert.Equal(t, ip4, bnd.IP)
		assert.NotZero(t, bnd.Port)
		assert.NotEqual(t, p, bnd.Port)

		// The BIND works on the port it got.
		peer := arrive(t, c, bnd.String())
		exchange(t, c, peer)
	})

	t.Run("same port while the connection is open", func(t *testing.T) {
		// The accepted connection still holds the port: without
		// SO_REUSEADDR, Dante cannot bind it again.
		srv := testkit.Proxy(t, nil)
		c1, p := bindFreePort(t, srv)
		arrive(t, c1, addr(ip4, p).String())

		_, bnd2 := bind(t, srv, addr(any4, p))
		assert.NotEqual(t, p, bnd2.Port)
	})

	t.Run("same port after the connection closed", func(t *testing.T) {
		// The server's side closes first, so its socket sits in
		// TIME_WAIT and the port stays in use.
		srv := testkit.Proxy(t, nil)
		c1, p := bindFreePort(t, srv)
		peer := arrive(t, c1, addr(ip4, p).String())
		require.NoError(t, c1.(*net.TCPConn).CloseWrite())
		expectEOF(t, peer)
		require.NoError(t, peer.Close())
		// The server passes the peer's EOF on once its socket has
		// taken the peer's FIN, and so is in TIME_WAIT: the kernel
		// moves it there before it wakes a reader.
		expectEOF(t, c1)

		_, bnd2 := bind(t, srv, addr(any4, p))
		assert.NotEqual(t, p, bnd2.Port)
	})

	t.Run("peer filter ignores the port", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { busy.Close() })
		_, bnd := bind(t, srv, addr(ip4, wireAddr(busy.Addr()).Port))
		assert.Equal(t, ip4, bnd.IP)
		assert.NotEqual(t, wireAddr(busy.Addr()).Port, bnd.Port)
	})
}

func TestBindFilter(t *testing.T) {
	t.Run("other peer refused", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		c, bnd := bind(t, srv, addr(ip4Other, 0))
		assert.Equal(t, ip4, bnd.IP)
		peer, err := dialFrom(t, ip4, bnd.String())
		require.NoError(t, err)
		rep, peerAddr := readReply(t, c)
		assert.Equal(t, socksbind.ReplyNotAllowed, rep)
		assert.Equal(t, wireAddr(peer.LocalAddr()), peerAddr)
		expectEOF(t, c)
		expectEOF(t, peer)
		assert.Zero(t, srv.ActiveBinds())
	})

	t.Run("expected peer accepted", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		c, bnd := bind(t, srv, addr(ip4Other, 0))
		peer, err := dialFrom(t, ip4Other, bnd.String())
		require.NoError(t, err)
		rep, peerAddr := readReply(t, c)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		assert.Equal(t, addr(ip4Other, wireAddr(peer.LocalAddr()).Port), peerAddr)
		exchange(t, c, peer)
	})
}

func TestPeerRules(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	record := func(req *socks5test.Request, peer net.Addr) socksbind.Reply {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, req.Dst.String()+" "+peer.String())
		return socksbind.ReplySucceeded
	}
	refused := func(_ *socks5test.Request, _ net.Addr) socksbind.Reply { return socksbind.ReplyConnectionRefused }

	for _, tc := range []struct {
		name  string
		rules []socks5test.PeerRule
		from  netip.Addr
		want  socksbind.Reply
	}{
		{"refuse peer", []socks5test.PeerRule{socks5test.RefusePeer(ip4)}, ip4, socksbind.ReplyNotAllowed},
		{"refuse other peer", []socks5test.PeerRule{socks5test.RefusePeer(ip4Other)}, ip4, socksbind.ReplySucceeded},
		{"first refusal wins", []socks5test.PeerRule{record, refused, socks5test.RefusePeer(ip4)}, ip4, socksbind.ReplyConnectionRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testkit.Proxy(t, func(s *socks5test.Server) { s.PeerRules = tc.rules })
			c, bnd := bind(t, srv, addr(any4, 0))
			peer, err := dialFrom(t, tc.from, bnd.String())
			require.NoError(t, err)
			rep, peerAddr := readReply(t, c)
			assert.Equal(t, tc.want, rep)
			assert.Equal(t, wireAddr(peer.LocalAddr()), peerAddr)
			if tc.want == socksbind.ReplySucceeded {
				exchange(t, c, peer)
				return
			}
			expectEOF(t, c)
			expectEOF(t, peer)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 1)
	assert.Contains(t, seen[0], "0.0.0.0:0 127.0.0.1:")
}

func TestBindKilled(t *testing.T) {
	// The server closes the BIND socket, then the control connection: when
	// the client can still read, EOF says the socket is gone.
	for _, tc := range []struct {
		name string
		kill func(t *testing.T, c net.Conn)
	}{
		{"control closed", func(t *testing.T, c net.Conn) { require.NoError(t, c.Close()) }},
		{"control half-closed", func(t *testing.T, c net.Conn) {
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
			expectEOF(t, c)
		}},
		{"garbage on control", func(t *testing.T, c net.Conn) {
			_, err := c.Write([]byte{0x05})
			require.NoError(t, err)
			expectEOF(t, c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testkit.Proxy(t, nil)
			c, bnd := bind(t, srv, addr(any4, 0))
			require.Equal(t, 1, srv.ActiveBinds())
			tc.kill(t, c)
			// Check at once: a port just freed may go to another
			// process.
			spin(t, func() bool { return srv.ActiveBinds() == 0 }, "BIND socket closed")
			requireReleased(t, bnd.Port)
		})
	}
}

func TestBindReuse(t *testing.T) {
	reuse := func(s *socks5test.Server) { s.BindMode = socks5test.BindReuse }

	t.Run("same port while the first connection is open", func(t *testing.T) {
		srv := testkit.Proxy(t, reuse)
		c1, p := bindFreePort(t, srv)
		binds := srv.ActiveBinds()
		peer1 := arrive(t, c1, addr(ip4, p).String())
		assert.Equal(t, binds, srv.ActiveBinds(), "socket pooled")

		c2, bnd2 := bind(t, srv, addr(any4, p))
		assert.Equal(t, addr(ip4, p), bnd2)
		peer2 := dial(t, bnd2.String())
		rep, peerAddr := readReply(t, c2)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		assert.Equal(t, wireAddr(peer2.LocalAddr()), peerAddr)
		assert.Equal(t, binds, srv.ActiveBinds())

		exchange(t, c1, peer1)
		exchange(t, peer2, c2)
	})

	t.Run("peer waits in the backlog for the next bind", func(t *testing.T) {
		srv := testkit.Proxy(t, reuse)
		c1, p := bindFreePort(t, srv)
		bnd := addr(ip4, p)
		arrive(t, c1, bnd.String())

		// No BIND waits: the kernel completes the handshake anyway.
		early := dial(t, bnd.String())
		_, err := early.Write([]byte("queued"))
		require.NoError(t, err)

		c2, bnd2 := bind(t, srv, addr(any4, p))
		require.Equal(t, addr(ip4, p), bnd2)
		rep, peerAddr := readReply(t, c2)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		assert.Equal(t, wireAddr(early.LocalAddr()), peerAddr)
		got := make([]byte, len("queued"))
		_, err = io.ReadFull(c2, got)
		require.NoError(t, err)
		assert.Equal(t, "queued", string(got))
	})

	t.Run("control closed returns the socket to the pool", func(t *testing.T) {
		srv := testkit.Proxy(t, reuse)
		c1, p := bindFreePort(t, srv)
		binds := srv.ActiveBinds()
		// The server puts the socket back before it closes the control
		// connection: EOF says it is in the pool.
		require.NoError(t, c1.(*net.TCPConn).CloseWrite())
		expectEOF(t, c1)

		c2, bnd2 := bind(t, srv, addr(any4, p))
		assert.Equal(t, addr(ip4, p), bnd2)
		assert.Equal(t, binds, srv.ActiveBinds())
		peer := arrive(t, c2, bnd2.String())
		exchange(t, c2, peer)
	})

	t.Run("pooled sockets close with the server", func(t *testing.T) {
		srv := testkit.Proxy(t, reuse)
		c, bnd := bind(t, srv, addr(any4, 0))
		require.NoError(t, c.(*net.TCPConn).CloseWrite())
		expectEOF(t, c)
		require.Equal(t, 1, srv.ActiveBinds(), "socket pooled")
		srv.Close()
		assert.Zero(t, srv.ActiveBinds())
		requireReleased(t, bnd.Port)
	})
}
