package integration

// Helpers of the library tests against real servers (connect_test.go,
// bind_test.go, chain_test.go, integrity_test.go, load_test.go): targets and
// peers on loopback, and dialers for the servers the harness starts.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
)

// testTimeout is a safety net against a hung test, never a wait: it bounds
// contexts, connection deadlines and polls.
const testTimeout = 20 * time.Second

// testContext returns a context that ends with the test, or after
// testTimeout.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newDialer returns a socksbind Dialer for the server at addr.
func newDialer(t testing.TB, addr string, auth *proxy.Auth, forward proxy.Dialer) *socksbind.Dialer {
	t.Helper()
	d, err := socksbind.SOCKS5("tcp", addr, auth, forward)
	require.NoError(t, err)
	return d
}

// target is a TCP server on loopback for CONNECT tests. It serves every
// connection with its handler, records the remote address of each, and
// stops (closing the listener and waiting for its handlers) when the test
// ends.
type target struct {
	addr  netip.AddrPort      // the first listener's address
	peers chan netip.AddrPort // remote address of each accepted connection
	serve func(*net.TCPConn)
	lns   []net.Listener
	wg    sync.WaitGroup
}

// startEcho starts a target on address ("127.0.0.1:0", "[::1]:0") that
// echoes every connection and passes the client's half-close on.
func startEcho(t testing.TB, address string) *target {
	t.Helper()
	return startTarget(t, address, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
}

// startTarget starts a target on address serving each connection with serve,
// which must return once the connection is done; the target closes it.
func startTarget(t testing.TB, address string, serve func(*net.TCPConn)) *target {
	t.Helper()
	ln, err := net.Listen("tcp", address)
	require.NoError(t, err)
	tg := &target{
		addr:  ln.Addr().(*net.TCPAddr).AddrPort(),
		peers: make(chan netip.AddrPort, 2048),
		serve: serve,
	}
	t.Cleanup(func() {
		for _, ln := range tg.lns {
			ln.Close()
		}
		tg.wg.Wait()
	})
	tg.run(ln)
	return tg
}

// startEchoBoth starts an echo target on 127.0.0.1 and ::1 with the same
// port, for a target name that may resolve to either.
func startEchoBoth(t testing.TB) *target {
	t.Helper()
	for range 20 {
		tg := startEcho(t, "127.0.0.1:0")
		ln, err := net.Listen("tcp", net.JoinHostPort("::1", tg.port()))
		if err == nil {
			tg.run(ln)
			return tg
		}
	}
	require.FailNow(t, "no port free on both 127.0.0.1 and ::1")
	return nil
}

// run serves the connections of ln until the test ends. It must be called
// from the test's goroutine.
func (tg *target) run(ln net.Listener) {
	tg.lns = append(tg.lns, ln)
	tg.wg.Add(1)
	go func() {
		defer tg.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case tg.peers <- addrPort(c.RemoteAddr()):
			default:
			}
			tg.wg.Add(1)
			go func() {
				defer tg.wg.Done()
				defer c.Close()
				tg.serve(c.(*net.TCPConn))
			}()
		}
	}()
}

// port returns the target's port as text.
func (tg *target) port() string { return strconv.Itoa(int(tg.addr.Port())) }

// nextPeer returns the remote address of the next connection the target
// accepted.
func (tg *target) nextPeer(t testing.TB) netip.AddrPort {
	t.Helper()
	select {
	case p := <-tg.peers:
		return p
	case <-time.After(testTimeout):
		require.FailNow(t, "the target accepted no connection")
		return netip.AddrPort{}
	}
}

// refusedPort returns a port on 127.0.0.1 where nothing listens.
func refusedPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// addrPort returns the IP (IPv4 unmapped) and port of a TCP address.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// dialPeer connects to addr from the loopback IP src, as a BIND peer does,
// with testTimeout as the connection's deadline. The connection is closed
// when the test ends.
func dialPeer(t testing.TB, src string, addr net.Addr) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr.String())
	require.NoError(t, err, "peer dial to %v", addr)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	return c.(*net.TCPConn)
}

// halfCloser is a connection whose writing side can be shut down alone.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// roundTrip sends msg on c, shuts c's writing side, and returns everything
// read from c until EOF.
func roundTrip(t testing.TB, c halfCloser, msg string) string {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	return string(b)
}

// exchange sends msg on c and returns as many bytes as it read back, for a
// proxy that does not relay half-closes (microsocks closes both directions
// when the client shuts its writing side).
func exchange(t testing.TB, c net.Conn, msg string) string {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
	b := make([]byte, len(msg))
	_, err = io.ReadFull(c, b)
	require.NoError(t, err)
	return string(b)
}

// asConn returns c as the library's *socksbind.Conn.
func asConn(t testing.TB, c net.Conn) *socksbind.Conn {
	t.Helper()
	sc, ok := c.(*socksbind.Conn)
	require.True(t, ok, "connection is a %T, not a *socksbind.Conn", c)
	return sc
}

// requireReplyError checks that err is a *net.OpError with op, whose cause is
// a failure reply rep to cmd, matching sentinel and errno, and returns the
// *ReplyError.
func requireReplyError(t testing.TB, err error, op string, cmd socksbind.Command, rep socksbind.Reply, sentinel error, errno syscall.Errno) *socksbind.ReplyError {
	t.Helper()
	require.Error(t, err)
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, op, oe.Op)
	assert.ErrorIs(t, err, sentinel)
	assert.ErrorIs(t, err, errno)
	var re *socksbind.ReplyError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, cmd, re.Command)
	assert.Equal(t, rep, re.Reply)
	return re
}

// pollRefused dials addr until the dial is refused, and fails the test when
// it is not within testTimeout. A server closes sockets asynchronously: a
// dial that still gets through is closed and tried again.
func pollRefused(t testing.TB, addr net.Addr) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for tries := 1; ; tries++ {
		c, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err == nil {
			c.Close()
		} else if errors.Is(err, syscall.ECONNREFUSED) {
			if tries > 1 {
				t.Logf("%v refused after %d dials", addr, tries)
			}
			return
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "still accepting", "%v: last dial: %v", addr, err)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// recordingDialer reaches a proxy directly and hands each connection it
// made to the test as well, so that the test can look at what arrives on a
// control connection before the library reads it.
type recordingDialer struct {
	conns chan *net.TCPConn
}

func newRecordingDialer() *recordingDialer {
	return &recordingDialer{conns: make(chan *net.TCPConn, 16)}
}

func (r *recordingDialer) Dial(network, addr string) (net.Conn, error) {
	return r.DialContext(context.Background(), network, addr)
}

func (r *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	r.conns <- c.(*net.TCPConn)
	return c, nil
}

// next returns the connection the dialer made next.
func (r *recordingDialer) next(t testing.TB) *net.TCPConn {
	t.Helper()
	select {
	case c := <-r.conns:
		return c
	default:
		require.FailNow(t, "no connection was made")
		return nil
	}
}

// peekQueued polls c, without consuming anything, until at least n bytes
// wait in its receive buffer, and returns them.
func peekQueued(t testing.TB, c *net.TCPConn, n int) []byte {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	buf := make([]byte, n)
	deadline := time.Now().Add(testTimeout)
	for {
		var got int
		var rerr error
		require.NoError(t, rc.Control(func(fd uintptr) {
			got, rerr = peek(fd, buf)
		}))
		if rerr != nil && !errors.Is(rerr, syscall.EAGAIN) {
			require.NoError(t, rerr)
		}
		if got >= n {
			return buf
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "bytes not queued", "want %d bytes queued, have %d", n, got)
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}

// listenFixedPort listens through lc on a port of the proxy's that was free
// a moment ago, closed when the test ends. Another process may take the
// port in between: a Listen that fails with one of taken (how the proxy
// says so) is tried again on another port, twice at most.
func listenFixedPort(t testing.TB, lc socksbind.ListenConfig, taken ...error) (*socksbind.Listener, int) {
	t.Helper()
	for range 3 {
		port := freePort(t)
		ln, err := lc.Listen(testContext(t), "tcp", fmt.Sprintf(":%d", port))
		if err == nil {
			t.Cleanup(func() { ln.Close() })
			return ln, port
		}
		isTaken := false
		for _, e := range taken {
			isTaken = isTaken || errors.Is(err, e)
		}
		require.True(t, isTaken, "Listen on port %d: %v", port, err)
	}
	require.FailNow(t, "no free port was granted")
	return nil, 0
}
