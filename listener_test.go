package socksbind_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/nettest"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

var bindModes = []socks5test.BindMode{socks5test.BindDante, socks5test.BindReuse}

func listen(t *testing.T, srv *socks5test.Server, lc socksbind.ListenConfig, address string) *socksbind.Listener {
	t.Helper()
	if lc.Dialer == nil {
		lc.Dialer = newDialer(t, srv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := lc.Listen(ctx, "tcp", address)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialPeer connects to a listener's address as a peer would.
func dialPeer(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func accept(t *testing.T, ln *socksbind.Listener) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ln.AcceptContext(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestListenAccept(t *testing.T) {
	for _, mode := range bindModes {
		t.Run(mode.String(), func(t *testing.T) {
			srv := newProxy(t, func(s *socks5test.Server) { s.BindMode = mode })
			ln := listen(t, srv, socksbind.ListenConfig{}, ":0")

			addr, ok := ln.Addr().(*net.TCPAddr)
			require.True(t, ok, "Addr is %T", ln.Addr())
			assert.Equal(t, "127.0.0.1", addr.IP.String())
			assert.NotZero(t, addr.Port)
			assert.Equal(t, 1, srv.ActiveBinds())
			reqs := srv.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, socksbind.CmdBind, reqs[0].Command)
			assert.Equal(t, "0.0.0.0:0", reqs[0].Dst.String())

			peer := dialPeer(t, addr)
			c := accept(t, ln)
			assert.Equal(t, peer.LocalAddr().String(), c.RemoteAddr().String())
			assert.Equal(t, addr.String(), c.LocalAddr().String())

			// Both ways, then half-close each way.
			_, err := peer.Write([]byte("from peer"))
			require.NoError(t, err)
			buf := make([]byte, 9)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			assert.Equal(t, "from peer", string(buf))
			_, err = c.Write([]byte("to peer"))
			require.NoError(t, err)
			require.NoError(t, c.(*socksbind.Conn).CloseWrite())
			got, err := io.ReadAll(peer)
			require.NoError(t, err)
			assert.Equal(t, "to peer", string(got))
			_, err = peer.Write([]byte("after half-close"))
			require.NoError(t, err)
			require.NoError(t, peer.(*net.TCPConn).CloseWrite())
			got, err = io.ReadAll(c)
			require.NoError(t, err)
			assert.Equal(t, "after half-close", string(got))
		})
	}
}

func TestListenAdvertisedAddr(t *testing.T) {
	t.Run("unspecified reply replaced by the proxy's IP", func(t *testing.T) {
		srv := newProxy(t, func(s *socks5test.Server) { s.ReportUnspecified = true })
		ln := listen(t, srv, socksbind.ListenConfig{}, ":0")
		addr := ln.Addr().(*net.TCPAddr)
		assert.Equal(t, "127.0.0.1", addr.IP.String())
		dialPeer(t, addr)
		accept(t, ln)
	})
	t.Run("override", func(t *testing.T) {
		srv := newProxy(t, nil)
		ln := listen(t, srv, socksbind.ListenConfig{AdvertiseIP: netip.MustParseAddr("127.9.9.9")}, ":0")
		addr := ln.Addr()
		assert.Equal(t, "127.9.9.9", addr.(*net.TCPAddr).IP.String())
		// The port is the proxy's: a peer reaches it on the real address.
		dialPeer(t, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: portOf(addr)})
		c := accept(t, ln)
		assert.Equal(t, addr.String(), c.LocalAddr().String())
	})
	for _, direct := range []struct {
		name string
		fwd  proxy.Dialer
	}{{"nil forward", nil}, {"proxy.Direct", proxy.Direct}} {
		t.Run("proxy named, reached by "+direct.name, func(t *testing.T) {
			// The proxy reports 0.0.0.0 and is known only by name: its
			// IP comes from the control connection.
			srv := newProxy(t, func(s *socks5test.Server) { s.ReportUnspecified = true })
			_, port, _ := net.SplitHostPort(srv.Addr())
			d, err := socksbind.SOCKS5("tcp", "localhost:"+port, nil, direct.fwd)
			require.NoError(t, err)
			ln := listen(t, srv, socksbind.ListenConfig{Dialer: d}, ":0")
			addr, ok := ln.Addr().(*net.TCPAddr)
			require.True(t, ok, "Addr is %T %v", ln.Addr(), ln.Addr())
			assert.True(t, addr.IP.IsLoopback(), "Addr %v", addr)
			dialPeer(t, addr)
			accept(t, ln)
		})
	}
}

// TestReply2WithData has the proxy send reply 2 and the peer's first bytes
// in one segment: none of them may be lost.
func TestReply2WithData(t *testing.T) {
	srv := newProxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
			if stage != socks5test.StageBindReply {
				return false
			}
			msg := srvwire.AppendReply(nil, socksbind.ReplySucceeded, socksbind.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 9})
			c.Write(append(msg, "early data"...))
			return true
		}
	})
	ln := listen(t, srv, socksbind.ListenConfig{Once: true}, ":0")
	dialPeer(t, ln.Addr())
	c := accept(t, ln)
	assert.Equal(t, "127.0.0.1:9", c.RemoteAddr().String())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "early data", string(got))
}

// TestListenPeerFilter: a peer the proxy turns away is reported to
// Retrying, never returned from Accept; the expected peer is served next.
func TestListenPeerFilter(t *testing.T) {
	srv := newProxy(t, nil)
	retried := make(chan error, 10)
	// Expect a peer from 127.0.0.2; the first one comes from 127.0.0.1.
	armed, hook := armedHook()
	ln := listen(t, srv, socksbind.ListenConfig{Armed: hook, Retrying: func(err error, _ time.Duration) { retried <- err }}, "127.0.0.2:0")
	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "127.0.0.2", reqs[0].Dst.Host())

	accepted := testkit.AcceptAsync(ln)
	wrong := dialPeer(t, ln.Addr())
	var err error
	select {
	case err = <-retried:
	case <-time.After(10 * time.Second):
		t.Fatal("the refused peer was not reported")
	}
	assert.ErrorIs(t, err, socksbind.ErrNotAllowed)
	assert.ErrorIs(t, err, syscall.EACCES)
	var re *socksbind.ReplyError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, wrong.LocalAddr().String(), re.Addr.String(), "the error names the refused peer")

	// The listener re-armed on its own: the expected peer gets through.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	right, err := d.Dial("tcp", waitArmed(t, armed).String())
	require.NoError(t, err)
	defer right.Close()
	acceptedPeer(t, accepted, right)
}

func TestListenSpecificPort(t *testing.T) {
	t.Run("free port is granted", func(t *testing.T) {
		srv := newProxy(t, nil)
		port := freePort(t)
		ln := listen(t, srv, socksbind.ListenConfig{}, ":"+strconv.Itoa(port))
		assert.Equal(t, port, portOf(ln.Addr()))
	})
	t.Run("port in use fails and releases", func(t *testing.T) {
		srv := newProxy(t, nil)
		busy, err := net.Listen("tcp4", "127.0.0.1:0")
		require.NoError(t, err)
		defer busy.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = newDialer(t, srv).Listen(ctx, "tcp", busy.Addr().(*net.TCPAddr).AddrPort().String()[len("127.0.0.1"):])
		require.Error(t, err)
		assert.ErrorIs(t, err, socksbind.ErrAddressInUse)
		assert.ErrorIs(t, err, syscall.EADDRINUSE)
		var op *net.OpError
		require.ErrorAs(t, err, &op)
		assert.Equal(t, "socks bind", op.Op)
		require.Eventually(t, func() bool { return srv.ActiveBinds() == 0 }, 5*time.Second, time.Millisecond,
			"the port the proxy bound instead was not released")
	})
}

func TestListenFollowRearm(t *testing.T) {
	srv := newProxy(t, nil) // Dante: the port is held by the open connection
	changed := make(chan net.Addr, 10)
	ln := listen(t, srv, socksbind.ListenConfig{Armed: func(a net.Addr) { changed <- a }}, ":0")
	first := ln.Addr()

	dialPeer(t, first)
	accept(t, ln)
	var next net.Addr
	select {
	case next = <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no new address")
	}
	assert.NotEqual(t, first.String(), next.String(), "Dante gives another port while the connection is open")
	assert.Equal(t, next.String(), ln.Addr().String(), "Addr reports the BIND now waiting")
	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, uint16(portOf(first)), reqs[1].Dst.Port, "the re-arm asked for the same port")

	peer := dialPeer(t, next)
	c := accept(t, ln)
	assert.Equal(t, peer.LocalAddr().String(), c.RemoteAddr().String())
}

func TestListenFixedRearm(t *testing.T) {
	t.Run("reuse: same port at once", func(t *testing.T) {
		srv := newProxy(t, func(s *socks5test.Server) { s.BindMode = socks5test.BindReuse })
		port := freePort(t)
		ln := listen(t, srv, socksbind.ListenConfig{}, ":"+strconv.Itoa(port))
		for i := range 3 {
			peer := dialPeer(t, ln.Addr())
			c := accept(t, ln)
			assert.Equal(t, peer.LocalAddr().String(), c.RemoteAddr().String(), "connection %d", i)
			assert.Equal(t, port, portOf(ln.Addr()))
		}
	})
	t.Run("dante: retried until the same port is free", func(t *testing.T) {
		srv := newProxy(t, nil)
		port := freePort(t)
		retried := make(chan error, 100)
		ln := listen(t, srv, socksbind.ListenConfig{Retrying: func(err error, _ time.Duration) {
			select {
			case retried <- err:
			default:
			}
		}}, ":"+strconv.Itoa(port))
		peer := dialPeer(t, ln.Addr())
		c := accept(t, ln)

		// The re-arm cannot get the port while the connection holds it:
		// the listener says so to Retrying, and Accept just waits.
		select {
		case err := <-retried:
			assert.ErrorIs(t, err, socksbind.ErrAddressInUse)
			assert.ErrorIs(t, err, syscall.EADDRINUSE)
		case <-time.After(10 * time.Second):
			t.Fatal("no retry reported")
		}
		assert.Equal(t, port, portOf(ln.Addr()), "a fixed-port listener never reports another port")
		accepted := testkit.AcceptAsync(ln)

		// The peer closes first, so the port is not left in TIME_WAIT.
		peer.Close()
		io.Copy(io.Discard, c)
		c.Close()

		// Peers come until one is served: a peer arriving while no BIND
		// is armed is refused, which is the window this test tolerates.
		var peer2 net.Conn
		require.Eventually(t, func() bool {
			p, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return false
			}
			peer2 = p
			return true
		}, 10*time.Second, 5*time.Millisecond)
		defer peer2.Close()
		c2 := acceptedPeer(t, accepted, peer2)
		assert.Equal(t, port, portOf(c2.LocalAddr()))
	})
}

func TestListenOnce(t *testing.T) {
	srv := newProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{Once: true}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln)
	assert.Len(t, srv.Requests(), 1, "a single-connection listener does not re-arm")

	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	waitBlocked(t, 1)
	closed := time.Now()
	require.NoError(t, ln.Close())
	err := <-errc
	assert.Less(t, time.Since(closed), 100*time.Millisecond)
	assert.ErrorIs(t, err, net.ErrClosed)
}

func TestListenClose(t *testing.T) {
	srv := newProxy(t, nil)
	// A port below the ephemeral range: once freed, no other process's
	// listen on port 0 can take it before the refusal is checked.
	ln := listen(t, srv, socksbind.ListenConfig{}, ":"+strconv.Itoa(freePort(t)))
	addr := ln.Addr()
	const waiters = 3
	errc := make(chan error, waiters)
	for range waiters {
		go func() { _, err := ln.Accept(); errc <- err }()
	}
	waitBlocked(t, waiters)
	closed := time.Now()
	require.NoError(t, ln.Close())
	for range waiters {
		err := <-errc
		assert.ErrorIs(t, err, net.ErrClosed)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.False(t, ne.Temporary()) //nolint:staticcheck
	}
	assert.Less(t, time.Since(closed), 100*time.Millisecond)
	require.NoError(t, ln.Close(), "a second Close returns nil")

	require.Eventually(t, func() bool { return srv.ActiveBinds() == 0 }, 5*time.Second, time.Millisecond)
	_, err := net.Dial("tcp", addr.String())
	assert.ErrorIs(t, err, syscall.ECONNREFUSED, "the proxy still listens after Close")
	_, err = ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
}

func TestListenDeadline(t *testing.T) {
	srv := newProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{}, ":0")

	require.NoError(t, ln.SetDeadline(time.Now().Add(20*time.Millisecond)))
	start := time.Now()
	_, err := ln.Accept()
	assert.Less(t, time.Since(start), 200*time.Millisecond)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)

	// Cancelling a context is the same.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	require.NoError(t, ln.SetDeadline(time.Time{}))
	_, err = ln.AcceptContext(ctx)
	assert.ErrorIs(t, err, context.Canceled)

	// The BIND is still pending and serves the next Accept.
	peer := dialPeer(t, ln.Addr())
	c := accept(t, ln)
	assert.Equal(t, peer.LocalAddr().String(), c.RemoteAddr().String())
	assert.Eventually(t, func() bool { return len(srv.Requests()) == 2 }, 5*time.Second, time.Millisecond,
		"one BIND and the re-arm")
}

func TestListenConcurrentAccept(t *testing.T) {
	srv := newProxy(t, func(s *socks5test.Server) { s.BindMode = socks5test.BindReuse })
	port := freePort(t)
	ln := listen(t, srv, socksbind.ListenConfig{}, ":"+strconv.Itoa(port))
	const n = 4
	conns := make(chan net.Conn, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ln.Accept()
			if err == nil {
				conns <- c
			}
		}()
	}
	peers := make(map[string]bool)
	for range n {
		peers[dialPeer(t, ln.Addr()).LocalAddr().String()] = true
	}
	for range n {
		select {
		case c := <-conns:
			assert.True(t, peers[c.RemoteAddr().String()], "unknown peer %v", c.RemoteAddr())
			delete(peers, c.RemoteAddr().String())
			c.Close()
		case <-time.After(10 * time.Second):
			t.Fatal("not every peer was accepted")
		}
	}
	wg.Wait()
}

// TestListenProxyGone: with a RetryLimit, a listener whose proxy is gone
// gives up with a permanent error; every later Accept returns it too. A
// multiplexed listener does so once its session is lost for longer.
func TestListenProxyGone(t *testing.T) {
	for _, m := range []socksbind.Multiplex{socksbind.MultiplexOff, socksbind.MultiplexOn} {
		t.Run(m.String(), func(t *testing.T) {
			srv := muxProxy(t, nil)
			ln := listen(t, srv, socksbind.ListenConfig{Multiplex: m, RetryLimit: 200 * time.Millisecond}, ":0")
			errc := make(chan error, 1)
			go func() { _, err := ln.Accept(); errc <- err }()
			srv.Close()
			var err error
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatal("Accept still blocked after the proxy closed")
			}
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			assert.False(t, ne.Temporary(), "a dead listener must not look temporary: %v", err) //nolint:staticcheck
			assert.False(t, ne.Timeout(), "%v", err)
			assert.ErrorIs(t, err, syscall.ECONNREFUSED, "the last attempt found no proxy")
			_, err2 := ln.Accept()
			require.ErrorAs(t, err2, &ne)
			assert.False(t, ne.Temporary()) //nolint:staticcheck
			assert.Equal(t, err.Error(), err2.Error())
		})
	}
}

func TestListenRefused(t *testing.T) {
	for _, tt := range []struct {
		rep  socksbind.Reply
		want error
	}{
		{socksbind.ReplyNotAllowed, socksbind.ErrNotAllowed},
		{socksbind.ReplyCommandNotSupported, socksbind.ErrCommandNotSupported},
	} {
		t.Run(tt.rep.String(), func(t *testing.T) {
			srv := newProxy(t, func(s *socks5test.Server) {
				s.Rules = []socks5test.Rule{socks5test.RefuseCommand(socksbind.CmdBind, tt.rep)}
			})
			_, err := newDialer(t, srv).Listen(context.Background(), "tcp", ":0")
			assert.ErrorIs(t, err, tt.want)
		})
	}
	t.Run("cancel while the proxy is silent", func(t *testing.T) {
		srv := newProxy(t, stall(socks5test.StageRequest))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		start := time.Now()
		_, err := newDialer(t, srv).Listen(ctx, "tcp", ":0")
		assert.ErrorIs(t, err, context.Canceled)
		assert.Less(t, time.Since(start), 200*time.Millisecond)
	})
	t.Run("bad address", func(t *testing.T) {
		d := &socksbind.Dialer{ProxyAddress: "127.0.0.1:1"}
		for _, a := range []string{"localhost:0", "[::1]:0", "255.255.255.255:0"} {
			_, err := d.Listen(context.Background(), "tcp4", a)
			assert.Error(t, err, a)
		}
	})
}

func TestNettestAcceptedConn(t *testing.T) {
	srv := newProxy(t, func(s *socks5test.Server) { s.BindMode = socks5test.BindReuse })
	ln := listen(t, srv, socksbind.ListenConfig{}, ":"+strconv.Itoa(freePort(t)))
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, nil, nil, err
		}
		c, err := ln.Accept()
		if err != nil {
			peer.Close()
			return nil, nil, nil, err
		}
		return c, peer, func() { c.Close(); peer.Close() }, nil
	})
}

// TestHTTPServe runs an unchanged http.Serve behind the proxy and sends 50
// requests, each on a fresh connection, checking every response.
func TestHTTPServe(t *testing.T) {
	for _, mode := range bindModes {
		t.Run(mode.String(), func(t *testing.T) {
			srv := newProxy(t, func(s *socks5test.Server) { s.BindMode = mode })
			changed := make(chan net.Addr, 100)
			address := ":0" // Dante: follow the proxy from port to port
			if mode == socks5test.BindReuse {
				address = ":" + strconv.Itoa(freePort(t))
			}
			ln := listen(t, srv, socksbind.ListenConfig{Armed: func(a net.Addr) { changed <- a }}, address)
			served := make(chan error, 1)
			go func() {
				served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					fmt.Fprintf(w, "%s %s", r.URL.Path, r.RemoteAddr)
				}))
			}()

			addr := ln.Addr()
			var local string
			client := &http.Client{Transport: &http.Transport{
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr.String())
					if err == nil {
						local = c.LocalAddr().String()
					}
					return c, err
				},
			}}
			for i := range 50 {
				resp, err := client.Get(fmt.Sprintf("http://proxied/%d", i))
				require.NoError(t, err, "request %d", i)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.Equal(t, fmt.Sprintf("/%d %s", i, local), string(body), "request %d", i)
				if mode == socks5test.BindDante {
					select {
					case addr = <-changed:
					case <-time.After(10 * time.Second):
						t.Fatalf("no re-armed address after request %d", i)
					}
				}
			}
			require.NoError(t, ln.Close())
			assert.ErrorIs(t, <-served, net.ErrClosed)
		})
	}
}

// stallRequests makes the server stall, never answering, the BIND requests
// whose number (from 1) stall reports true for.
func stallRequests(stall func(n int) bool) func(*socks5test.Server) {
	var mu sync.Mutex
	n := 0
	return func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, req *socks5test.Request) bool {
			if stage != socks5test.StageRequest || req.Command != socksbind.CmdBind {
				return false
			}
			mu.Lock()
			n++
			stalled := stall(n)
			mu.Unlock()
			if stalled {
				io.Copy(io.Discard, c)
			}
			return stalled
		}
	}
}

// TestSetDeadlineWhileWaitingForRearm: an Accept waiting for a re-arm that
// the proxy is slow to answer sees a deadline set after it started waiting.
func TestSetDeadlineWhileWaitingForRearm(t *testing.T) {
	srv := newProxy(t, stallRequests(func(n int) bool { return n == 2 }))
	ln := listen(t, srv, socksbind.ListenConfig{}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln) // the re-arm now stalls
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	waitBlocked(t, 1)
	require.NoError(t, ln.SetDeadline(time.Now().Add(10*time.Millisecond)))
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not see the new deadline")
	}
}
