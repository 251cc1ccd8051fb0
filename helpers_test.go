package socksbind_test

import (
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

// newProxy starts a socks5test server, configured by setup before it
// starts, and closes it when the test ends. It also registers the leak
// check, first, so that it runs after the server has closed.
func newProxy(t *testing.T, setup func(*socks5test.Server)) *socks5test.Server {
	t.Helper()
	leakcheck.Check(t)
	return testkit.Proxy(t, setup)
}

func newDialer(t *testing.T, srv *socks5test.Server) *socksbind.Dialer {
	t.Helper()
	d, err := socksbind.SOCKS5("tcp", srv.Addr(), nil, nil)
	require.NoError(t, err)
	return d
}

func portOf(a net.Addr) int { return a.(*net.TCPAddr).Port }

// freePort returns a port of 127.0.0.1 that is free now, for a test that
// asks the proxy for a specific port. It is taken below the kernel's
// ephemeral range, where no outgoing connection of another process can
// take it (or leave it in TIME_WAIT) behind the test's back, and below the
// range the integration tests take theirs from (20000 and up), since go
// test runs packages at once.
func freePort(t *testing.T) int { return testkit.FreePortIn(t, 10000, 20000) }

// waitBlocked waits until n goroutines are blocked in a Listener's
// AcceptContext, so a test acts on Accepts that are really waiting.
func waitBlocked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		blocked := 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			if strings.Contains(g, "socksbind.(*Listener).AcceptContext") &&
				!strings.Contains(header, "running") && !strings.Contains(header, "runnable") {
				blocked++
			}
		}
		if blocked >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Accept calls blocked, want %d", blocked, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// acceptedPeer waits up to 10 s for the connection an Accept hands over on
// accepted, checks that it comes from peer (unless nil), and closes it at
// the end of the test.
func acceptedPeer(t *testing.T, accepted <-chan testkit.Accepted, peer net.Conn) net.Conn {
	t.Helper()
	select {
	case r := <-accepted:
		require.NoError(t, r.Err, "Accept failed")
		t.Cleanup(func() { r.Conn.Close() })
		if peer != nil {
			assert.Equal(t, peer.LocalAddr().String(), r.Conn.RemoteAddr().String(), "the accepted connection is the peer's")
		}
		return r.Conn
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted within 10 s")
		return nil
	}
}
