package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/testkit"
)

var loopback4 = netip.MustParseAddr("127.0.0.1")

// awaitAccept reads the result of testkit.AcceptAsync, and closes the
// accepted connection when the test ends.
func awaitAccept(t testing.TB, ch <-chan testkit.Accepted) (net.Conn, error) {
	t.Helper()
	select {
	case r := <-ch:
		if r.Conn != nil {
			t.Cleanup(func() { r.Conn.Close() })
		}
		return r.Conn, r.Err
	case <-time.After(testTimeout):
		require.FailNow(t, "Accept did not return")
		return nil, nil
	}
}

// listen makes a BIND listener with lc (its Dialer set to d) on address, closed
// when the test ends.
func listen(t testing.TB, d *socksbind.Dialer, lc socksbind.ListenConfig, address string) *socksbind.Listener {
	t.Helper()
	lc.Dialer = d
	ln, err := lc.Listen(testContext(t), "tcp", address)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// accept accepts one connection, with testTimeout as its deadline, closed
// when the test ends.
func accept(t testing.TB, ln net.Listener) *socksbind.Conn {
	t.Helper()
	c, err := awaitAccept(t, testkit.AcceptAsync(ln))
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	return asConn(t, c)
}

// TestBindDante runs the BIND listener against Dante.
func TestBindDante(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{})
	d := newDialer(t, dante.Addr, nil, nil)

	t.Run("Addr", func(t *testing.T) {
		ln := listen(t, d, socksbind.ListenConfig{}, ":0")
		addr, ok := ln.Addr().(*net.TCPAddr)
		require.True(t, ok, "Addr is a %T", ln.Addr())
		assert.Equal(t, loopback4, netutil.AddrPort(addr).Addr(), "Dante binds on its external address")
		assert.NotZero(t, addr.Port)

		// A peer reaching Addr reaches the BIND: Dante bound what
		// Addr says.
		peer := dialPeer(t, "127.0.0.1", addr)
		c := accept(t, ln)
		assert.Equal(t, netutil.AddrPort(addr), netutil.AddrPort(c.LocalAddr()), "LocalAddr of the accepted conn is the bound address")
		assert.Equal(t, netutil.AddrPort(addr), netutil.AddrPort(peer.RemoteAddr()), "the peer is connected to Addr")
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()), "RemoteAddr is the peer, from reply 2")
		assert.Equal(t, dante.Addr, c.NetConn().RemoteAddr().String(), "the relay runs over the control connection")
	})

	t.Run("HalfClose", func(t *testing.T) {
		ln := listen(t, d, socksbind.ListenConfig{}, ":0")
		peer := dialPeer(t, "127.0.0.1", ln.Addr())
		c := accept(t, ln)

		// Peer to listener, then the peer's EOF.
		_, err := io.WriteString(peer, "request from the peer")
		require.NoError(t, err)
		require.NoError(t, peer.CloseWrite())
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, "request from the peer", string(got))

		// The other direction still works after the half-close.
		_, err = io.WriteString(c, "response to the peer")
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		got, err = io.ReadAll(peer)
		require.NoError(t, err)
		assert.Equal(t, "response to the peer", string(got))
	})

	t.Run("DataWithReply2", func(t *testing.T) {
		// The peer writes as soon as it is connected; the test waits
		// until the data is queued on the control connection, whether
		// or not the listener has read reply 2 yet, so that a reply
		// read with any excess would lose bytes.
		rec := &testkit.Dialer{}
		d := newDialer(t, dante.Addr, nil, rec)
		for i := range 5 {
			ln := listen(t, d, socksbind.ListenConfig{Once: true}, ":0")
			control := rec.Next(t)
			payload := strings.Repeat(fmt.Sprintf("<%d:%s>", i, ln.Addr()), 40)
			peer := dialPeer(t, "127.0.0.1", ln.Addr())
			_, err := io.WriteString(peer, payload)
			require.NoError(t, err)
			require.NoError(t, peer.CloseWrite())

			peekQueued(t, control.TCPConn, len(payload))
			pa := netutil.AddrPort(peer.LocalAddr())

			c := accept(t, ln)
			assert.Same(t, control, c.NetConn(), "the relay is the control connection")
			got, err := io.ReadAll(c)
			require.NoError(t, err)
			assert.Equal(t, payload, string(got), "round %d: every byte after reply 2", i)
			assert.Equal(t, pa, netutil.AddrPort(c.RemoteAddr()))
			require.NoError(t, ln.Close())
		}
	})

	t.Run("SpecificPort", func(t *testing.T) {
		// The port was free a moment ago; another process may take it
		// in between, so a few ports are tried.
		servesFixedPort(t, d, socksbind.ErrAddressInUse)
	})

	t.Run("PortInUse", func(t *testing.T) {
		occupied, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer occupied.Close()
		port := occupied.Addr().(*net.TCPAddr).Port
		address := fmt.Sprintf(":%d", port)

		rec := &testkit.Dialer{}
		d := newDialer(t, dante.Addr, nil, rec)
		ln, err := d.Listen(testContext(t), "tcp", address)
		assert.Nil(t, ln)
		require.ErrorIs(t, err, socksbind.ErrAddressInUse)
		assert.ErrorIs(t, err, syscall.EADDRINUSE)
		var oe *net.OpError
		require.ErrorAs(t, err, &oe)
		assert.Equal(t, "socks bind", oe.Op)
		assert.Equal(t, dante.Addr, oe.Source.String())
		var re *socksbind.ReplyError
		assert.NotErrorAs(t, err, &re, "Dante granted another port: no failure reply")
		// What Dante bound instead is released: the library closed the
		// control connection.
		_, err = rec.Next(t).Read(make([]byte, 1))
		assert.ErrorIs(t, err, net.ErrClosed)
	})

	t.Run("Close", func(t *testing.T) {
		ln, err := d.Listen(testContext(t), "tcp", ":0")
		require.NoError(t, err)
		addr := ln.Addr()
		blocked := testkit.AcceptAsync(ln)

		require.NoError(t, ln.Close())
		_, err = awaitAccept(t, blocked)
		assert.ErrorIs(t, err, net.ErrClosed, "a blocked Accept returns")
		_, err = ln.Accept()
		assert.ErrorIs(t, err, net.ErrClosed, "Accept after Close")
		var ne net.Error
		if assert.ErrorAs(t, err, &ne) {
			assert.False(t, ne.Timeout())
		}
		assert.NoError(t, ln.Close(), "a second Close")

		// Dante notices the closed control connection and closes the
		// bound socket.
		pollRefused(t, addr)
	})

	t.Run("Once", func(t *testing.T) {
		var armed atomic.Int32
		ln := listen(t, d, socksbind.ListenConfig{Once: true, Armed: func(net.Addr) { armed.Add(1) }}, ":0")
		addr := ln.Addr()
		peer := dialPeer(t, "127.0.0.1", addr)
		c := accept(t, ln)
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))

		// No re-arm: Dante's socket for the one BIND is gone, and a
		// second Accept waits for Close.
		pollRefused(t, addr)
		ctx, cancel := context.WithTimeout(testContext(t), 100*time.Millisecond)
		defer cancel()
		_, err := ln.AcceptContext(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		second := testkit.AcceptAsync(ln)
		require.NoError(t, ln.Close())
		_, err = awaitAccept(t, second)
		assert.ErrorIs(t, err, net.ErrClosed)
		assert.Zero(t, armed.Load(), "Armed is never called")
		assert.Equal(t, addr, ln.Addr(), "Addr stays that of the one BIND")

		// The accepted connection outlives the listener.
		assert.Equal(t, "after close", exchangeBack(t, c, peer, "after close"))
	})

	t.Run("DeadlineKeepsBind", func(t *testing.T) {
		// Listen's context ends once Listen has returned: no effect.
		ctx, cancel := context.WithCancel(context.Background())
		ln, err := d.Listen(ctx, "tcp", ":0")
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		addr := ln.Addr()

		// An Accept cut short by the deadline leaves the BIND pending.
		require.NoError(t, ln.SetDeadline(time.Now().Add(50*time.Millisecond)))
		_, err = ln.Accept()
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.True(t, ne.Timeout())
		require.NoError(t, ln.SetDeadline(time.Time{}))
		assert.Equal(t, addr, ln.Addr())

		peer := dialPeer(t, "127.0.0.1", addr)
		c := accept(t, ln)
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
		bothWays(t, c, peer)
	})

	t.Run("FixedPortRearm", func(t *testing.T) {
		testFixedPortRearm(t, d)
	})

	t.Run("HTTPFollow", func(t *testing.T) {
		testHTTPFollow(t, d)
	})
}

// testFixedPortRearm follows a listener created for a specific port through
// Dante's refusal to give the port again while its connection is open: the
// listener retries on its own, reporting ErrAddressInUse to Retrying, Accept
// just waits, and serving resumes on the same port once the connection is
// gone.
func testFixedPortRearm(t *testing.T, d *socksbind.Dialer) {
	armed := make(chan net.Addr, 64)
	retried := make(chan error, 64)
	lc := socksbind.ListenConfig{Dialer: d,
		Armed: func(a net.Addr) { armed <- a },
		Retrying: func(err error, _ time.Duration) {
			select {
			case retried <- err:
			default:
			}
		}}
	ln, port := listenFixedPort(t, lc, socksbind.ErrAddressInUse)
	want := netip.AddrPortFrom(loopback4, uint16(port))

	peer := dialPeer(t, "127.0.0.1", ln.Addr())
	c := accept(t, ln)
	bothWays(t, c, peer)

	// The port is busy with the connection: Dante binds another, which
	// the listener gives back, and tries again later.
	pending := testkit.AcceptAsync(ln)
	select {
	case err := <-retried:
		require.ErrorIs(t, err, socksbind.ErrAddressInUse)
	case <-time.After(testTimeout):
		require.FailNow(t, "no retry reported")
	}
	assert.Equal(t, want, netutil.AddrPort(ln.Addr()), "Addr keeps the port")
	assert.Empty(t, pending, "Accept does not return the retried trouble")

	// The peer resets, so that no TIME_WAIT holds the port, and Dante
	// closes the relay.
	require.NoError(t, lingerClose(peer))
	_, err := c.Read(make([]byte, 1))
	require.Error(t, err)
	require.NoError(t, c.Close())

	// Once Dante has freed the port, a retry gets it back: Armed says so,
	// and a new peer comes in on the same address.
	select {
	case a := <-armed:
		require.Equal(t, want, netutil.AddrPort(a), "Armed reports the port")
		peer2 := dialPeer(t, "127.0.0.1", a)
		c2, err := awaitAccept(t, pending)
		require.NoError(t, err)
		assert.Equal(t, netutil.AddrPort(peer2.LocalAddr()), netutil.AddrPort(c2.RemoteAddr()))
		assert.Equal(t, want, netutil.AddrPort(c2.LocalAddr()))
		bothWays(t, c2, peer2)
	case r := <-pending:
		require.FailNow(t, "Accept returned while the port was busy", "%v", r.Err)
	case <-time.After(testTimeout):
		require.FailNow(t, "the port never came back")
	}
}

// exchangeBack sends msg from c to peer and returns what the peer read.
func exchangeBack(t testing.TB, c, peer net.Conn, msg string) string {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	return testkit.Carry(t, c, peer, msg)
}

// servesFixedPort listens through d on a port asked for by number (see
// listenFixedPort; taken is how the proxy says the port was taken), and
// checks that the listener has that port, and that a peer from 127.0.0.1
// is accepted there, named and relayed both ways.
func servesFixedPort(t testing.TB, d *socksbind.Dialer, taken error) {
	t.Helper()
	ln, port := listenFixedPort(t, socksbind.ListenConfig{Dialer: d}, taken)
	assert.Equal(t, netip.AddrPortFrom(loopback4, uint16(port)), netutil.AddrPort(ln.Addr()))

	peer := dialPeer(t, "127.0.0.1", ln.Addr())
	c := accept(t, ln)
	assert.Equal(t, uint16(port), netutil.AddrPort(c.LocalAddr()).Port())
	assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
	bothWays(t, c, peer)
}

// bothWays checks that data flows from c to peer and back.
func bothWays(t testing.TB, c, peer net.Conn) {
	t.Helper()
	assert.Equal(t, "to the peer", exchangeBack(t, c, peer, "to the peer"))
	assert.Equal(t, "from the peer", exchangeBack(t, peer, c, "from the peer"))
}

// testHTTPFollow serves HTTP with an unchanged http.Serve through a follow
// mode listener: 20 requests, each on a fresh connection to the address the
// listener armed last.
func testHTTPFollow(t *testing.T, d *socksbind.Dialer) {
	const requests = 20
	armed := make(chan net.Addr, requests+1)
	ln := listen(t, d, socksbind.ListenConfig{Armed: func(a net.Addr) { armed <- a }}, ":0")

	served := make(chan error, 1)
	go func() {
		served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		}))
	}()

	var local atomic.Value // the client's address of the last connection
	tr := &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				local.Store(c.LocalAddr().String())
			}
			return c, err
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: testTimeout}

	addr := ln.Addr()
	ports := map[int]bool{}
	for i := range requests {
		ports[addr.(*net.TCPAddr).Port] = true
		resp, err := client.Get(fmt.Sprintf("http://%s/req/%d", addr, i))
		require.NoError(t, err, "request %d to %v", i, addr)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, fmt.Sprintf("GET /req/%d from %s", i, local.Load()), string(body),
			"request %d: the handler sees the client's own address", i)

		// The listener re-arms after each connection; Armed says where.
		select {
		case addr = <-armed:
		case <-time.After(testTimeout):
			require.FailNow(t, "the listener did not re-arm", "after request %d", i)
		}
		assert.Equal(t, loopback4, netutil.AddrPort(addr).Addr())
	}
	assert.Equal(t, addr, ln.Addr(), "Addr follows the last BIND")
	t.Logf("%d requests served on %d distinct ports", requests, len(ports))

	require.NoError(t, ln.Close())
	select {
	case err := <-served:
		assert.ErrorIs(t, err, net.ErrClosed, "http.Serve ends with the listener")
	case <-time.After(testTimeout):
		require.FailNow(t, "http.Serve did not return after Close")
	}
	assert.Empty(t, armed, "no re-arm after Close")
}

// retryRecorder collects what a listener's Retrying hook is told, without
// blocking it.
type retryRecorder chan error

func (r retryRecorder) hook(err error, _ time.Duration) {
	select {
	case r <- err:
	default:
	}
}

func (r retryRecorder) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r:
		return err
	case <-time.After(testTimeout):
		require.FailNow(t, "no retry reported")
		return nil
	}
}

// waitArmed returns the address of the next BIND a listener armed.
func waitArmed(t *testing.T, armed <-chan net.Addr) net.Addr {
	t.Helper()
	select {
	case a := <-armed:
		return a
	case <-time.After(testTimeout):
		require.FailNow(t, "the listener did not re-arm")
		return nil
	}
}

// TestBindDanteFilteredPeer checks Dante's bindreply rule: a peer from a
// refused address makes a failure reply 2 that matches ErrNotAllowed and
// carries that peer's address; the listener reports it to Retrying, not to
// Accept, re-arms and accepts the next peer.
func TestBindDanteFilteredPeer(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{BlockBindReplyFrom: "127.0.0.2/32"})
	d := newDialer(t, dante.Addr, nil, nil)

	retried := make(retryRecorder, 8)
	armed := make(chan net.Addr, 8)
	ln := listen(t, d, socksbind.ListenConfig{Retrying: retried.hook, Armed: func(a net.Addr) { armed <- a }}, ":0")
	first := ln.Addr()
	pending := testkit.AcceptAsync(ln)
	blocked := dialPeer(t, "127.0.0.2", first)
	err := retried.next(t)
	re := requireReplyError(t, err, "socks bind", socksbind.CmdBind, socksbind.ReplyNotAllowed,
		socksbind.ErrNotAllowed, syscall.EACCES)
	require.NotNil(t, re.Addr, "reply 2 carries the refused peer")
	assert.Equal(t, netutil.AddrPort(blocked.LocalAddr()), netutil.AddrPort(re.Addr))

	// Dante closes the refused peer.
	_, err = blocked.Read(make([]byte, 1))
	assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "the refused peer is closed: %v", err)

	// The next, allowed peer is accepted on the re-armed BIND.
	peer := dialPeer(t, "127.0.0.1", waitArmed(t, armed))
	ok, err := awaitAccept(t, pending)
	require.NoError(t, err)
	assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(ok.RemoteAddr()))
	assert.Equal(t, "allowed peer", exchangeBack(t, ok, peer, "allowed peer"))
	t.Logf("first BIND on %v, re-armed BIND on %v", first, ok.LocalAddr())
}

// TestBindDanteExpectedPeer checks a Listen naming the expected peer: Dante
// turns any other peer away, and lets the named one in.
func TestBindDanteExpectedPeer(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{})
	d := newDialer(t, dante.Addr, nil, nil)

	t.Run("Once", func(t *testing.T) {
		// A one-shot listener, as for FTP: the refusal is Accept's.
		ln := listen(t, d, socksbind.ListenConfig{Once: true}, "127.0.0.3:0")
		other := dialPeer(t, "127.0.0.2", ln.Addr())
		_, err := awaitAccept(t, testkit.AcceptAsync(ln))
		re := requireReplyError(t, err, "accept", socksbind.CmdBind, socksbind.ReplyNotAllowed,
			socksbind.ErrNotAllowed, syscall.EACCES)
		assert.Equal(t, netutil.AddrPort(other.LocalAddr()), netutil.AddrPort(re.Addr))
	})
	t.Run("Rearming", func(t *testing.T) {
		retried := make(retryRecorder, 8)
		armed := make(chan net.Addr, 8)
		ln := listen(t, d, socksbind.ListenConfig{Retrying: retried.hook, Armed: func(a net.Addr) { armed <- a }}, "127.0.0.3:0")
		first := ln.Addr()
		pending := testkit.AcceptAsync(ln)
		other := dialPeer(t, "127.0.0.2", first)
		re := requireReplyError(t, retried.next(t), "socks bind", socksbind.CmdBind, socksbind.ReplyNotAllowed,
			socksbind.ErrNotAllowed, syscall.EACCES)
		assert.Equal(t, netutil.AddrPort(other.LocalAddr()), netutil.AddrPort(re.Addr))

		peer := dialPeer(t, "127.0.0.3", waitArmed(t, armed))
		c, err := awaitAccept(t, pending)
		require.NoError(t, err)
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
	})
}

// TestBindDanteBlocked checks that a BIND refused by Dante's rules fails in
// Listen with reply 2 (not allowed).
func TestBindDanteBlocked(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{BlockBind: true})
	requireBindNotAllowed(t, dante.Addr)
}

// TestBindDanteIPv6 runs a BIND for an IPv6 peer through Dante on ::1.
func TestBindDanteIPv6(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{IPv6: true})
	d := newDialer(t, dante.Addr6, nil, nil)

	// Dante cannot bind :: on loopback; the family of DST.ADDR decides
	// the family of the socket, so the expected peer ::1 is named.
	ln := listen(t, d, socksbind.ListenConfig{}, "[::1]:0")
	bound := ln.Addr() // the listener moves on once it has a peer
	assert.Equal(t, netip.IPv6Loopback(), netutil.AddrPort(bound).Addr())
	peer := dialPeer(t, "::1", bound)
	c := accept(t, ln)
	assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
	assert.Equal(t, netutil.AddrPort(bound), netutil.AddrPort(c.LocalAddr()))
	bothWays(t, c, peer)
}
