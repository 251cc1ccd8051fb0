package socks5test_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

// testTimeout is a safety net against a hung test, never a wait: every test
// connection gets it as its deadline, and polls give up after it.
const testTimeout = 30 * time.Second

var (
	ip4      = netip.MustParseAddr("127.0.0.1")
	ip4Other = netip.MustParseAddr("127.0.0.2")
	ip6      = netip.IPv6Loopback()
	any4     = netip.IPv4Unspecified()
	any6     = netip.IPv6Unspecified()
)

func TestMain(m *testing.M) {
	sink()
	code := m.Run()
	sink().Close()
	if code == 0 {
		if leaked := serverGoroutines(); leaked != "" {
			fmt.Fprintf(os.Stderr, "socks5test: goroutines left after the tests:\n%s", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// serverGoroutines polls until no goroutine runs the server's code or an
// smux session's (the server's MBIND sessions, and the tests' own), and
// returns the stacks of those still there after testTimeout, in the manner
// of net/http's leak check.
func serverGoroutines() string {
	var leaked []string
	testkit.Poll(testTimeout, func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		leaked = leaked[:0]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			server := strings.Contains(g, "/socks5test.") && !strings.Contains(g, "socks5test_test.")
			if server || strings.Contains(g, "github.com/xtaci/smux.") {
				leaked = append(leaked, g)
			}
		}
		return len(leaked) == 0
	})
	return strings.Join(leaked, "\n\n")
}

// dialFrom opens a TCP connection from the local IP from (any when invalid),
// closed when the test ends.
func dialFrom(t *testing.T, from netip.Addr, addr string) (net.Conn, error) {
	t.Helper()
	var d net.Dialer
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	return c, nil
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := dialFrom(t, netip.Addr{}, addr)
	require.NoError(t, err)
	return c
}

// greeting is the version/method selection message offering methods.
func greeting(methods ...socksbind.AuthMethod) []byte {
	b := []byte{srvwire.Version, byte(len(methods))}
	for _, m := range methods {
		b = append(b, byte(m))
	}
	return b
}

// readPair reads the two bytes of a method selection or an RFC 1929
// status, and checks the first, the version. A close before them is
// io.ErrUnexpectedEOF.
func readPair(c net.Conn, version byte) (byte, error) {
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	if b[0] != version {
		return 0, fmt.Errorf("version %d, want %d", b[0], version)
	}
	return b[1], nil
}

// greet sends a greeting offering methods and returns the server's choice.
func greet(t *testing.T, c net.Conn, methods ...socksbind.AuthMethod) socksbind.AuthMethod {
	t.Helper()
	_, err := c.Write(greeting(methods...))
	require.NoError(t, err)
	m, err := readPair(c, srvwire.Version)
	require.NoError(t, err)
	return socksbind.AuthMethod(m)
}

// open connects to srv and negotiates no authentication.
func open(t *testing.T, srv *socks5test.Server) net.Conn {
	t.Helper()
	c := dial(t, srv.Addr())
	require.Equal(t, socksbind.AuthNone, greet(t, c, socksbind.AuthNone))
	return c
}

func sendRequest(t *testing.T, c net.Conn, cmd socksbind.Command, dst socksbind.Addr) {
	t.Helper()
	_, err := c.Write(srvwire.AppendMessage(nil, byte(cmd), dst))
	require.NoError(t, err)
}

func readReply(t *testing.T, c net.Conn) (socksbind.Reply, socksbind.Addr) {
	t.Helper()
	rep, a, err := srvwire.ReadMessage(c)
	require.NoError(t, err)
	return socksbind.Reply(rep), a
}

// request opens a connection to srv, sends a request and reads the reply.
func request(t *testing.T, srv *socks5test.Server, cmd socksbind.Command, dst socksbind.Addr) (net.Conn, socksbind.Reply, socksbind.Addr) {
	t.Helper()
	c := open(t, srv)
	sendRequest(t, c, cmd, dst)
	rep, bnd := readReply(t, c)
	return c, rep, bnd
}

// bind sends a BIND and requires reply 1 to succeed.
func bind(t *testing.T, srv *socks5test.Server, dst socksbind.Addr) (net.Conn, socksbind.Addr) {
	t.Helper()
	c, rep, bnd := request(t, srv, socksbind.CmdBind, dst)
	require.Equal(t, socksbind.ReplySucceeded, rep, "reply 1")
	return c, bnd
}

func addr(ip netip.Addr, port uint16) socksbind.Addr {
	return socksbind.Addr{IP: ip, Port: port}
}

// wireAddr returns a socket address as a reply carries it.
func wireAddr(a net.Addr) socksbind.Addr {
	ap := netip.MustParseAddrPort(a.String())
	return socksbind.Addr{IP: ap.Addr().Unmap(), Port: ap.Port()}
}

// expectEOF checks that the other side closed c after sending everything.
func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	assert.NoError(t, err)
	assert.Empty(t, b)
}

// exchange checks data both ways between a and b, then a half-close each
// way: a's CloseWrite reaches b as EOF while b can still write to a. Each is
// a TCP connection or an smux stream.
func exchange(t *testing.T, a, b net.Conn) {
	t.Helper()
	_, err := a.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(b, buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf))

	require.NoError(t, a.(interface{ CloseWrite() error }).CloseWrite())
	rest, err := io.ReadAll(b)
	require.NoError(t, err)
	assert.Empty(t, rest, "b reads EOF after a's half-close")

	_, err = b.Write([]byte("pong after half-close"))
	require.NoError(t, err)
	require.NoError(t, b.(interface{ CloseWrite() error }).CloseWrite())
	got, err := io.ReadAll(a)
	require.NoError(t, err)
	assert.Equal(t, "pong after half-close", string(got))
}

// closedPort returns a port of 127.0.0.1 that refuses connections until the
// test ends: the local end of a connection holds it, without SO_REUSEADDR,
// so that nothing else on the machine can listen on it meanwhile.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c := dial(t, ln.Addr().String())
	a, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	return wireAddr(c.LocalAddr()).Port
}

// bindFreePort sends a BIND for a free port of 127.0.0.1 and requires to
// get that port. Another process may take the port between freePort and the
// BIND; the server then rightly binds another, so this tries a few ports.
func bindFreePort(t *testing.T, srv *socks5test.Server) (net.Conn, uint16) {
	t.Helper()
	for range 10 {
		p := uint16(testkit.FreePort(t, net.ListenConfig{Control: netutil.NoReuseAddr}))
		c, bnd := bind(t, srv, addr(any4, p))
		assert.Equal(t, ip4, bnd.IP)
		if bnd.Port == p {
			return c, p
		}
		c.Close()
	}
	require.FailNow(t, "a BIND for a free port never got it")
	return nil, 0
}

// requireIPv6 skips a test on a machine without ::1.
func requireIPv6(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
}

// requireRefused checks that nothing accepts connections on a.
func requireRefused(t *testing.T, a socksbind.Addr) {
	t.Helper()
	c, err := net.Dial("tcp", a.String())
	if err == nil {
		c.Close()
	}
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
}

// sink is a listener that never accepts: the kernel completes the handshake
// of a connection to it, which is all requireReleased needs. It exists before
// any test frees a port, so that it cannot take one.
var sink = sync.OnceValue(func() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	return ln
})

// requireReleased checks that the server no longer listens on port p of
// 127.0.0.1 and that a peer connecting to it is refused.
//
// A port just freed often goes straight to the next listener of another
// process (another test binary run in parallel), and connecting to that one
// would disturb its test and fail this one. So this looks among the test
// process's own sockets for one listening on p, where it can, and dials p
// only while it holds p itself: bound without SO_REUSEADDR, which fails
// while any other socket holds p. When p is held (by that other process, or
// by a connection that used p before and lingers in TIME_WAIT), it does not
// dial.
func requireReleased(t *testing.T, p uint16) {
	t.Helper()
	if listening, ok := ownListener(p); ok && listening {
		assert.Fail(t, "the server still listens", "port %d", p)
		return
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip4, p))}
	hold, err := d.Dial("tcp", sink().Addr().String())
	if err != nil {
		t.Logf("port %d is held elsewhere; not dialing it: %v", p, err)
		return
	}
	// A reset on close leaves no TIME_WAIT behind on p.
	defer func() {
		hold.(*net.TCPConn).SetLinger(0)
		hold.Close()
	}()
	requireRefused(t, addr(ip4, p))
}

// echoed checks that c reaches an echo server, half-close included.
func echoed(t *testing.T, c net.Conn) {
	t.Helper()
	msg := []byte("hello through the proxy")
	_, err := c.Write(msg)
	require.NoError(t, err)
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		got := make([]byte, len(msg))
		_, err := io.ReadFull(c, got)
		require.NoError(t, err)
		assert.Equal(t, msg, got)
		return
	}
	require.NoError(t, cw.CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(msg, got), "echoed %q", got)
}

// spin is eventually without pauses, for a check that must follow an event
// closely.
func spin(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("condition never satisfied: %s", msg)
			return
		}
		runtime.Gosched()
	}
}

// arrive has a peer connect to a BIND's address to and checks that the
// client's connection c gets a successful second reply. It returns the
// peer.
func arrive(t *testing.T, c net.Conn, to string) net.Conn {
	t.Helper()
	peer := dial(t, to)
	rep, _ := readReply(t, c)
	require.Equal(t, socksbind.ReplySucceeded, rep)
	return peer
}
