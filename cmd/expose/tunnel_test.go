package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
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
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

// The tests run the tunnel against socks5test, whose BIND behaves as Dante's
// and whose MBIND as GOST's. The integration tests run the program against
// Dante and GOST.

// testTimeout is a safety net against a hung test, never a wait.
const testTimeout = 10 * time.Second

// pollInterval is how often a poll that dials looks again.
const pollInterval = 5 * time.Millisecond

// The lines of the log that the tests read, as slog's text format writes
// them without the time.
var (
	reachableLine = regexp.MustCompile(`^level=INFO msg=reachable listen=\S+ to=(\S+) addr=(\S+) how="([^"]*)"`)
	nowLine       = regexp.MustCompile(`^level=INFO msg="now reachable" listen=\S+ to=\S+ addr=(\S+)(?: retries=(\d+) after=\S+)?$`)
	armedLine     = regexp.MustCompile(`^level=INFO msg="(?:now reachable|reachable again)" listen=\S+ to=\S+ addr=(\S+)(?: retries=(\d+) after=\S+)?$`)
	connLine      = regexp.MustCompile(`^level=(?:INFO|WARN) msg=connection listen=\S+ to=\S+ peer=(\S+) up=(\d+) down=(\d+) dur=\S+(?: err=("(?:[^"\\]|\\.)*"))?$`)
)

// testLogger returns a logger of slog's text format without the time, on w.
func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// logLines is the tunnel's log as the test reads it: line by line, each
// taken once, in any order.
type logLines struct{ *testkit.Lines }

func newLogLines() logLines { return logLines{testkit.NewLines()} }

// next takes the first line not taken yet that matches re, waiting for it,
// and returns its submatches.
func (l logLines) next(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	m := l.Take(re, testTimeout, nil)
	if m == nil {
		require.FailNow(t, "no such line in the log", "%v; the log:\n%s", re, l)
	}
	return m
}

// nextConn takes the next connection line, and returns the bytes up and
// down and the error text.
func (l logLines) nextConn(t *testing.T) (up, down int, errText string) {
	t.Helper()
	m := l.next(t, connLine)
	up, _ = strconv.Atoi(m[2])
	down, _ = strconv.Atoi(m[3])
	if m[4] != "" {
		var err error
		errText, err = strconv.Unquote(m[4])
		require.NoError(t, err)
	}
	return up, down, errText
}

// lineOf returns the whole line that begins with prefix.
func (l logLines) lineOf(t *testing.T, prefix string) string {
	t.Helper()
	for _, line := range l.All() {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	require.FailNow(t, "no such line", prefix)
	return ""
}

// running is a tunnel running for a test.
type running struct {
	log    logLines
	addr   string // where it said the service is reachable first
	how    string // how it listens, as that line says
	stats  *tunnelStats
	cancel context.CancelFunc
	done   chan error
}

// startTunnel runs the tunnel that args configure, without ALL_PROXY,
// and waits until it says where the service is reachable. The test's
// cleanup stops it.
func startTunnel(t *testing.T, args ...string) *running {
	t.Helper()
	r := launch(t, args...)
	m := r.log.next(t, reachableLine)
	r.addr, r.how = m[2], m[3]
	return r
}

// launch runs the tunnel that args configure, without waiting.
func launch(t *testing.T, args ...string) *running {
	t.Helper()
	cfg, err := parseArgs(args, io.Discard)
	require.NoError(t, err)
	require.Len(t, cfg.tunnels, 1)
	r := &running{log: newLogLines(), done: make(chan error, 1)}
	tun := newTunnel(cfg, cfg.tunnels[0], testLogger(r.log))
	r.stats = tun.stats
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- tun.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(testTimeout):
			t.Errorf("the tunnel did not stop; the log:\n%s", r.log.String())
		}
		if t.Failed() {
			t.Logf("the tunnel's log:\n%s", r.log.String())
		}
	})
	return r
}

// current returns where the tunnel said last that the service is
// reachable.
func (r *running) current() string {
	if m := r.log.Last(armedLine); m != nil {
		return m[1]
	}
	return r.addr
}

// dialCurrent connects as a peer that follows the log: to where the tunnel
// said last that the service is reachable, trying again while the proxy
// refuses (the listener has not re-armed yet, or has moved and not said so
// yet).
func (r *running) dialCurrent(t *testing.T) *net.TCPConn {
	t.Helper()
	var (
		addr string
		c    net.Conn
	)
	dialed := testkit.PollEvery(pollInterval, testTimeout, func() bool {
		addr = r.current()
		var err error
		if c, err = net.DialTimeout("tcp", addr, testTimeout); err == nil {
			return true
		}
		require.ErrorIs(t, err, syscall.ECONNREFUSED)
		return false
	})
	require.True(t, dialed, "%s refused for %v", addr, testTimeout)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	return c.(*net.TCPConn)
}

// wait returns what run returned.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(testTimeout):
		require.FailNow(t, "the tunnel did not return", "the log:\n%s", r.log.String())
		return nil
	}
}

// refusedAddr returns an address of 127.0.0.1 where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// dialPeer connects to addr as a peer on the proxy's side does.
func dialPeer(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	return c.(*net.TCPConn)
}

// roundTrip sends msg to addr as a peer, half-closes, and returns what came
// back until EOF. It may run on any goroutine.
func roundTrip(addr string, msg []byte) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(testTimeout)); err != nil {
		return nil, err
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; err == nil {
		err = werr
	}
	return got, err
}

// payload returns n bytes that differ from those of other lengths.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + n)
	}
	return b
}

// pollNoBinds waits until the proxy has no BIND socket open.
func pollNoBinds(t *testing.T, srv *socks5test.Server) {
	t.Helper()
	if !testkit.Poll(testTimeout, func() bool { return srv.ActiveBinds() == 0 }) {
		t.Fatalf("the proxy still listens: %d BIND sockets", srv.ActiveBinds())
	}
}

func TestMultiplexed(t *testing.T) {
	leakcheck.Check(t)
	srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Multiplex = true })
	echo := testkit.Echo(t, "tcp").Addr().String()
	r := startTunnel(t, "-proxy", srv.URL, "-to", echo)
	assert.Equal(t, "multiplexed BIND: concurrent connections", r.how)

	// Every connection is open at once: each waits until all have been
	// echoed their first byte.
	const n = 12
	var first sync.WaitGroup
	first.Add(n)
	errs := make(chan error, n)
	sizes := make(map[[2]int]int)
	for i := range n {
		size := 1 + i*20000
		sizes[[2]int{size, size}]++
		go func() {
			c, err := net.DialTimeout("tcp", r.addr, testTimeout)
			if err != nil {
				first.Done()
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			msg := payload(size)
			b := make([]byte, 1)
			if _, err = c.Write(msg[:1]); err == nil {
				_, err = io.ReadFull(c, b)
			}
			first.Done()
			if err != nil {
				errs <- err
				return
			}
			first.Wait()
			if _, err := c.Write(msg[1:]); err != nil {
				errs <- err
				return
			}
			_ = c.(*net.TCPConn).CloseWrite()
			rest, err := io.ReadAll(c)
			if err == nil && !bytes.Equal(msg, append(b, rest...)) {
				err = fmt.Errorf("%d bytes: echo differs (%d bytes back)", size, 1+len(rest))
			}
			errs <- err
		}()
	}
	for range n {
		assert.NoError(t, <-errs)
	}
	got := make(map[[2]int]int)
	for range n {
		up, down, errText := r.log.nextConn(t)
		assert.Empty(t, errText)
		got[[2]int{up, down}]++
	}
	assert.Equal(t, sizes, got, "bytes up and down of each connection")
	assert.Zero(t, r.log.Count(nowLine), "one address throughout")

	r.cancel()
	require.NoError(t, r.wait(t))
	r.log.next(t, regexp.MustCompile(`^level=INFO msg="stopping: new connections are turned away"`))
	pollNoBinds(t, srv)
}

func TestStandardFollow(t *testing.T) {
	leakcheck.Check(t)
	srv := testkit.Proxy(t, nil) // BIND as Dante's: another port while the last one is held
	echo := testkit.Echo(t, "tcp").Addr().String()
	r := startTunnel(t, "-proxy", srv.URL, "-to", echo, "-mux", "off")
	assert.Equal(t, "standard BIND: one connection at a time, and the port may change after each", r.how)

	t.Run("Held", func(t *testing.T) {
		// While a connection holds the port, the proxy binds another for
		// the next, and the tunnel says where.
		addr := r.addr
		var open []*net.TCPConn
		for i := range 3 {
			c := dialPeer(t, addr)
			msg := fmt.Sprintf("held %d", i)
			assert.Equal(t, msg, testkit.Exchange(t, c, msg))
			open = append(open, c)
			next := r.log.next(t, nowLine)[1]
			assert.NotEqual(t, addr, next)
			addr = next
		}
		for _, c := range open {
			require.NoError(t, c.CloseWrite())
			rest, err := io.ReadAll(c)
			require.NoError(t, err)
			assert.Empty(t, rest)
			up, down, errText := r.log.nextConn(t)
			assert.Equal(t, []int{6, 6}, []int{up, down})
			assert.Empty(t, errText)
		}
	})

	t.Run("OneAfterAnother", func(t *testing.T) {
		// Whether the port changes depends on whether the last
		// connection has let go of it when the listener asks for it
		// again: a peer goes where the log said last.
		for i := range 5 {
			msg := payload(1000 * (i + 1))
			c := r.dialCurrent(t)
			_, err := c.Write(msg)
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			got, err := io.ReadAll(c)
			require.NoError(t, err)
			assert.Equal(t, msg, got)
			up, down, errText := r.log.nextConn(t)
			assert.Equal(t, []int{len(msg), len(msg)}, []int{up, down})
			assert.Empty(t, errText)
		}
	})
	assert.Zero(t, r.log.Count(regexp.MustCompile(`trouble`)))

	r.cancel()
	require.NoError(t, r.wait(t))
	pollNoBinds(t, srv)
}

func TestStandardFixedPort(t *testing.T) {
	leakcheck.Check(t)
	// A server that keeps its port from one BIND to the next.
	srv := testkit.Proxy(t, func(s *socks5test.Server) { s.BindMode = socks5test.BindReuse })
	echo := testkit.Echo(t, "tcp").Addr().String()
	port := strings.TrimPrefix(refusedAddr(t), "127.0.0.1")
	r := startTunnel(t, "-proxy", srv.URL, "-to", echo, "-listen", port)
	assert.Equal(t, "the proxy has no multiplexed BIND; standard BIND: one connection at a time", r.how)
	assert.Equal(t, "127.0.0.1"+port, r.addr)

	for i := range 3 {
		msg := payload(100 + i)
		got, err := roundTrip(r.addr, msg)
		require.NoError(t, err)
		assert.Equal(t, msg, got)
		up, down, _ := r.log.nextConn(t)
		assert.Equal(t, []int{len(msg), len(msg)}, []int{up, down})
	}
	r.cancel()
	require.NoError(t, r.wait(t))
	assert.Zero(t, r.log.Count(nowLine), "the address never changed")
}

func TestGracefulShutdown(t *testing.T) {
	leakcheck.Check(t)
	echo := testkit.Echo(t, "tcp").Addr().String()
	stopped := regexp.MustCompile(`^level=INFO msg="stopping: the proxy no longer listens"`)
	// serving starts a proxy that configure sets up and a tunnel to echo
	// through it with the given grace, and returns them with a peer that
	// has exchanged msg.
	serving := func(t *testing.T, configure func(*socks5test.Server), grace, msg string) (*socks5test.Server, *running, *net.TCPConn) {
		t.Helper()
		srv := testkit.Proxy(t, configure)
		r := startTunnel(t, "-proxy", srv.URL, "-to", echo, "-grace", grace)
		c := dialPeer(t, r.addr)
		assert.Equal(t, msg, testkit.Exchange(t, c, msg))
		return srv, r, c
	}

	t.Run("Standard", func(t *testing.T) {
		srv, r, c := serving(t, nil, "10s", "before")

		r.cancel()
		r.log.next(t, stopped)
		r.log.next(t, regexp.MustCompile(`^level=INFO msg="waiting for open connections" .* open=1 grace=10s$`))
		// The listener is closed: the proxy listens no more, for the
		// next BIND it had armed included.
		pollNoBinds(t, srv)

		// The open connection goes on until the peer ends it.
		assert.Equal(t, "after", testkit.Exchange(t, c, "after"))
		select {
		case err := <-r.done:
			require.Failf(t, "the tunnel returned with a connection open", "%v", err)
		default:
		}
		require.NoError(t, c.CloseWrite())
		_, err := io.ReadAll(c)
		require.NoError(t, err)
		require.NoError(t, r.wait(t))
		up, down, errText := r.log.nextConn(t)
		assert.Equal(t, []int{11, 11}, []int{up, down})
		assert.Empty(t, errText)
	})

	t.Run("GraceOver", func(t *testing.T) {
		_, r, c := serving(t, nil, "50ms", "open")

		r.cancel()
		require.NoError(t, r.wait(t))
		r.log.next(t, regexp.MustCompile(`^level=WARN msg="closed connections still open after the grace period" .* closed=1 grace=50ms$`))
		_, _, errText := r.log.nextConn(t)
		assert.Equal(t, "closed after the grace period of 50ms", errText)
		_, err := io.ReadAll(c)
		assert.NoError(t, err, "the peer reads EOF")
	})

	t.Run("Idle", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		r := startTunnel(t, "-proxy", srv.URL, "-to", echo, "-grace", "1h")
		r.cancel()
		require.NoError(t, r.wait(t), "nothing to wait for")
		r.log.next(t, stopped)
		assert.Zero(t, r.log.Count(regexp.MustCompile(`waiting`)))
		pollNoBinds(t, srv)
	})

	t.Run("Multiplexed", func(t *testing.T) {
		srv, r, c := serving(t, func(s *socks5test.Server) { s.Multiplex = true }, "10s", "before")

		r.cancel()
		r.log.next(t, regexp.MustCompile(`^level=INFO msg="stopping: new connections are turned away"`))
		r.log.next(t, regexp.MustCompile(`^level=INFO msg="waiting for open connections" .* open=1 grace=10s$`))
		// Closing the listener would cut the open connection: a new
		// peer reaches the proxy and is closed.
		late := dialPeer(t, r.addr)
		_, err := io.ReadAll(late)
		assert.NoError(t, err, "a late peer reads EOF")
		_, _, errText := r.log.nextConn(t)
		assert.Equal(t, "turned away: stopping", errText)

		assert.Equal(t, "after", testkit.Exchange(t, c, "after"))
		require.NoError(t, c.CloseWrite())
		_, err = io.ReadAll(c)
		require.NoError(t, err)
		require.NoError(t, r.wait(t))
		up, down, errText := r.log.nextConn(t)
		assert.Equal(t, []int{11, 11}, []int{up, down})
		assert.Empty(t, errText)
		pollNoBinds(t, srv)
	})
}

func TestServiceRefuses(t *testing.T) {
	leakcheck.Check(t)
	srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Multiplex = true })
	service := refusedAddr(t)
	r := startTunnel(t, "-proxy", srv.URL, "-to", service)
	c := dialPeer(t, r.addr)
	got, err := io.ReadAll(c)
	assert.NoError(t, err, "the peer reads EOF")
	assert.Empty(t, got)
	up, down, errText := r.log.nextConn(t)
	assert.Equal(t, []int{0, 0}, []int{up, down})
	assert.Contains(t, errText, "service unreachable: dial tcp "+service)
	assert.Contains(t, errText, "connection refused")
}

// TestTroubleLogged runs a tunnel whose re-arms fail for a while: the
// listener retries some ten times, and one line says so.
func TestTroubleLogged(t *testing.T) {
	leakcheck.Check(t)
	const failures = 6
	var binds atomic.Int32
	srv := testkit.Proxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, _ net.Conn, req *socks5test.Request) bool {
			if stage != socks5test.StageRequest || req.Command != socksbind.CmdBind {
				return false
			}
			n := binds.Add(1)
			return n > 1 && n <= 1+failures // the proxy hangs up
		}
	})
	echo := testkit.Echo(t, "tcp").Addr().String()
	r := startTunnel(t, "-proxy", srv.URL, "-to", echo, "-mux", "off")
	got, err := roundTrip(r.addr, []byte("first"))
	require.NoError(t, err)
	assert.Equal(t, "first", string(got))

	// The port is the same once the first connection has ended, another
	// before.
	m := r.log.next(t, armedLine)
	assert.Equal(t, strconv.Itoa(failures), m[2], "the line says how many retries there were")
	assert.Equal(t, 1, r.log.Count(regexp.MustCompile(`^level=WARN msg="proxy trouble" .* retry_in=5ms err="socks bind `)), "one line for the trouble")
	assert.Equal(t, 1, r.log.Count(regexp.MustCompile(`trouble`)))
	assert.Equal(t, uint64(failures), r.stats.retries.Load(), "retries counted for /metrics")
	assert.Equal(t, uint64(1), r.stats.rearmed.Load(), "armed again after trouble: once")
	assert.True(t, r.stats.ready.Load())

	got, err = roundTrip(m[1], []byte("second"))
	require.NoError(t, err)
	assert.Equal(t, "second", string(got))
}

// TestListenerFails checks that a listener that fails for good ends the
// tunnel with its error.
func TestListenerFails(t *testing.T) {
	leakcheck.Check(t)
	var binds atomic.Int32
	srv := testkit.Proxy(t, func(s *socks5test.Server) {
		s.Rules = []socks5test.Rule{func(req *socks5test.Request) socksbind.Reply {
			if req.Command == socksbind.CmdBind && binds.Add(1) > 1 {
				return socksbind.ReplyNotAllowed
			}
			return socksbind.ReplySucceeded
		}}
	})
	echo := testkit.Echo(t, "tcp").Addr().String()
	r := startTunnel(t, "-proxy", srv.URL, "-to", echo, "-mux", "off")
	got, err := roundTrip(r.addr, []byte("only"))
	require.NoError(t, err)
	assert.Equal(t, "only", string(got))
	err = r.wait(t)
	assert.ErrorIs(t, err, socksbind.ErrNotAllowed)
	up, down, _ := r.log.nextConn(t)
	assert.Equal(t, []int{4, 4}, []int{up, down})
}

func TestListenFails(t *testing.T) {
	leakcheck.Check(t)
	srv := testkit.Proxy(t, nil) // no MBIND
	r := launch(t, "-proxy", srv.URL, "-to", "127.0.0.1:1", "-mux", "on")
	err := r.wait(t)
	assert.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
	assert.Contains(t, explain(err, config{mux: socksbind.MultiplexOn}, tunnelSpec{}), "use -mux auto or -mux off")
	assert.Zero(t, r.log.Count(reachableLine))
}

// TestTroubleLog checks the rate limit of trouble lines with a clock of
// the test's.
func TestTroubleLog(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newTroubleLog(testLogger(&out), 30*time.Second, func() time.Time { return now })
	lines := func() []string {
		s := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		out.Reset()
		if len(s) == 1 && s[0] == "" {
			return nil
		}
		return s
	}
	inUse := func(port int) error {
		return fmt.Errorf("socks bind tcp 127.0.0.1:1080->:8080: %w: asked for port 8080, got %d", socksbind.ErrAddressInUse, port)
	}
	line := func(attrs string, err error) string {
		return "level=WARN msg=\"proxy trouble\" " + attrs + "err=" + strconv.Quote(err.Error())
	}

	// The same trouble, but for numbers, again and again: one line.
	for i := range 100 {
		l.retrying(inUse(40000+i), time.Second)
		now = now.Add(100 * time.Millisecond)
	}
	assert.Equal(t, []string{line("retry_in=1s ", inUse(40000))}, lines())

	// Another kind of trouble gets its own line at once.
	refused := errors.New("socks bind tcp 127.0.0.1:1080->:8080: dial tcp 127.0.0.1:1080: connect: connection refused")
	l.retrying(refused, time.Second)
	l.retrying(refused, time.Second)
	assert.Equal(t, []string{line("retry_in=1s ", refused)}, lines())

	// Once the window is over, the next line says how many were left out.
	now = now.Add(25 * time.Second)
	l.retrying(inUse(41000), time.Second)
	assert.Equal(t, []string{line("retry_in=1s suppressed=99 since=35s ", inUse(41000))}, lines())

	// Armed again: the note counts every retry, shown or not.
	now = now.Add(500 * time.Millisecond)
	retries, after, logged := l.recovered()
	assert.Equal(t, []any{103, 35500 * time.Millisecond, true}, []any{retries, after, logged})
	_, _, logged = l.recovered()
	assert.False(t, logged, "nothing since")

	// Trouble that comes back within the window stays quiet, and so does
	// its end.
	l.retrying(inUse(42000), 5*time.Millisecond)
	assert.Empty(t, lines())
	_, _, logged = l.recovered()
	assert.False(t, logged)

	// A stream the proxy spoiled: nothing to wait for.
	spoiled := errors.New("socks multiplexed bind: MBIND stream reply: unexpected EOF")
	l.retrying(spoiled, 0)
	assert.Equal(t, []string{line("", spoiled)}, lines())
}

func TestRelay(t *testing.T) {
	leakcheck.Check(t)

	t.Run("HalfClose", func(t *testing.T) {
		// The service answers after the peer's EOF, then the peer gets EOF.
		peer, peerFar := tcpPair(t)
		svc, svcFar := tcpPair(t)
		done := relayAsync(peer, svc)
		_, err := peerFar.Write([]byte("request"))
		require.NoError(t, err)
		require.NoError(t, peerFar.CloseWrite())
		req, err := io.ReadAll(svcFar)
		require.NoError(t, err)
		assert.Equal(t, "request", string(req))
		_, err = svcFar.Write([]byte("response after EOF"))
		require.NoError(t, err)
		require.NoError(t, svcFar.Close())
		resp, err := io.ReadAll(peerFar)
		require.NoError(t, err)
		assert.Equal(t, "response after EOF", string(resp))
		res := <-done
		assert.Equal(t, relayResult{up: 7, down: 18}, res)
	})

	t.Run("Reset", func(t *testing.T) {
		// A side that resets ends both directions, with its error.
		peer, peerFar := tcpPair(t)
		svc, svcFar := tcpPair(t)
		done := relayAsync(peer, svc)
		_, err := peerFar.Write([]byte("x"))
		require.NoError(t, err)
		b := make([]byte, 1)
		_, err = io.ReadFull(svcFar, b)
		require.NoError(t, err)
		require.NoError(t, svcFar.SetLinger(0))
		require.NoError(t, svcFar.Close())
		res := <-done
		assert.Equal(t, int64(1), res.up)
		assert.ErrorContains(t, res.err, "connection reset by peer")
		_, err = io.ReadAll(peerFar)
		assert.NoError(t, err, "the peer is closed")
	})

	t.Run("NoHalfClose", func(t *testing.T) {
		// A side that cannot half-close is closed when its input ends.
		peer, peerFar := tcpPair(t)
		svc, svcFar := tcpPair(t)
		done := relayAsync(peer, noCloseWrite{svc})
		require.NoError(t, peerFar.CloseWrite())
		_, err := io.ReadAll(svcFar)
		require.NoError(t, err)
		res := <-done
		assert.NoError(t, res.err)
		_, err = io.ReadAll(peerFar)
		assert.NoError(t, err, "the peer's side is closed too")
	})
}

type relayResult struct {
	up, down int64
	err      error
}

func relayAsync(peer, svc net.Conn) <-chan relayResult {
	done := make(chan relayResult, 1)
	go func() {
		up, down, err := relay(peer, svc, nil, nil)
		done <- relayResult{up, down, err}
	}()
	return done
}

// noCloseWrite hides the CloseWrite of a connection.
type noCloseWrite struct{ net.Conn }

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	b, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	for _, c := range []net.Conn{a, b} {
		require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	}
	return a.(*net.TCPConn), b.(*net.TCPConn)
}
