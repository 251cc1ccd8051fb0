package integration

// Tests against GOST v3 (gost): CONNECT and standard BIND through the
// library, and GOST's multiplexed BIND (MBIND, command 0xF2) on the raw wire,
// which pins what GOST sends for the library's MBIND listener to read.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/xtaci/smux"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/testkit"
)

// cmdMBIND is GOST's multiplexed BIND.
const cmdMBIND = byte(socksbind.CmdMultiplexBind)

// gostListeners returns the addresses GOST listens on with port. GOST
// listens before it sends reply 1, so no wait is needed.
func gostListeners(t *testing.T, s *Server, port uint16) []netip.AddrPort {
	t.Helper()
	addrs, ok := groupListeners(s.pid, int(port))
	require.True(t, ok, "/proc/net/tcp is readable")
	return addrs
}

// pollGostReleased polls until no process of GOST's listens on port: GOST
// closes a bound socket asynchronously. Unlike a dial, this cannot be fooled
// by another process that takes the port meanwhile.
func pollGostReleased(t *testing.T, s *Server, port uint16) {
	t.Helper()
	if !testkit.Poll(testTimeout, func() bool { return !ownsListener(s.pid, int(port)) }) {
		require.FailNow(t, "GOST still listens", "port %d", port)
	}
}

// TestGostConnect runs CONNECT through GOST, with and without
// username/password authentication.
func TestGostConnect(t *testing.T) {
	leakcheck.Check(t)
	echo := testkit.Echo(t, "tcp4")

	t.Run("NoAuth", func(t *testing.T) {
		gost := startGost(t, GostConfig{})
		d := newDialer(t, gost.Addr, nil, nil)
		c, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		sc := asConn(t, c)
		assert.Equal(t, "hello gost", roundTrip(t, sc, "hello gost"), "echo, after a half-close")
		// The reply carries GOST's address for the outgoing connection.
		assert.Equal(t, nextPeer(t, echo.Peers), netutil.AddrPort(sc.LocalAddr()))
		assert.Equal(t, echo.Addr().String(), sc.RemoteAddr().String())
	})

	t.Run("Refused", func(t *testing.T) {
		// GOST answers every failed dial with reply 3.
		gost := startGost(t, GostConfig{})
		d := newDialer(t, gost.Addr, nil, nil)
		addr := fmt.Sprintf("127.0.0.1:%d", refusedPort(t))
		c, err := d.DialContext(testContext(t), "tcp", addr)
		assert.Nil(t, c)
		requireReplyError(t, err, "socks connect", socksbind.CmdConnect, socksbind.ReplyNetworkUnreachable,
			socksbind.ErrNetworkUnreachable, syscall.ENETUNREACH)
		var oe *net.OpError
		require.ErrorAs(t, err, &oe)
		assert.Equal(t, addr, oe.Addr.String())
		assert.Equal(t, gost.Addr, oe.Source.String())
	})

	t.Run("Username", func(t *testing.T) {
		gost := startGost(t, GostConfig{User: "alice", Password: "secret"})

		d := newDialer(t, gost.Addr, &proxy.Auth{User: "alice", Password: "secret"}, nil)
		c, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, "alice via gost", roundTrip(t, asConn(t, c), "alice via gost"))

		d = newDialer(t, gost.Addr, &proxy.Auth{User: "alice", Password: "wrong"}, nil)
		_, err = d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.ErrorIs(t, err, socksbind.ErrAuthRejected)
		var re *socksbind.ReplyError
		assert.NotErrorAs(t, err, &re, "a rejected login is not a reply")
		assert.NotContains(t, err.Error(), "wrong", "the password stays out of the error")

		d = newDialer(t, gost.Addr, nil, nil)
		_, err = d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.ErrorIs(t, err, socksbind.ErrNoAcceptableAuth)
	})
}

// TestGostBind runs the library's standard BIND listener (MultiplexOff)
// against GOST, where DST.ADDR:DST.PORT is the address GOST listens on.
func TestGostBind(t *testing.T) {
	leakcheck.Check(t)
	gost := startGost(t, GostConfig{})
	d := newDialer(t, gost.Addr, nil, nil)

	t.Run("Addr", func(t *testing.T) {
		ln := listen(t, d, socksbind.ListenConfig{}, ":0")
		addr := netutil.AddrPort(ln.Addr())
		assert.Equal(t, loopback4, addr.Addr(), "reply 1 carries GOST's address on the control connection")
		require.NotZero(t, addr.Port())
		assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), addr.Port())},
			gostListeners(t, gost, addr.Port()), "GOST listens on 0.0.0.0")

		peer := dialPeer(t, "127.0.0.1", ln.Addr())
		c := accept(t, ln)
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()), "reply 2 carries the peer")
		assert.Equal(t, addr, netutil.AddrPort(c.LocalAddr()))
		bothWays(t, c, peer)
	})

	t.Run("ListensOnDstAddr", func(t *testing.T) {
		for _, host := range []string{"127.0.0.1", "127.0.0.2"} {
			t.Run(host, func(t *testing.T) {
				ln := listen(t, d, socksbind.ListenConfig{Once: true}, host+":0")
				addr := netutil.AddrPort(ln.Addr())
				bound := netip.AddrPortFrom(netip.MustParseAddr(host), addr.Port())
				assert.Equal(t, []netip.AddrPort{bound}, gostListeners(t, gost, addr.Port()),
					"GOST listens on DST.ADDR itself")
				// Reply 1 carries the IP of GOST's end of the control
				// connection, whatever it bound.
				assert.Equal(t, loopback4, addr.Addr())

				// DST.ADDR is no peer filter: a peer from another
				// address is let in.
				peer := dialPeer(t, "127.0.0.3", net.TCPAddrFromAddrPort(bound))
				c := accept(t, ln)
				assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
				bothWays(t, c, peer)
			})
		}
	})

	t.Run("SpecificPort", func(t *testing.T) {
		// GOST grants a port asked for exactly, or refuses: a port
		// taken in between by another process is tried again.
		servesFixedPort(t, d, socksbind.ErrGeneralFailure)
	})

	t.Run("PortInUse", func(t *testing.T) {
		occupied, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer occupied.Close()
		port := occupied.Addr().(*net.TCPAddr).Port

		ln, err := d.Listen(testContext(t), "tcp", fmt.Sprintf(":%d", port))
		assert.Nil(t, ln)
		var oe *net.OpError
		require.ErrorAs(t, err, &oe)
		assert.Equal(t, "socks bind", oe.Op)
		require.ErrorIs(t, err, socksbind.ErrGeneralFailure)
		var re *socksbind.ReplyError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, socksbind.CmdBind, re.Command)
		assert.Equal(t, socksbind.ReplyGeneralFailure, re.Reply)
		assert.NotErrorIs(t, err, socksbind.ErrAddressInUse, "GOST refuses; it grants no other port")
	})

	t.Run("FixedPortRearm", func(t *testing.T) {
		// The listener re-arms for its port after each peer, and GOST
		// grants it again at once: while the earlier connections are
		// open, and after the listener's side closed one first, which
		// leaves GOST's socket on the port in TIME_WAIT (what keeps
		// Dante from binding the port again for a minute).
		armed := make(chan net.Addr, 16)
		lc := socksbind.ListenConfig{Dialer: d, Armed: func(a net.Addr) { armed <- a }}
		ln, port := listenFixedPort(t, lc, socksbind.ErrGeneralFailure)
		want := netip.AddrPortFrom(loopback4, uint16(port))

		for i := range 4 {
			peer := dialPeer(t, "127.0.0.1", ln.Addr())
			c := accept(t, ln)
			assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()), "peer %d", i)
			assert.Equal(t, want, netutil.AddrPort(c.LocalAddr()), "peer %d", i)
			bothWays(t, c, peer)
			if i%2 == 1 {
				// The listener's side closes first.
				require.NoError(t, c.Close())
				_, err := peer.Read(make([]byte, 1))
				require.ErrorIs(t, err, io.EOF)
				require.NoError(t, peer.Close())
			}
			select {
			case a := <-armed:
				require.Equal(t, want, netutil.AddrPort(a), "re-armed on the same port after peer %d", i)
			case <-time.After(testTimeout):
				require.FailNow(t, "the listener did not re-arm", "after peer %d", i)
			}
			assert.Equal(t, want, netutil.AddrPort(ln.Addr()))
		}
	})

	t.Run("Username", func(t *testing.T) {
		gost := startGost(t, GostConfig{User: "alice", Password: "secret"})
		d := newDialer(t, gost.Addr, &proxy.Auth{User: "alice", Password: "secret"}, nil)
		ln := listen(t, d, socksbind.ListenConfig{}, ":0")
		peer := dialPeer(t, "127.0.0.1", ln.Addr())
		c := accept(t, ln)
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
	})
}

// TestGostBindNotAllowed checks that GOST without bind=true refuses BIND in
// reply 1 with code 2.
func TestGostBindNotAllowed(t *testing.T) {
	leakcheck.Check(t)
	gost := startGost(t, GostConfig{NoBind: true})
	requireBindNotAllowed(t, gost.Addr)
}

// rawMBIND greets s without authentication, sends MBIND for dst and returns
// the control connection and reply 1.
func rawMBIND(t *testing.T, s *Server, dst netip.AddrPort) (net.Conn, byte, netip.AddrPort) {
	t.Helper()
	c := rawDial(t, s.Addr)
	rawGreet(t, c)
	rawWrite(t, c, rawRequest(cmdMBIND, dst))
	rep, bnd := rawReply(t, c)
	return c, rep, bnd
}

// mbindSession runs the client's side of the MBIND session on c: an smux
// server, with the configuration GOST uses. It is closed when the test ends.
func mbindSession(t *testing.T, c net.Conn) *smux.Session {
	t.Helper()
	// The raw exchange's deadline would end the session.
	require.NoError(t, c.SetDeadline(time.Time{}))
	sess, err := smux.Server(c, smux.DefaultConfig())
	require.NoError(t, err)
	t.Cleanup(func() { sess.Close() })
	return sess
}

// streamHeader reads the SOCKS5 reply that begins an MBIND stream and
// returns its bytes and the peer address it carries.
func streamHeader(t *testing.T, st io.Reader) ([]byte, netip.AddrPort) {
	t.Helper()
	var raw bytes.Buffer
	rep, from := rawReply(t, io.TeeReader(st, &raw))
	require.Equal(t, byte(0x00), rep, "stream header reply code")
	return raw.Bytes(), from
}

// mbindPeer runs an MBIND for 0.0.0.0:0 on s with the client's side of the
// session run by smux, connects a peer from 127.0.0.1 and reads the header
// of the peer's stream. It returns the session, the bound address, the peer
// and its stream.
func mbindPeer(t *testing.T, s *Server) (*smux.Session, netip.AddrPort, net.Conn, *smux.Stream) {
	t.Helper()
	c, rep, bnd := rawMBIND(t, s, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	require.Equal(t, byte(0x00), rep, "reply 1")
	sess := mbindSession(t, c)
	peer := dialFrom(t, "127.0.0.1", bnd)
	st := testkit.AcceptStream(t, sess, testTimeout)
	streamHeader(t, st)
	return sess, bnd, peer, st
}

// smuxFrame is one frame of smux protocol version 1: VER CMD LEN(2, little
// endian) SID(4, little endian) and LEN bytes of data.
type smuxFrame struct {
	head []byte
	data []byte
}

// readSmuxFrame reads one frame; with skipNOP, keep-alive frames are skipped.
func readSmuxFrame(t *testing.T, r io.Reader, skipNOP bool) smuxFrame {
	t.Helper()
	for {
		head := rawRead(t, r, 8)
		require.Equal(t, byte(1), head[0], "smux version in %x", head)
		f := smuxFrame{head: head, data: rawRead(t, r, int(binary.LittleEndian.Uint16(head[2:4])))}
		if !skipNOP || head[1] != 3 {
			return f
		}
	}
}

// TestGostMBIND pins GOST's MBIND on the wire, with the client's side of the
// session run by smux as the library will: reply 1 as for BIND, then an smux
// session in which GOST opens one stream per peer, each beginning with a
// SOCKS5 reply that names the peer.
func TestGostMBIND(t *testing.T) {
	leakcheck.Check(t)
	gost := startGost(t, GostConfig{})
	any4 := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)

	t.Run("Frames", func(t *testing.T) {
		// No smux here: the bytes themselves.
		c, rep, bnd := rawMBIND(t, gost, any4)
		require.Equal(t, byte(0x00), rep, "reply 1")
		assert.Equal(t, loopback4, bnd.Addr())
		peer := dialFrom(t, "127.0.0.1", bnd)

		syn := readSmuxFrame(t, c, true)
		assert.Equal(t, []byte{1, 0, 0, 0, 3, 0, 0, 0}, syn.head, "SYN of stream 3")
		psh := readSmuxFrame(t, c, true)
		assert.Equal(t, []byte{1, 2, 10, 0, 3, 0, 0, 0}, psh.head, "PSH of 10 bytes on stream 3")
		pa := peer.LocalAddr().(*net.TCPAddr).AddrPort()
		header := append([]byte{5, 0, 0, 1}, pa.Addr().AsSlice()...)
		header = binary.BigEndian.AppendUint16(header, pa.Port())
		assert.Equal(t, header, psh.data, "the header names the peer")

		rawWrite(t, peer, []byte("hello"))
		data := readSmuxFrame(t, c, true)
		assert.Equal(t, []byte{1, 2, 5, 0, 3, 0, 0, 0}, data.head)
		assert.Equal(t, []byte("hello"), data.data)
	})

	t.Run("Streams", func(t *testing.T) {
		c, rep, bnd := rawMBIND(t, gost, any4)
		require.Equal(t, byte(0x00), rep, "reply 1")
		sess := mbindSession(t, c)
		assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), bnd.Port())},
			gostListeners(t, gost, bnd.Port()), "GOST listens on 0.0.0.0 for the session")

		// Three peers connect at once.
		const n = 3
		peers := make(chan net.Conn, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				c, err := net.DialTimeout("tcp", bnd.String(), testTimeout)
				if err == nil {
					peers <- c
				}
			})
		}
		wg.Wait()
		close(peers)
		byAddr := map[netip.AddrPort]net.Conn{}
		for p := range peers {
			t.Cleanup(func() { p.Close() })
			require.NoError(t, p.SetDeadline(time.Now().Add(testTimeout)))
			byAddr[netutil.AddrPort(p.LocalAddr())] = p
		}
		require.Len(t, byAddr, n, "every peer connected")

		ids := map[uint32]bool{}
		for range n {
			st := testkit.AcceptStream(t, sess, testTimeout)
			ids[st.ID()] = true
			raw, from := streamHeader(t, st)
			assert.Len(t, raw, 10, "the header of an IPv4 peer")
			peer, ok := byAddr[from]
			require.True(t, ok, "the header names a peer: %v", from)
			delete(byAddr, from)
			msg := "to " + from.String()
			assert.Equal(t, msg, exchangeBack(t, st, peer, msg))
			msg = "from " + from.String()
			assert.Equal(t, msg, exchangeBack(t, peer, st, msg))
		}
		assert.Empty(t, byAddr, "every peer got a stream")
		assert.Equal(t, map[uint32]bool{3: true, 5: true, 7: true}, ids, "GOST, the smux client, opens odd stream IDs from 3")
	})

	t.Run("IPv6Peer", func(t *testing.T) {
		if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
			unavailable(t, "IPv6 loopback ::1 is not usable: %v", err)
		} else {
			ln.Close()
		}
		c, rep, bnd := rawMBIND(t, gost, netip.MustParseAddrPort("[::1]:0"))
		require.Equal(t, byte(0x00), rep, "reply 1")
		// Reply 1 carries GOST's IPv4 address on the control connection,
		// though GOST listens on ::1 only.
		assert.Equal(t, loopback4, bnd.Addr())
		bound := netip.AddrPortFrom(netip.IPv6Loopback(), bnd.Port())
		assert.Equal(t, []netip.AddrPort{bound}, gostListeners(t, gost, bnd.Port()))
		sess := mbindSession(t, c)

		peer := dialFrom(t, "::1", bound)
		st := testkit.AcceptStream(t, sess, testTimeout)
		raw, from := streamHeader(t, st)
		assert.Len(t, raw, 22, "the header of an IPv6 peer")
		assert.Equal(t, byte(0x04), raw[3], "ATYP")
		assert.Equal(t, peer.LocalAddr().(*net.TCPAddr).AddrPort(), from)
		assert.Equal(t, "over ::1", exchangeBack(t, peer, st, "over ::1"))
	})

	t.Run("MiB", func(t *testing.T) {
		// One MiB each way at once on one stream.
		_, _, peer, st := mbindPeer(t, gost)

		up := make([]byte, 1<<20)
		down := make([]byte, 1<<20)
		rand.Read(up)
		rand.Read(down)
		write := func(w io.Writer, b []byte) <-chan error {
			done := make(chan error, 1)
			go func() {
				_, err := w.Write(b)
				done <- err
			}()
			return done
		}
		upDone := write(peer, up)
		downDone := write(st, down)
		atClient := rawRead(t, st, len(up))
		atPeer := rawRead(t, peer, len(down))
		require.NoError(t, <-upDone)
		require.NoError(t, <-downDone)
		assert.True(t, bytes.Equal(up, atClient), "peer to client")
		assert.True(t, bytes.Equal(down, atPeer), "client to peer")
	})

	t.Run("ClientHalfClose", func(t *testing.T) {
		// GOST passes the client's FIN on to the peer, but then cannot
		// write on the stream: the peer's answer ends the stream instead
		// of reaching the client. No half-close over MBIND.
		_, _, peer, st := mbindPeer(t, gost)

		rawWrite(t, st, []byte("request"))
		require.NoError(t, st.CloseWrite())
		got, err := io.ReadAll(peer)
		require.NoError(t, err)
		assert.Equal(t, "request", string(got), "the peer reads the request, then EOF")

		rawWrite(t, peer, []byte("answer"))
		got, err = io.ReadAll(st)
		require.NoError(t, err)
		assert.Empty(t, got, "the answer after the half-close is lost; the stream ends")
	})

	t.Run("PeerHalfClose", func(t *testing.T) {
		// The peer's FIN ends the whole stream: GOST closes it, and the
		// peer reads EOF though the client neither wrote nor closed.
		_, _, peer, st := mbindPeer(t, gost)

		rawWrite(t, peer, []byte("request"))
		require.NoError(t, peer.(*net.TCPConn).CloseWrite())
		got, err := io.ReadAll(st)
		require.NoError(t, err)
		assert.Equal(t, "request", string(got), "the client reads the request, then EOF")
		got, err = io.ReadAll(peer)
		require.NoError(t, err)
		assert.Empty(t, got, "the peer's read side is closed too")
	})

	t.Run("ClientStreamClosed", func(t *testing.T) {
		// A stream the client opens is closed by GOST; the session goes on.
		c, rep, bnd := rawMBIND(t, gost, any4)
		require.Equal(t, byte(0x00), rep, "reply 1")
		sess := mbindSession(t, c)
		st, err := sess.OpenStream()
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		require.NoError(t, st.SetDeadline(time.Now().Add(testTimeout)))
		got, err := io.ReadAll(st)
		require.NoError(t, err)
		assert.Empty(t, got)

		peer := dialFrom(t, "127.0.0.1", bnd)
		_, from := streamHeader(t, testkit.AcceptStream(t, sess, testTimeout))
		assert.Equal(t, peer.LocalAddr().(*net.TCPAddr).AddrPort(), from)
	})

	t.Run("SessionEnd", func(t *testing.T) {
		// Closing the control connection ends the session: GOST closes
		// the bound socket and every peer.
		sess, bnd, peer, _ := mbindPeer(t, gost)

		require.NoError(t, sess.Close()) // closes the control connection
		pollGostReleased(t, gost, bnd.Port())
		_, err := io.ReadAll(peer)
		require.NoError(t, err, "the peer reads EOF")
	})

	t.Run("PortInUse", func(t *testing.T) {
		occupied, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer occupied.Close()
		port := occupied.Addr().(*net.TCPAddr).AddrPort().Port()
		c, rep, bnd := rawMBIND(t, gost, netip.AddrPortFrom(netip.IPv4Unspecified(), port))
		assert.Equal(t, byte(0x01), rep, "reply 1 for a taken port")
		assert.Equal(t, any4, bnd)
		_, err = c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "then GOST closes")
	})

	t.Run("Username", func(t *testing.T) {
		gost := startGost(t, GostConfig{User: "alice", Password: "secret"})
		c := rawDial(t, gost.Addr)
		rawWrite(t, c, greetingUsername)
		require.Equal(t, []byte{0x05, 0x02}, rawRead(t, c, 2))
		rawWrite(t, c, []byte("\x01\x05alice\x06secret"))
		require.Equal(t, []byte{0x01, 0x00}, rawRead(t, c, 2))
		rawWrite(t, c, rawRequest(cmdMBIND, any4))
		rep, bnd := rawReply(t, c)
		require.Equal(t, byte(0x00), rep, "reply 1")
		sess := mbindSession(t, c)
		peer := dialFrom(t, "127.0.0.1", bnd)
		_, from := streamHeader(t, testkit.AcceptStream(t, sess, testTimeout))
		assert.Equal(t, peer.LocalAddr().(*net.TCPAddr).AddrPort(), from)
	})
}

// TestGostMBINDKeepAlive shows GOST's session keep-alive with short timers
// (mux.keepaliveInterval, mux.keepaliveTimeout; by default 10 s and 30 s): a
// NOP frame at each interval, and the session dropped, with its socket, when
// the client has sent nothing for the timeout. A client must keep the session
// alive, as smux's own keep-alive does.
func TestGostMBINDKeepAlive(t *testing.T) {
	leakcheck.Check(t)
	// The timeout leaves a wide margin over the client's interval: a
	// machine under load may stall a process for a second.
	gost := startGost(t, GostConfig{Metadata: map[string]string{
		"mux.keepaliveInterval": "50ms",
		"mux.keepaliveTimeout":  "3s",
	}})
	any4 := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)

	// A session whose client sends keep-alives, at an interval well below
	// GOST's timeout, is opened first; then a silent one.
	c, rep, kept := rawMBIND(t, gost, any4)
	require.Equal(t, byte(0x00), rep, "reply 1")
	require.NoError(t, c.SetDeadline(time.Time{}))
	cfg := smux.DefaultConfig()
	cfg.KeepAliveInterval = 50 * time.Millisecond
	sess, err := smux.Server(c, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { sess.Close() })

	silent, rep, dropped := rawMBIND(t, gost, any4)
	require.Equal(t, byte(0x00), rep, "reply 1")
	nops := 0
	for {
		head := make([]byte, 8)
		if _, err := io.ReadFull(silent, head); err != nil {
			require.ErrorIs(t, err, io.EOF, "GOST closes the silent session's control connection")
			break
		}
		require.Equal(t, []byte{1, 3, 0, 0, 0, 0, 0, 0}, head, "a NOP")
		nops++
	}
	assert.NotZero(t, nops, "keep-alives before the session was dropped")
	pollGostReleased(t, gost, dropped.Port())

	// The older session went through a timeout as well, and stays.
	select {
	case <-sess.CloseChan():
		require.FailNow(t, "the session with keep-alives was closed")
	default:
	}
	peer := dialFrom(t, "127.0.0.1", kept)
	_, from := streamHeader(t, testkit.AcceptStream(t, sess, testTimeout))
	assert.Equal(t, peer.LocalAddr().(*net.TCPAddr).AddrPort(), from)
}

// TestGostMBINDNotAllowed checks that GOST without bind=true refuses MBIND
// as it refuses BIND: reply 1 with code 2, then a close.
func TestGostMBINDNotAllowed(t *testing.T) {
	leakcheck.Check(t)
	gost := startGost(t, GostConfig{NoBind: true})
	c, rep, bnd := rawMBIND(t, gost, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	assert.Equal(t, byte(0x02), rep, "reply 1")
	assert.Equal(t, netip.AddrPortFrom(netip.IPv4Unspecified(), 0), bnd)
	_, err := c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "then GOST closes")
}

// TestGostMBINDComp checks GOST's v2 compatibility mode (comp=true): reply 1
// is unchanged, and the streams carry the peers' bytes without a header.
func TestGostMBINDComp(t *testing.T) {
	leakcheck.Check(t)
	gost := startGost(t, GostConfig{Metadata: map[string]string{"comp": "true"}})
	c, rep, bnd := rawMBIND(t, gost, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	require.Equal(t, byte(0x00), rep, "reply 1")
	assert.Equal(t, loopback4, bnd.Addr())
	sess := mbindSession(t, c)

	peer := dialFrom(t, "127.0.0.1", bnd)
	rawWrite(t, peer, []byte("first bytes"))
	st := testkit.AcceptStream(t, sess, testTimeout)
	assert.Equal(t, []byte("first bytes"), rawRead(t, st, 11), "no header: the peer's bytes come first")
	assert.Equal(t, "back", exchangeBack(t, st, peer, "back"))
}
