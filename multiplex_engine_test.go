package socksbind_test

import (
	"context"
	"io"
	"net"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/xtaci/smux"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/internal/wire"
	"github.com/socksbind/socksbind/socks5test"
)

// scriptedMux is a proxy that answers MBIND and starts GOST's side of the
// session on each control connection, with the configuration config gives
// for the nth (from 0), and hands the sessions to the test, which opens the
// streams it wants.
type scriptedMux struct {
	ln       net.Listener
	sessions chan *smux.Session
	wg       sync.WaitGroup
}

func newScriptedMux(t *testing.T, config func(n int) *smux.Config) *scriptedMux {
	t.Helper()
	leakcheck.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &scriptedMux{ln: ln, sessions: make(chan *smux.Session, 16)}
	p.wg.Go(func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// greeting 05 01 00, request 05 F2 00 01 a.b.c.d pp
			_, err = io.ReadFull(c, make([]byte, 3))
			if err == nil {
				_, err = c.Write([]byte{5, 0})
			}
			if err == nil {
				_, err = io.ReadFull(c, make([]byte, 10))
			}
			if err == nil {
				_, err = c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0x11, 0x5c}) // port 4444
			}
			cfg := smux.DefaultConfig()
			if config != nil {
				cfg = config(n)
			}
			var sess *smux.Session
			if err == nil {
				sess, err = smux.Client(c, cfg)
			}
			if err != nil {
				c.Close()
				continue
			}
			p.sessions <- sess
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
		close(p.sessions)
		for sess := range p.sessions {
			sess.Close()
		}
	})
	return p
}

// session takes the next session.
func (p *scriptedMux) session(t *testing.T) *smux.Session {
	t.Helper()
	select {
	case sess := <-p.sessions:
		t.Cleanup(func() { sess.Close() })
		return sess
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not send MBIND")
		return nil
	}
}

func (p *scriptedMux) dialer(t *testing.T) *socksbind.Dialer {
	d, err := socksbind.SOCKS5("tcp", p.ln.Addr().String(), nil, nil)
	require.NoError(t, err)
	return d
}

// openPeer opens a stream as GOST does for a peer from 127.0.0.1:port.
func openPeer(t *testing.T, sess *smux.Session, port uint16, header bool) *smux.Stream {
	t.Helper()
	st, err := sess.OpenStream()
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	if header {
		_, err = st.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, byte(port >> 8), byte(port)})
		require.NoError(t, err)
	}
	return st
}

func listenScripted(t *testing.T, p *scriptedMux, lc socksbind.ListenConfig) *socksbind.Listener {
	t.Helper()
	if lc.Dialer == nil {
		lc.Dialer = p.dialer(t)
	}
	lc.Multiplex = socksbind.MultiplexOn
	ln, err := lc.Listen(context.Background(), "tcp", ":0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// The listener speaks the smux version the proxy opens the session with.
func TestMultiplexVersions(t *testing.T) {
	for _, v := range []int{1, 2} {
		t.Run(map[int]string{1: "v1", 2: "v2"}[v], func(t *testing.T) {
			srv := muxProxy(t, func(s *socks5test.Server) { s.MultiplexVersion = v })
			ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
			for range 3 {
				peer := dialPeer(t, ln.Addr())
				c := accept(t, ln)
				_, err := peer.Write([]byte("ping"))
				require.NoError(t, err)
				buf := make([]byte, 4)
				_, err = io.ReadFull(c, buf)
				require.NoError(t, err)
				assert.Equal(t, "ping", string(buf))
				assert.Equal(t, peer.LocalAddr().String(), c.RemoteAddr().String())
			}
		})
	}
}

// With smux version 2 a stream the application does not read holds up no
// other; with version 1 it fills the session's one buffer.
func TestMultiplexSlowReader(t *testing.T) {
	for _, v := range []int{1, 2} {
		t.Run(map[int]string{1: "v1", 2: "v2"}[v], func(t *testing.T) {
			srv := muxProxy(t, func(s *socks5test.Server) { s.MultiplexVersion = v })
			ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
			slow := dialPeer(t, ln.Addr())
			accept(t, ln) // never read
			upload := make(chan struct{})
			go func() {
				defer close(upload)
				slow.SetWriteDeadline(time.Now().Add(20 * time.Second))
				slow.Write(make([]byte, 8<<20)) // twice the session's buffer
			}()
			t.Cleanup(func() { slow.Close(); <-upload })
			// Let the upload fill what it can: the proxy's relay
			// blocks once the window or the session buffer is full.
			require.Eventually(t, func() bool { return strings.Contains(goroutines(), "smux.(*stream).Write") || v == 1 }, 10*time.Second, time.Millisecond)

			other := dialPeer(t, ln.Addr())
			_, err := other.Write([]byte("ping"))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c, err := ln.AcceptContext(ctx)
			if v == 1 {
				// The header of the new stream waits behind
				// 4 MiB nobody reads (as with GOST).
				if err == nil {
					c.Close()
				}
				t.Logf("version 1: Accept of another peer during an unread upload: %v", err)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 4)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err, "version 2: another stream's bytes during an unread upload")
			assert.Equal(t, "ping", string(buf))
		})
	}
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// A stream whose header never comes holds up no other peer: it is turned
// away at the handshake timeout and reported, and the listener goes on.
func TestMultiplexStreamWithoutHeader(t *testing.T) {
	p := newScriptedMux(t, nil)
	var log retryLog
	d := p.dialer(t)
	d.HandshakeTimeout = 300 * time.Millisecond
	ln := listenScripted(t, p, socksbind.ListenConfig{Dialer: d, Retrying: log.hook})
	sess := p.session(t)

	openPeer(t, sess, 1000, false) // no header
	openPeer(t, sess, 1001, true)
	c := accept(t, ln)
	assert.Equal(t, "127.0.0.1:1001", c.RemoteAddr().String(), "the peer with a header came first")

	require.Eventually(t, func() bool { return log.len() == 1 }, 10*time.Second, time.Millisecond)
	errs, waits := log.snapshot()
	assert.ErrorIs(t, errs[0], os.ErrDeadlineExceeded)
	assert.Equal(t, wire.StageMBINDStreamReply, wire.StageOf(errs[0]))
	assert.Zero(t, waits[0])

	garbage := openPeer(t, sess, 0, false)
	_, err := garbage.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return log.len() == 2 }, 10*time.Second, time.Millisecond)
	errs, _ = log.snapshot()
	assert.ErrorIs(t, errs[1], socksbind.ErrProtocolViolation)

	openPeer(t, sess, 1002, true)
	c = accept(t, ln)
	assert.Equal(t, "127.0.0.1:1002", c.RemoteAddr().String(), "the listener goes on")
}

// Peers beyond the backlog are closed at once and reported; the listener
// goes on, and the held ones are all there for Accept.
func TestMultiplexBacklogFull(t *testing.T) {
	srv := muxProxy(t, nil)
	var log retryLog
	ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn, Backlog: 3, Retrying: log.hook}, ":0")
	var peers []net.Conn
	for range 10 {
		peers = append(peers, dialPeer(t, ln.Addr()))
	}
	closed := 0
	for _, p := range peers {
		p.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := p.Read(make([]byte, 1))
		if !testkit.IsTimeout(err) {
			closed++
		}
	}
	assert.Equal(t, 7, closed, "peers closed at once")
	refused := 0
	errs, _ := log.snapshot()
	for _, err := range errs {
		assert.Contains(t, err.Error(), "backlog of 3")
		m := regexp.MustCompile(`(\d+) peers closed at once`).FindStringSubmatch(err.Error())
		require.NotNil(t, m, "%v", err)
		n, _ := strconv.Atoi(m[1])
		refused += n
	}
	assert.Equal(t, 7, refused, "peers reported refused: %v", errs)
	for range 3 {
		accept(t, ln)
	}
	peer := dialPeer(t, ln.Addr())
	c := accept(t, ln)
	assert.Equal(t, peer.LocalAddr().String(), c.RemoteAddr().String())
}

// A lost session is asked for again at the same address: Accept blocks
// meanwhile, Retrying hears why, Armed hears when it is back, and the
// streams of the lost session fail saying why.
func TestMultiplexSessionRestored(t *testing.T) {
	leakcheck.Check(t)
	srv := socks5test.NewUnstartedServer()
	srv.Multiplex = true
	srv.Start()
	t.Cleanup(srv.Close)
	proxyAddr := srv.Addr()
	var log retryLog
	armed := make(chan net.Addr, 1)
	d := newDialer(t, srv)
	ln := listen(t, srv, socksbind.ListenConfig{Dialer: d, Multiplex: socksbind.MultiplexOn, Retrying: log.hook,
		Armed: func(a net.Addr) {
			select {
			case armed <- a:
			default:
			}
		}}, ":0")
	addr := ln.Addr()
	dialPeer(t, addr)
	old := accept(t, ln)
	next := testkit.AcceptAsync(ln)

	srv.Close()
	require.Eventually(t, func() bool { return log.len() >= 1 }, 10*time.Second, time.Millisecond)
	old.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := old.Read(make([]byte, 1))
	require.Error(t, err)
	assertSessionLost(t, err)

	restarted := socks5test.NewUnstartedServer()
	restarted.Multiplex = true
	require.Eventually(t, func() bool {
		restarted.Listener, err = net.Listen("tcp", proxyAddr)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the proxy's port: %v", err)
	restarted.Start()
	t.Cleanup(restarted.Close)
	select {
	case a := <-armed:
		assert.Equal(t, addr.String(), a.String(), "the same address")
	case <-time.After(10 * time.Second):
		t.Fatal("the session was not asked for again")
	}
	assert.Equal(t, addr.String(), ln.Addr().String())
	acceptedPeer(t, next, dialPeer(t, addr))
	errs, _ := log.snapshot()
	assertSessionLost(t, errs[0])
}

// A proxy that goes silent (no keep-alive) is noticed by the listener's
// own watchdog: the error is a timeout that says how long, and the
// session is asked for again.
func TestMultiplexSilentProxy(t *testing.T) {
	socksbind.SetMuxSilence(t, 300*time.Millisecond)
	p := newScriptedMux(t, func(n int) *smux.Config {
		cfg := smux.DefaultConfig()
		if n == 0 {
			cfg.KeepAliveDisabled = true
		} else {
			cfg.KeepAliveInterval = 50 * time.Millisecond
		}
		return cfg
	})
	var log retryLog
	armed := make(chan net.Addr, 1)
	ln := listenScripted(t, p, socksbind.ListenConfig{Retrying: log.hook, Armed: func(a net.Addr) {
		select {
		case armed <- a:
		default:
		}
	}})
	sess := p.session(t)
	openPeer(t, sess, 1000, true) // the first frame
	c := accept(t, ln)

	require.Eventually(t, func() bool { return log.len() >= 1 }, 10*time.Second, time.Millisecond)
	errs, _ := log.snapshot()
	var ne net.Error
	require.ErrorAs(t, errs[0], &ne)
	assert.True(t, ne.Timeout(), "%v", errs[0])
	assert.Contains(t, errs[0].Error(), "proxy silent for")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout(), "a stream of the silent session: %v", err)
	assert.Contains(t, err.Error(), "proxy silent for")

	sess = p.session(t)
	select {
	case <-armed:
	case <-time.After(10 * time.Second):
		t.Fatal("the session was not asked for again")
	}
	openPeer(t, sess, 1001, true)
	c = accept(t, ln)
	assert.Equal(t, "127.0.0.1:1001", c.RemoteAddr().String())
}

// Options that do not fit the mode are refused by Listen.
func TestListenOptionsRefused(t *testing.T) {
	srv := muxProxy(t, nil)
	for _, lc := range []socksbind.ListenConfig{
		{Once: true, Multiplex: socksbind.MultiplexOn},
		{Backlog: 10},
		{Backlog: 10, Once: true, Multiplex: socksbind.MultiplexAuto},
		{Backlog: -1, Multiplex: socksbind.MultiplexOn},
		{Multiplex: 7},
	} {
		lc.Dialer = newDialer(t, srv)
		_, err := lc.Listen(context.Background(), "tcp", ":0")
		assert.Error(t, err, "%+v", lc)
	}
	assert.Empty(t, srv.Requests(), "a refused option sent a request")

	// Once with MultiplexAuto takes standard BIND and carries one
	// connection.
	ln := listen(t, srv, socksbind.ListenConfig{Once: true, Multiplex: socksbind.MultiplexAuto}, ":0")
	assert.False(t, ln.Multiplexed())
	dialPeer(t, ln.Addr())
	accept(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := ln.AcceptContext(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a second connection with Once")
}

// Close from another goroutine while a hook runs waits for the hook and
// the listener's goroutine; Close from the hook itself does not deadlock.
func TestCloseWaitsForHook(t *testing.T) {
	srv := newProxy(t, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	var hookDone sync.WaitGroup
	hookDone.Add(1)
	var once sync.Once
	ln := listen(t, srv, socksbind.ListenConfig{Armed: func(net.Addr) {
		once.Do(func() {
			defer hookDone.Done()
			close(entered)
			<-release
		})
	}}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln)
	<-entered
	closed := make(chan struct{})
	go func() { ln.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while the hook was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the hook")
	}
	hookDone.Wait()

	var ln2 *socksbind.Listener
	ready := make(chan struct{})
	done := make(chan struct{})
	ln2 = listen(t, srv, socksbind.ListenConfig{Armed: func(net.Addr) {
		<-ready
		ln2.Close()
		close(done)
	}}, ":0")
	close(ready)
	dialPeer(t, ln2.Addr())
	if c, err := ln2.Accept(); err == nil { // or the hook's Close came first
		c.Close()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close from the hook deadlocked")
	}
}

// SetDeadline racing Close never hangs.
func TestSetDeadlineCloseRace(t *testing.T) {
	srv := newProxy(t, nil)
	for range 50 {
		ln := listen(t, srv, socksbind.ListenConfig{}, ":0")
		ln.SetDeadline(time.Now().Add(time.Hour))
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 100 {
				ln.SetDeadline(time.Now().Add(time.Hour))
			}
		}()
		ln.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("SetDeadline hung after Close")
		}
	}
}

// A proxy that opens 100,000 streams as fast as it can, without headers
// or with headers nobody accepts: the listener turns them away, keeps its
// heap bounded, leaks nothing, and serves afterwards.
func TestFaultMBINDFlood(t *testing.T) {
	const streams = 100_000
	for _, header := range []bool{false, true} {
		t.Run(map[bool]string{false: "no header", true: "never accepted"}[header], func(t *testing.T) {
			if testing.Short() {
				t.Skip("100,000 streams")
			}
			p := newScriptedMux(t, nil)
			var log retryLog
			ln := listenScripted(t, p, socksbind.ListenConfig{Backlog: 1000, Retrying: log.hook})
			sess := p.session(t)
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range streams {
				st, err := sess.OpenStream()
				require.NoError(t, err)
				if header {
					_, err = st.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, byte(i >> 8), byte(i)})
					require.NoError(t, err)
				}
				st.Close()
			}
			// Every stream is either held or turned away and reported.
			turnedAway := func() int {
				errs, _ := log.snapshot()
				n := 0
				for _, err := range errs {
					if m := regexp.MustCompile(`(\d+) peers (closed at once|turned away)`).FindStringSubmatch(err.Error()); m != nil {
						k, _ := strconv.Atoi(m[1])
						n += k
					} else {
						n++
					}
				}
				return n
			}
			held := 0
			if header {
				held = 1000
			}
			require.Eventually(t, func() bool { return turnedAway() >= streams-held }, 60*time.Second, 10*time.Millisecond,
				"turned away %d", turnedAway())
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("%d streams: %d reported turned away, heap grew %d KiB", streams, turnedAway(), grown>>10)
			assert.Less(t, grown, int64(64<<20), "heap growth")
			assert.Equal(t, streams-held, turnedAway())
			if header {
				for range held {
					c := accept(t, ln)
					c.Close()
				}
			}
			openPeer(t, sess, 1, true)
			c := accept(t, ln)
			assert.Equal(t, "127.0.0.1:1", c.RemoteAddr().String(), "the listener after the flood")
		})
	}
}

// Close from a hook while another goroutine's Close waits for that hook:
// both return.
func TestHookCloseWhileClosing(t *testing.T) {
	srv := newProxy(t, nil)
	entered, closing := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var ln *socksbind.Listener
	hookDone := make(chan struct{})
	ln = listen(t, srv, socksbind.ListenConfig{Armed: func(net.Addr) {
		once.Do(func() {
			defer close(hookDone)
			close(entered)
			<-closing
			waitClosing(t)
			ln.Close()
		})
	}}, ":0")
	dialPeer(t, ln.Addr())
	if c, err := ln.Accept(); err == nil {
		c.Close()
	}
	<-entered
	closed := make(chan struct{})
	go func() {
		close(closing)
		ln.Close()
		close(closed)
	}()
	for _, ch := range []chan struct{}{hookDone, closed} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("Close from a hook and Close from another goroutine deadlocked")
		}
	}
}

// waitClosing waits until a goroutine is inside Listener.Close.
func waitClosing(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(goroutines(), "socksbind.(*Listener).Close(") }, 5*time.Second, time.Millisecond)
}

// A stream of a session the proxy ends cleanly (a FIN on the control
// connection) fails: it does not read as a complete stream.
func TestMultiplexStreamOfLostSession(t *testing.T) {
	p := newScriptedMux(t, nil)
	ln := listenScripted(t, p, socksbind.ListenConfig{})
	sess := p.session(t)
	st := openPeer(t, sess, 1000, true)
	_, err := st.Write([]byte("partial upload"))
	require.NoError(t, err)
	c := accept(t, ln)
	buf := make([]byte, len("partial upload"))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	openPeer(t, sess, 1001, true) // held in the backlog when the session ends
	time.Sleep(100 * time.Millisecond)
	sess.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(c)
	require.Error(t, err, "the stream of a lost session read as complete")
	assertSessionLost(t, err)
	assert.False(t, testkit.IsTimeout(err), "%v", err)

	sess = p.session(t) // asked for again
	openPeer(t, sess, 1002, true)
	c = accept(t, ln)
	assert.Equal(t, "127.0.0.1:1002", c.RemoteAddr().String(), "a stream of the lost session was handed to Accept")
}

// A stream's deadline gives an error that matches os.ErrDeadlineExceeded,
// as a TCP connection's does.
func TestMultiplexStreamDeadlineError(t *testing.T) {
	srv := muxProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
	dialPeer(t, ln.Addr())
	c := accept(t, ln)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Millisecond)))
	_, err := c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.True(t, testkit.IsTimeout(err))
}

// A session that stopped reading because the application does not read
// (smux's buffer is full) is not a silent proxy.
func TestMultiplexFullBufferIsNotSilence(t *testing.T) {
	socksbind.SetMuxSilence(t, 300*time.Millisecond)
	socksbind.SetMuxBuffers(t, 64<<10, 64<<10)
	p := newScriptedMux(t, func(int) *smux.Config {
		cfg := smux.DefaultConfig()
		cfg.KeepAliveInterval = 50 * time.Millisecond
		return cfg
	})
	var log retryLog
	ln := listenScripted(t, p, socksbind.ListenConfig{Retrying: log.hook})
	sess := p.session(t)
	st := openPeer(t, sess, 1000, true)
	accept(t, ln) // never read
	go st.Write(make([]byte, 1<<20))
	time.Sleep(time.Second) // three times the silence allowed
	errs, _ := log.snapshot()
	assert.Empty(t, errs, "a full buffer was taken for a silent proxy")
}

// A session that came back and worked starts RetryLimit afresh.
func TestMultiplexRetryLimitAfterRecovery(t *testing.T) {
	p := newScriptedMux(t, nil)
	var log retryLog
	ln := listenScripted(t, p, socksbind.ListenConfig{RetryLimit: 500 * time.Millisecond, Retrying: log.hook})
	sess := p.session(t)
	sess.Close()
	sess = p.session(t)
	openPeer(t, sess, 1000, true)
	accept(t, ln)
	time.Sleep(700 * time.Millisecond) // past RetryLimit since the first loss
	sess.Close()
	sess = p.session(t)
	openPeer(t, sess, 1001, true)
	c := accept(t, ln)
	assert.Equal(t, "127.0.0.1:1001", c.RemoteAddr().String())
	assert.Equal(t, 2, log.len(), "two losses told")
}

// Streams that open and never send their header: a bounded number wait
// for it, the rest are closed at once and reported.
func TestFaultMBINDHeadersNeverCome(t *testing.T) {
	p := newScriptedMux(t, nil)
	var log retryLog
	ln := listenScripted(t, p, socksbind.ListenConfig{Backlog: 100, Retrying: log.hook})
	sess := p.session(t)
	const streams = 3000
	for range streams {
		st, err := sess.OpenStream()
		require.NoError(t, err)
		defer st.Close()
	}
	// crowded adds up the peers reported closed at once, and tells how
	// many streams were waiting for their header when they were.
	report := regexp.MustCompile(`(\d+) peers closed at once: (\d+) streams are already waiting`)
	crowded := func() (closed, waiting int) {
		errs, _ := log.snapshot()
		for _, err := range errs {
			if m := report.FindStringSubmatch(err.Error()); m != nil {
				k, _ := strconv.Atoi(m[1])
				closed += k
				waiting, _ = strconv.Atoi(m[2])
			}
		}
		return closed, waiting
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		closed, waiting := crowded()
		assert.Positive(c, waiting, "streams waiting for a header")
		assert.Equal(c, streams-waiting, closed, "streams closed at once")
	}, 30*time.Second, 10*time.Millisecond)
	closed, waiting := crowded()
	assert.LessOrEqual(t, strings.Count(goroutines(), "(*muxEngine).greet("), waiting)
	t.Logf("%d streams without a header: %d wait for it, %d closed at once", streams, waiting, closed)
	openPeer(t, sess, 1, true)
	_ = ln
}

// assertSessionLost checks that err is the loss of an MBIND session.
func assertSessionLost(t *testing.T, err error) {
	t.Helper()
	var lost *socksbind.SessionLost
	assert.ErrorAs(t, err, &lost, "%v", err)
}
