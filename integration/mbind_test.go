package integration

// The multiplexed listener (GOST's MBIND) against the real GOST, and
// MultiplexAuto against GOST, Dante and microsocks.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
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
	"github.com/socksbind/socksbind/proxyext"
)

func muxListen(t testing.TB, d *socksbind.Dialer, m socksbind.Multiplex) *socksbind.Listener {
	t.Helper()
	return listen(t, d, socksbind.ListenConfig{Dialer: d, Multiplex: m}, ":0")
}

// serveHTTP runs http.Serve on ln until the test ends.
func serveHTTP(t testing.TB, ln net.Listener) {
	t.Helper()
	served := make(chan error, 1)
	go func() {
		served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.URL.Path, r.RemoteAddr)
		}))
	}()
	t.Cleanup(func() {
		ln.Close()
		<-served
	})
}

// hammer sends requests GETs from clients concurrent clients to addr and
// returns how many failed, with the first failure.
func hammer(addr string, clients, requests int, keepAlive bool) (failed int64, first error) {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: testTimeout}
	var n, bad atomic.Int64
	var once sync.Once
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				i := n.Add(1)
				if i > int64(requests) {
					return
				}
				path := fmt.Sprintf("/%d", i)
				resp, err := client.Get("http://" + addr + path)
				if err == nil {
					var body []byte
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && !strings.HasPrefix(string(body), path+" 127.0.0.1:") {
						err = fmt.Errorf("%s: body %q", path, body)
					}
				}
				if err != nil {
					bad.Add(1)
					once.Do(func() { first = err })
				}
			}
		})
	}
	wg.Wait()
	return bad.Load(), first
}

// TestMBINDGostHTTP serves HTTP through GOST's multiplexed BIND, with the
// listener of proxyext.Listen and ALL_PROXY=socks5h://...?bind=mux (no code
// of the server's names the proxy): 2,000 requests from 50 concurrent
// clients without keep-alive, then 2,000 with, all answered, at one address
// that never changes.
func TestMBINDGostHTTP(t *testing.T) {
	leakcheck.Check(t)
	gost := startGost(t, GostConfig{})
	t.Setenv("ALL_PROXY", "socks5h://"+gost.Addr+"?bind=mux")
	l, err := proxyext.Listen(testContext(t), "tcp", ":0")
	require.NoError(t, err)
	ln, ok := l.(*socksbind.Listener)
	require.True(t, ok, "%T", l)
	require.True(t, ln.Multiplexed())
	addr := ln.Addr().String()
	serveHTTP(t, ln)
	for _, keepAlive := range []bool{false, true} {
		start := time.Now()
		failed, err := hammer(addr, 50, 2000, keepAlive)
		assert.Zero(t, failed, "keep-alive %v: first failure: %v", keepAlive, err)
		t.Logf("keep-alive %v: 2000 requests, 50 clients, %d failed, in %v", keepAlive, failed, time.Since(start).Round(time.Millisecond))
		assert.Equal(t, addr, ln.Addr().String(), "the address never changes")
	}
}

// TestMBINDGostIntegrity sends 64 MiB each way on one stream while 20
// other streams carry traffic, and checks SHA-256 of every byte.
func TestMBINDGostIntegrity(t *testing.T) {
	leakcheck.Check(t)
	gost := startGost(t, GostConfig{})
	ln := muxListen(t, newDialer(t, gost.Addr, nil, nil), socksbind.MultiplexOn)

	// 20 streams that echo what their peer sends, busy all along.
	stop := make(chan struct{})
	var busy sync.WaitGroup
	var echoed atomic.Int64
	for range 20 {
		peer := dialPeer(t, "127.0.0.1", ln.Addr())
		c := accept(t, ln)
		require.NoError(t, c.SetDeadline(time.Time{}))
		require.NoError(t, peer.SetDeadline(time.Time{}))
		busy.Go(func() { io.Copy(c, c) })
		busy.Go(func() {
			buf := make([]byte, 16<<10)
			for {
				select {
				case <-stop:
					peer.Close()
					return
				default:
				}
				if _, err := peer.Write(buf); err != nil {
					return
				}
				n, err := io.ReadFull(peer, buf)
				echoed.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
	}

	const size = 64 << 20
	peer := dialPeer(t, "127.0.0.1", ln.Addr())
	c := accept(t, ln)
	require.NoError(t, c.SetDeadline(time.Now().Add(2*time.Minute)))
	require.NoError(t, peer.SetDeadline(time.Now().Add(2*time.Minute)))
	send := func(w io.Writer) ([32]byte, error) {
		h := sha256.New()
		_, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rand.Reader, size))
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		return sum, err
	}
	recv := func(r io.Reader) ([32]byte, int64, error) {
		h := sha256.New()
		n, err := io.Copy(h, r)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		return sum, n, err
	}
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	toPeer, fromPeer := make(chan result, 1), make(chan result, 1)
	go func() { s, n, err := recv(io.LimitReader(peer, size)); toPeer <- result{s, n, err} }()
	go func() { s, n, err := recv(io.LimitReader(c, size)); fromPeer <- result{s, n, err} }()
	var sentToPeer, sentFromPeer [32]byte
	var errTo, errFrom error
	var wg sync.WaitGroup
	wg.Go(func() { sentToPeer, errTo = send(c) })
	wg.Go(func() { sentFromPeer, errFrom = send(peer) })
	wg.Wait()
	require.NoError(t, errTo)
	require.NoError(t, errFrom)
	for _, tt := range []struct {
		name string
		ch   chan result
		sent [32]byte
	}{{"to the peer", toPeer, sentToPeer}, {"from the peer", fromPeer, sentFromPeer}} {
		got := <-tt.ch
		require.NoError(t, got.err, tt.name)
		assert.Equal(t, int64(size), got.n, tt.name)
		assert.Equal(t, tt.sent, got.sum, "SHA-256 %s", tt.name)
	}
	close(stop)
	busy.Wait()
	assert.Positive(t, echoed.Load(), "the other streams carried traffic")
	t.Logf("64 MiB each way intact; the 20 other streams echoed %d MiB meanwhile", echoed.Load()>>20)
}

// TestMBINDGostClose closes a multiplexed listener with 100 streams open:
// Close returns within 100 ms, GOST closes its port, and nothing of ours is
// left.
func TestMBINDGostClose(t *testing.T) {
	leakcheck.Check(t)
	gost := startGost(t, GostConfig{})
	ln := muxListen(t, newDialer(t, gost.Addr, nil, nil), socksbind.MultiplexOn)
	addr := ln.Addr()
	var conns []net.Conn
	for range 100 {
		dialPeer(t, "127.0.0.1", addr)
		conns = append(conns, accept(t, ln))
	}
	pending := testkit.AcceptAsync(ln)
	time.Sleep(10 * time.Millisecond) // let Accept block
	start := time.Now()
	require.NoError(t, ln.Close())
	took := time.Since(start)
	assert.Less(t, took, 100*time.Millisecond)
	r, err := awaitAccept(t, pending)
	assert.Nil(t, r)
	assert.ErrorIs(t, err, net.ErrClosed)
	for _, c := range conns {
		c.Close()
	}
	pollRefused(t, addr)
	t.Logf("Close with 100 streams open took %v", took)
}

// TestMBINDAuto: MultiplexAuto picks MBIND on GOST, BIND on Dante, and
// fails cleanly on microsocks, which has neither.
func TestMBINDAuto(t *testing.T) {
	leakcheck.Check(t)
	t.Run("GOST", func(t *testing.T) {
		gost := startGost(t, GostConfig{})
		ln := muxListen(t, newDialer(t, gost.Addr, nil, nil), socksbind.MultiplexAuto)
		assert.True(t, ln.Multiplexed())
		p1 := dialPeer(t, "127.0.0.1", ln.Addr())
		p2 := dialPeer(t, "127.0.0.1", ln.Addr())
		peers := map[netip.AddrPort]bool{netutil.AddrPort(p1.LocalAddr()): true, netutil.AddrPort(p2.LocalAddr()): true}
		for range 2 {
			c := accept(t, ln)
			assert.True(t, peers[netutil.AddrPort(c.RemoteAddr())], "peer %v", c.RemoteAddr())
		}
	})
	t.Run("Dante", func(t *testing.T) {
		dante := startDante(t, DanteConfig{})
		d := newDialer(t, dante.Addr, nil, nil)
		for range 2 { // the second Listen sends no probe
			ln := muxListen(t, d, socksbind.MultiplexAuto)
			assert.False(t, ln.Multiplexed())
			peer := dialPeer(t, "127.0.0.1", ln.Addr())
			c := accept(t, ln)
			bothWays(t, c, peer)
			require.NoError(t, ln.Close())
		}
	})
	t.Run("microsocks", func(t *testing.T) {
		ms := startMicrosocks(t, "", "")
		d := newDialer(t, ms.Addr, nil, nil)
		start := time.Now()
		_, err := d.Listen(testContext(t), "tcp", ":0")
		require.Error(t, err)
		lc := socksbind.ListenConfig{Dialer: d, Multiplex: socksbind.MultiplexAuto}
		_, err = lc.Listen(testContext(t), "tcp", ":0")
		assert.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
		assert.ErrorIs(t, err, syscall.EOPNOTSUPP)
		lc.Multiplex = socksbind.MultiplexOn
		_, err = lc.Listen(testContext(t), "tcp", ":0")
		assert.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
		assert.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("GOST without bind", func(t *testing.T) {
		gost := startGost(t, GostConfig{NoBind: true})
		lc := socksbind.ListenConfig{Dialer: newDialer(t, gost.Addr, nil, nil), Multiplex: socksbind.MultiplexAuto}
		_, err := lc.Listen(testContext(t), "tcp", ":0")
		assert.ErrorIs(t, err, socksbind.ErrNotAllowed)
	})
	t.Run("Dante with MultiplexOn", func(t *testing.T) {
		dante := startDante(t, DanteConfig{})
		lc := socksbind.ListenConfig{Dialer: newDialer(t, dante.Addr, nil, nil), Multiplex: socksbind.MultiplexOn}
		_, err := lc.Listen(testContext(t), "tcp", ":0")
		assert.ErrorIs(t, err, socksbind.ErrCommandNotSupported, "Dante closes without a reply")
	})
}

// TestMBINDGostIdle keeps a multiplexed listener idle for 45 s, longer than
// GOST's 30 s keep-alive timeout: the session lives on, and a peer is served
// afterwards. It runs in parallel with the other tests.
func TestMBINDGostIdle(t *testing.T) {
	t.Parallel() // leaks are the unit tests' to catch: parallel tests share the process
	gost := startGost(t, GostConfig{})
	ln := muxListen(t, newDialer(t, gost.Addr, nil, nil), socksbind.MultiplexOn)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	_, err := ln.AcceptContext(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "nothing happens while idle")
	peer := dialPeer(t, "127.0.0.1", ln.Addr())
	c := accept(t, ln)
	bothWays(t, c, peer)
}

// BenchmarkServeGost gives requests per second of an unchanged http.Serve,
// each request on a new connection, served directly on loopback, through
// GOST's MBIND, and through GOST's standard BIND (one connection at a time:
// the listener re-arms after each), in one run:
//
//	go test -run '^$' -bench ServeGost -count 6 ./integration/
func BenchmarkServeGost(b *testing.B) {
	gost := startGost(b, GostConfig{})
	d := newDialer(b, gost.Addr, nil, nil)
	listeners := []struct {
		name   string
		listen func(b *testing.B) net.Listener
	}{
		{"direct", func(b *testing.B) net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(b, err)
			return ln
		}},
		{"gost-mbind", func(b *testing.B) net.Listener { return muxListen(b, d, socksbind.MultiplexOn) }},
		{"gost-bind", func(b *testing.B) net.Listener {
			return listen(b, d, socksbind.ListenConfig{Dialer: d}, fmt.Sprintf(":%d", freePort(b)))
		}},
	}
	for _, l := range listeners {
		b.Run(l.name, func(b *testing.B) {
			ln := l.listen(b)
			serveHTTP(b, ln)
			tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: testTimeout}
			url := "http://" + ln.Addr().String() + "/"
			get := func() error {
				for {
					resp, err := client.Get(url)
					if err != nil {
						if l.name == "gost-bind" && errors.Is(err, syscall.ECONNREFUSED) {
							continue // the re-arm window: one at a time
						}
						return err
					}
					io.Copy(io.Discard, resp.Body)
					return resp.Body.Close()
				}
			}
			start := time.Now()
			for b.Loop() {
				if err := get(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}
