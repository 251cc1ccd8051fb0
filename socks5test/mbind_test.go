package socks5test_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/xtaci/smux"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

// newMultiplexServer starts a server that answers MBIND, configured further
// by setup.
func newMultiplexServer(t *testing.T, setup func(*socks5test.Server)) *socks5test.Server {
	t.Helper()
	return testkit.Proxy(t, func(s *socks5test.Server) {
		s.Multiplex = true
		if setup != nil {
			setup(s)
		}
	})
}

// mbind sends an MBIND for dst, requires reply 1 to succeed, and runs the
// client's side of the session over the control connection, as a SOCKS
// client does: an smux server. The session is closed when the test ends.
func mbind(t *testing.T, srv *socks5test.Server, dst socksbind.Addr) (*smux.Session, net.Conn, socksbind.Addr) {
	t.Helper()
	c, rep, bnd := request(t, srv, socksbind.CmdMultiplexBind, dst)
	require.Equal(t, socksbind.ReplySucceeded, rep, "reply 1")
	sess, err := smux.Server(c, smux.DefaultConfig())
	require.NoError(t, err)
	t.Cleanup(func() { sess.Close() })
	return sess, c, bnd
}

// smuxGoroutines counts the goroutines of smux sessions, the server's and
// the test's.
func smuxGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/xtaci/smux.") {
			n++
		}
	}
	return n
}

func TestMBIND(t *testing.T) {
	t.Run("several peers at once", func(t *testing.T) {
		srv := newMultiplexServer(t, nil)
		sess, _, bnd := mbind(t, srv, addr(any4, 0))
		assert.Equal(t, ip4, bnd.IP)
		require.NotZero(t, bnd.Port)
		assert.Equal(t, 1, srv.ActiveBinds(), "one socket for the session")

		const n = 3
		peers := map[socksbind.Addr]net.Conn{}
		for range n {
			p := dial(t, bnd.String())
			peers[wireAddr(p.LocalAddr())] = p
		}
		for range n {
			st := testkit.AcceptStream(t, sess, testTimeout)
			rep, from := readReply(t, st)
			require.Equal(t, socksbind.ReplySucceeded, rep, "stream header")
			peer, ok := peers[from]
			require.True(t, ok, "the header names a peer: %v", from)
			delete(peers, from)

			msg := "to " + from.String()
			_, err := io.WriteString(st, msg)
			require.NoError(t, err)
			got := make([]byte, len(msg))
			_, err = io.ReadFull(peer, got)
			require.NoError(t, err)
			assert.Equal(t, msg, string(got))
			exchange(t, peer, st)
		}
		assert.Empty(t, peers, "every peer got a stream")
		assert.Equal(t, 1, srv.ActiveBinds(), "the socket stays for more peers")

		reqs := srv.Requests()
		require.Len(t, reqs, 1)
		assert.Equal(t, socksbind.CmdMultiplexBind, reqs[0].Command)
		assert.Equal(t, addr(any4, 0), reqs[0].Dst)
	})

	t.Run("ipv6", func(t *testing.T) {
		requireIPv6(t)
		srv := newMultiplexServer(t, nil)
		sess, _, bnd := mbind(t, srv, addr(any6, 0))
		assert.Equal(t, ip6, bnd.IP)
		peer := dial(t, bnd.String())
		st := testkit.AcceptStream(t, sess, testTimeout)
		rep, from := readReply(t, st)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		assert.Equal(t, wireAddr(peer.LocalAddr()), from)
		exchange(t, st, peer)
	})

	t.Run("header bytes", func(t *testing.T) {
		// 05 00 00 01, the IPv4 address and the port: 10 bytes, then
		// the peer's own.
		srv := newMultiplexServer(t, nil)
		sess, _, bnd := mbind(t, srv, addr(any4, 0))
		peer := dial(t, bnd.String())
		_, err := peer.Write([]byte("first"))
		require.NoError(t, err)
		st := testkit.AcceptStream(t, sess, testTimeout)
		pa := netip.MustParseAddrPort(peer.LocalAddr().String())
		want := append([]byte{5, 0, 0, 1}, pa.Addr().AsSlice()...)
		want = append(want, byte(pa.Port()>>8), byte(pa.Port()), 'f', 'i', 'r', 's', 't')
		got := make([]byte, len(want))
		_, err = io.ReadFull(st, got)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	})

	t.Run("no header", func(t *testing.T) {
		srv := newMultiplexServer(t, func(s *socks5test.Server) { s.MultiplexNoHeader = true })
		sess, _, bnd := mbind(t, srv, addr(any4, 0))
		peer := dial(t, bnd.String())
		_, err := peer.Write([]byte("first"))
		require.NoError(t, err)
		st := testkit.AcceptStream(t, sess, testTimeout)
		got := make([]byte, 5)
		_, err = io.ReadFull(st, got)
		require.NoError(t, err)
		assert.Equal(t, "first", string(got), "the peer's bytes come first")
		exchange(t, st, peer)
	})

	t.Run("one MiB each way", func(t *testing.T) {
		srv := newMultiplexServer(t, nil)
		sess, _, bnd := mbind(t, srv, addr(any4, 0))
		peer := dial(t, bnd.String())
		st := testkit.AcceptStream(t, sess, testTimeout)
		readReply(t, st)

		up := make([]byte, 1<<20)
		down := make([]byte, 1<<20)
		rand.Read(up)
		rand.Read(down)
		// Both directions at once, each writer half-closing when done.
		send := func(c net.Conn, b []byte) <-chan error {
			done := make(chan error, 1)
			go func() {
				_, err := c.Write(b)
				if err == nil {
					err = c.(interface{ CloseWrite() error }).CloseWrite()
				}
				done <- err
			}()
			return done
		}
		upDone := send(peer, up)
		downDone := send(st, down)
		atClient, err := io.ReadAll(st)
		require.NoError(t, err)
		atPeer, err := io.ReadAll(peer)
		require.NoError(t, err)
		require.NoError(t, <-upDone)
		require.NoError(t, <-downDone)
		assert.True(t, bytes.Equal(up, atClient), "peer to client: %d bytes", len(atClient))
		assert.True(t, bytes.Equal(down, atPeer), "client to peer: %d bytes", len(atPeer))
	})

	t.Run("port asked for", func(t *testing.T) {
		srv := newMultiplexServer(t, nil)
		for range 10 {
			p := uint16(testkit.FreePort(t, net.ListenConfig{Control: netutil.NoReuseAddr}))
			sess, c, bnd := mbind(t, srv, addr(any4, p))
			if bnd.Port != p {
				// Taken in between by another process.
				sess.Close()
				c.Close()
				continue
			}
			peer := dial(t, addr(ip4, p).String())
			st := testkit.AcceptStream(t, sess, testTimeout)
			_, from := readReply(t, st)
			assert.Equal(t, wireAddr(peer.LocalAddr()), from)
			return
		}
		require.FailNow(t, "an MBIND for a free port never got it")
	})

	t.Run("streams from the client are closed", func(t *testing.T) {
		srv := newMultiplexServer(t, nil)
		sess, _, bnd := mbind(t, srv, addr(any4, 0))
		st, err := sess.OpenStream()
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		require.NoError(t, st.SetDeadline(time.Now().Add(testTimeout)))
		expectEOF(t, st)

		// The session goes on.
		peer := dial(t, bnd.String())
		got := testkit.AcceptStream(t, sess, testTimeout)
		_, from := readReply(t, got)
		assert.Equal(t, wireAddr(peer.LocalAddr()), from)
	})
}

func TestMBINDEnd(t *testing.T) {
	// However the session ends, the socket closes, and so does every
	// stream's peer.
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, sess *smux.Session, c net.Conn)
	}{
		{"session closed", func(t *testing.T, sess *smux.Session, _ net.Conn) { require.NoError(t, sess.Close()) }},
		{"control closed", func(t *testing.T, _ *smux.Session, c net.Conn) { require.NoError(t, c.Close()) }},
		{"control half-closed", func(t *testing.T, _ *smux.Session, c net.Conn) {
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
		}},
		{"not smux on control", func(t *testing.T, _ *smux.Session, c net.Conn) {
			_, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newMultiplexServer(t, nil)
			sess, c, bnd := mbind(t, srv, addr(any4, 0))
			peer := dial(t, bnd.String())
			st := testkit.AcceptStream(t, sess, testTimeout)
			readReply(t, st)
			require.Equal(t, 1, srv.ActiveBinds())

			tc.end(t, sess, c)
			// Check at once: a port just freed may go to another
			// process.
			spin(t, func() bool { return srv.ActiveBinds() == 0 }, "MBIND socket closed")
			requireReleased(t, bnd.Port)
			expectEOF(t, peer)
		})
	}
}

func TestMBINDRefusals(t *testing.T) {
	t.Run("rules refuse in reply 1", func(t *testing.T) {
		srv := newMultiplexServer(t, func(s *socks5test.Server) {
			s.Rules = []socks5test.Rule{socks5test.RefuseCommand(socksbind.CmdMultiplexBind, socksbind.ReplyNotAllowed)}
		})
		c, rep, bnd := request(t, srv, socksbind.CmdMultiplexBind, addr(any4, 0))
		assert.Equal(t, socksbind.ReplyNotAllowed, rep)
		assert.Equal(t, addr(any4, 0), bnd)
		expectEOF(t, c)
		assert.Zero(t, srv.ActiveBinds())
		assert.Len(t, srv.Requests(), 1, "the refused request is recorded")
	})

	t.Run("domain name", func(t *testing.T) {
		srv := newMultiplexServer(t, nil)
		c, rep, _ := request(t, srv, socksbind.CmdMultiplexBind, socksbind.Addr{Name: "localhost"})
		assert.Equal(t, socksbind.ReplyAddressTypeNotSupported, rep)
		expectEOF(t, c)
		assert.Zero(t, srv.ActiveBinds())
	})

	for _, tc := range []struct {
		name  string
		dst   netip.Addr
		rules []socks5test.PeerRule
	}{
		{"peer rule", any4, []socks5test.PeerRule{socks5test.RefusePeer(ip4Other)}},
		{"expected peer", ip4, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A refused peer is closed without a stream; the next one
			// gets the session's next stream.
			srv := newMultiplexServer(t, func(s *socks5test.Server) { s.PeerRules = tc.rules })
			sess, _, bnd := mbind(t, srv, addr(tc.dst, 0))
			refused, err := dialFrom(t, ip4Other, addr(ip4, bnd.Port).String())
			require.NoError(t, err)
			expectEOF(t, refused)
			allowed := dial(t, addr(ip4, bnd.Port).String())
			st := testkit.AcceptStream(t, sess, testTimeout)
			rep, from := readReply(t, st)
			require.Equal(t, socksbind.ReplySucceeded, rep)
			assert.Equal(t, wireAddr(allowed.LocalAddr()), from, "the first stream is the allowed peer's")
			exchange(t, st, allowed)
		})
	}

	t.Run("off", func(t *testing.T) {
		// Without Multiplex, 0xF2 is an unknown command: closed
		// without a reply, as Dante does.
		srv := testkit.Proxy(t, nil)
		c := open(t, srv)
		sendRequest(t, c, socksbind.CmdMultiplexBind, addr(any4, 0))
		expectEOF(t, c)
		assert.Zero(t, srv.ActiveBinds())
		reqs := srv.Requests()
		require.Len(t, reqs, 1)
		assert.Equal(t, socksbind.CmdMultiplexBind, reqs[0].Command)
	})
}

func TestMBINDClose(t *testing.T) {
	before := runtime.NumGoroutine()
	srv := socks5test.NewUnstartedServer()
	srv.Multiplex = true
	srv.Start()

	c, rep, bnd := request(t, srv, socksbind.CmdMultiplexBind, addr(any4, 0))
	require.Equal(t, socksbind.ReplySucceeded, rep)
	sess, err := smux.Server(c, smux.DefaultConfig())
	require.NoError(t, err)
	peer := dial(t, bnd.String())
	require.NoError(t, sess.SetDeadline(time.Now().Add(testTimeout)))
	st, err := sess.AcceptStream()
	require.NoError(t, err)
	require.NoError(t, st.SetDeadline(time.Now().Add(testTimeout)))
	readReply(t, st)
	idle := dial(t, bnd.String()) // a second peer, its stream not accepted
	testkit.Eventually(t, testTimeout, func() bool { return sess.NumStreams() == 2 }, "second stream opened")

	srv.Close()
	assert.Zero(t, srv.ActiveBinds())
	expectEOF(t, peer)
	expectEOF(t, idle)
	_, err = st.Read(make([]byte, 1))
	assert.Error(t, err, "the stream ends with the session")
	require.NoError(t, sess.Close())
	requireReleased(t, bnd.Port)

	testkit.Eventually(t, testTimeout, func() bool { return smuxGoroutines() == 0 }, "smux goroutines left")
	testkit.Eventually(t, testTimeout, func() bool { return runtime.NumGoroutine() <= before }, "goroutines left after Close")
}
