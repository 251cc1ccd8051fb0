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
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/testkit"
)

// testTimeout is a safety net against a hung test, never a wait: it bounds
// contexts, connection deadlines and polls.
const testTimeout = 20 * time.Second

// pollInterval is how often a poll that dials, or reads a file, looks again.
const pollInterval = 5 * time.Millisecond

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

// target is a TCP server on loopback for CONNECT tests that testkit.Echo
// does not cover. It serves every connection with its handler, records the
// remote address of each, and stops (closing the listener and waiting for
// its handlers) when the test ends.
type target struct {
	addr  netip.AddrPort // the first listener's address
	peers chan net.Addr  // remote address of each accepted connection
	serve func(*net.TCPConn)
	lns   []net.Listener
	wg    sync.WaitGroup
}

// startTarget starts a target on address serving each connection with serve,
// which must return once the connection is done; the target closes it.
func startTarget(t testing.TB, address string, serve func(*net.TCPConn)) *target {
	t.Helper()
	ln, err := net.Listen("tcp", address)
	require.NoError(t, err)
	tg := &target{
		addr:  ln.Addr().(*net.TCPAddr).AddrPort(),
		peers: make(chan net.Addr, 2048),
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

// startEchoBoth starts a target on 127.0.0.1 and ::1 with the same port, for
// a target name that may resolve to either. It echoes every connection and
// passes the client's half-close on, as testkit.Echo does.
func startEchoBoth(t testing.TB) *target {
	t.Helper()
	echo := func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	}
	for range 20 {
		tg := startTarget(t, "127.0.0.1:0", echo)
		ln, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(int(tg.addr.Port()))))
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
			case tg.peers <- c.RemoteAddr():
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

// nextPeer returns the remote address of the next connection a target or
// a testkit.EchoServer accepted, from its peers.
func nextPeer(t testing.TB, peers <-chan net.Addr) netip.AddrPort {
	t.Helper()
	select {
	case p := <-peers:
		return netutil.AddrPort(p)
	case <-time.After(testTimeout):
		require.FailNow(t, "the target accepted no connection")
		return netip.AddrPort{}
	}
}

// refusedPort returns a port on 127.0.0.1 where nothing listens.
func refusedPort(t testing.TB) int { return testkit.FreePort(t, net.ListenConfig{}) }

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
	return testkit.Exchange(t, c, msg)
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

// requireBindNotAllowed checks that a Listen through the proxy at addr
// fails in the BIND handshake with a reply "not allowed".
func requireBindNotAllowed(t testing.TB, addr string) {
	t.Helper()
	d := newDialer(t, addr, nil, nil)
	ln, err := d.Listen(testContext(t), "tcp", ":0")
	assert.Nil(t, ln)
	requireReplyError(t, err, "socks bind", socksbind.CmdBind, socksbind.ReplyNotAllowed,
		socksbind.ErrNotAllowed, syscall.EACCES)
}

// pollRefused dials addr until the dial is refused, and fails the test when
// it is not within testTimeout. A server closes sockets asynchronously: a
// dial that still gets through is closed and tried again.
func pollRefused(t testing.TB, addr net.Addr) {
	t.Helper()
	tries := 0
	var err error
	refused := testkit.PollEvery(pollInterval, testTimeout, func() bool {
		tries++
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
			c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	require.True(t, refused, "%v still accepting; last dial: %v", addr, err)
	if tries > 1 {
		t.Logf("%v refused after %d dials", addr, tries)
	}
}

// peekQueued polls c, without consuming anything, until at least n bytes
// wait in its receive buffer, and returns them.
func peekQueued(t testing.TB, c *net.TCPConn, n int) []byte {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	buf := make([]byte, n)
	var got int
	queued := testkit.Poll(testTimeout, func() bool {
		var rerr error
		require.NoError(t, rc.Control(func(fd uintptr) {
			got, rerr = peek(fd, buf)
		}))
		if !errors.Is(rerr, syscall.EAGAIN) {
			require.NoError(t, rerr)
		}
		return got >= n
	})
	require.True(t, queued, "bytes not queued: want %d bytes queued, have %d", n, got)
	return buf
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
