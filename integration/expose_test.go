package integration

// The tests of cmd/expose, the reverse tunnel: the program is built and run
// as a user would, against Dante (standard BIND, re-armed after each
// connection) and GOST (multiplexed BIND), publishing an echo service or
// nginx on loopback.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/testkit"
)

// The lines of the program's log (slog's text format) that the tests read.
var (
	exposeReachable = regexp.MustCompile(`^time=\S+ level=INFO msg=reachable listen=(\S+) to=(\S+) addr=(\S+) how="([^"]*)"`)
	exposeMoved     = regexp.MustCompile(`^time=\S+ level=INFO msg="now reachable" listen=\S+ to=\S+ addr=(\S+)`)
	exposeAddress   = regexp.MustCompile(`^time=\S+ level=INFO msg=(?:reachable|"now reachable"|"reachable again") listen=\S+ to=\S+ addr=(\S+)`)
	exposeConn      = regexp.MustCompile(`^time=\S+ level=(?:INFO|WARN) msg=connection listen=\S+ to=(\S+) peer=(\S+) up=(\d+) down=(\d+) dur=\S+(?: err=("(?:[^"\\]|\\.)*"))?$`)
	exposeStatus    = regexp.MustCompile(`^time=\S+ level=INFO msg="status served" addr=(\S+) `)
)

// exposeLine matches a line of msg, which slog writes quoted when it has a
// space.
func exposeLine(level, msg string) *regexp.Regexp {
	if strings.Contains(msg, " ") {
		msg = strconv.Quote(msg)
	}
	return regexp.MustCompile(`^time=\S+ level=` + level + ` msg=` + regexp.QuoteMeta(msg) + `( |$)`)
}

func TestExpose(t *testing.T) {
	t.Parallel()
	bin := buildExpose(t)

	t.Run("Dante", func(t *testing.T) {
		dante := startDante(t, DanteConfig{})
		echo := testkit.Echo(t, "tcp4")
		p := startExpose(t, bin, nil, "-proxy", "socks5://"+dante.Addr, "-to", echo.Addr().String(), "-grace", "10s")
		m := p.next(t, exposeReachable)
		assert.Equal(t, echo.Addr().String(), m[2])
		assert.Equal(t, "the proxy has no multiplexed BIND; standard BIND: one connection at a time, and the port may change after each", m[4])
		first := m[3]

		// While a connection holds its port, Dante binds another one for
		// the next BIND: the program says where, each time.
		addr := first
		var held []*net.TCPConn
		for i := range 3 {
			c := exposePeer(t, addr)
			msg := fmt.Sprintf("held %d", i)
			assert.Equal(t, msg, exchange(t, c, msg))
			held = append(held, c)
			next := p.next(t, exposeMoved)[1]
			assert.NotEqual(t, addr, next, "a new address once the last one is taken")
			addr = next
		}
		for _, c := range held {
			assert.Equal(t, "", roundTrip(t, c, ""), "EOF after a half-close")
			p.requireConn(t, 6, 6)
		}

		// One connection after another: a peer goes where the program
		// said last.
		for i := range 6 {
			msg := strings.Repeat(strconv.Itoa(i), 1000*(i+1))
			c := p.exchangeCurrent(t, msg)
			assert.Equal(t, "", roundTrip(t, c, ""), "EOF after a half-close")
			p.requireConn(t, len(msg), len(msg))
		}

		// SIGTERM with a connection open: the proxy stops listening at
		// once, the connection goes on until its peer ends it, and the
		// program exits 0.
		c := p.exchangeCurrent(t, "open")
		waiting := p.addrAfter(t, c.RemoteAddr().String()) // the BIND armed for the next peer
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		p.next(t, exposeLine("INFO", "stopping: the proxy no longer listens"))
		p.next(t, regexp.MustCompile(`level=INFO msg="waiting for open connections" .* open=1 grace=10s$`))
		pollReleased(t, dante, waiting)
		assert.Equal(t, "still there", exchange(t, c, "still there"))
		assert.Equal(t, "", roundTrip(t, c, ""))
		assert.Equal(t, 0, p.wait(t), "exit status")
		p.requireConn(t, 15, 15)
		assert.Equal(t, 3+6+1, p.out.Count(exposeConn), "one line per connection")
		assert.Zero(t, p.out.Count(regexp.MustCompile(`trouble`)), "nothing went wrong at the proxy")
		t.Logf("first address %s, last %s", first, waiting)
	})

	t.Run("GOST", func(t *testing.T) {
		gost := startGost(t, GostConfig{})
		echo := testkit.Echo(t, "tcp4")
		p := startExpose(t, bin, nil, "-proxy", "socks5://"+gost.Addr, "-to", echo.Addr().String(), "-grace", "10s")
		m := p.next(t, exposeReachable)
		assert.Equal(t, "multiplexed BIND: concurrent connections", m[4])
		addr := m[3]

		// Twenty peers at one address at once: each has had its first
		// byte echoed before any goes on. GOST ends a stream at the first
		// EOF either way, so the peers read the whole echo and then close.
		const peers = 20
		var firstByte sync.WaitGroup
		firstByte.Add(peers)
		errs := make(chan error, peers)
		want := make(map[int]int)
		for i := range peers {
			size := 1 + i*10000
			want[size]++
			go func() { errs <- concurrentPeer(addr, size, &firstByte) }()
		}
		for range peers {
			assert.NoError(t, <-errs)
		}
		got := make(map[int]int)
		for range peers {
			up, down := p.nextConn(t)
			assert.Equal(t, up, down)
			got[up]++
		}
		assert.Equal(t, want, got, "bytes up and down of each connection")
		assert.Zero(t, p.out.Count(exposeMoved), "one address throughout")

		// SIGTERM with a connection open: it goes on, a late peer is
		// turned away, and the port is released when the program exits.
		c := exposePeer(t, addr)
		assert.Equal(t, "open", exchange(t, c, "open"))
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		p.next(t, exposeLine("INFO", "stopping: new connections are turned away"))
		late := exposePeer(t, addr)
		_, err := io.ReadAll(late)
		assert.NoError(t, err, "a late peer reads EOF")
		m = p.next(t, exposeConn)
		assert.Equal(t, `"turned away: stopping"`, m[5])
		assert.Equal(t, "still there", exchange(t, c, "still there"))
		require.NoError(t, c.Close())
		assert.Equal(t, 0, p.wait(t), "exit status")
		p.requireConn(t, 15, 15)
		assert.Equal(t, peers+2, p.out.Count(exposeConn), "one line per connection")
		pollGostReleased(t, gost, uint16(portOf(t, addr)))
	})

	t.Run("GOSTFromEnvironment", func(t *testing.T) {
		// ALL_PROXY, and its bind=mux, are followed.
		gost := startGost(t, GostConfig{})
		p := startExpose(t, bin, []string{"ALL_PROXY=socks5h://" + gost.Addr + "?bind=mux"}, "-to", "127.0.0.1:9")
		assert.Equal(t, "multiplexed BIND: concurrent connections", p.next(t, exposeReachable)[4])
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
		assert.Equal(t, 0, p.wait(t), "exit status")
	})

	t.Run("Errors", func(t *testing.T) {
		dante := startDante(t, DanteConfig{})
		tests := []struct {
			name string
			env  []string
			args []string
			code int
			want string
		}{
			{"NoProxy", nil, []string{"-to", "127.0.0.1:9"}, 2,
				"expose: no proxy: give -proxy socks5://HOST:PORT or socks5h://HOST:PORT, or set ALL_PROXY (expose -h for help)"},
			{"HTTPProxy", []string{"ALL_PROXY=http://alice:s3cret@127.0.0.1:3128"}, []string{"-to", "127.0.0.1:9"}, 2,
				"expose: http://alice:xxxxx@127.0.0.1:3128 (from ALL_PROXY) cannot listen: expose needs a SOCKS5 proxy"},
			{"BadTarget", nil, []string{"-proxy", "socks5://" + dante.Addr, "-to", "3000"}, 2,
				`expose: -to "3000": want HOST:PORT, such as 127.0.0.1:3000`},
			{"NoMBIND", nil, []string{"-proxy", "socks5://" + dante.Addr, "-to", "127.0.0.1:9", "-mux", "on"}, 1,
				"(the proxy has no multiplexed BIND: use -mux auto or -mux off)"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				p := startExpose(t, bin, tt.env, tt.args...)
				assert.Equal(t, tt.code, p.wait(t), "exit status")
				out := p.out.String()
				assert.Contains(t, out, tt.want)
				assert.NotContains(t, out, "s3cret")
				assert.Equal(t, 1, strings.Count(out, "\n"), "one line")
			})
		}
	})
}

// buildExpose builds cmd/expose, once for the test binary, and returns the
// path of the program.
func buildExpose(t testing.TB) string {
	t.Helper()
	exposeBuild.once.Do(func() {
		// go test puts the go command of its own GOROOT first in PATH.
		goTool, err := exec.LookPath("go")
		if err != nil {
			exposeBuild.err = fmt.Errorf("no go command to build cmd/expose: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "expose-test-")
		if err != nil {
			exposeBuild.err = err
			return
		}
		exposeBuild.dir = dir
		bin := filepath.Join(dir, "expose")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, "../cmd/expose").CombinedOutput()
		if err != nil {
			exposeBuild.err = fmt.Errorf("go build cmd/expose: %w\n%s", err, out)
			return
		}
		exposeBuild.path = bin
	})
	if exposeBuild.err != nil {
		t.Fatalf("integration: %v", exposeBuild.err)
	}
	return exposeBuild.path
}

// exposeBuild is the program buildExpose built; TestMain removes dir.
var exposeBuild struct {
	once      sync.Once
	dir, path string
	err       error
}

// exposeProc is a running expose program and its output, line by line.
type exposeProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait has returned
	code   int           // the exit status, once exited is closed
	out    *testkit.Lines
}

// startExpose runs the program at bin with args, with env added to an
// environment without proxy settings. The test's cleanup kills it if it
// still runs, and logs its output.
func startExpose(t testing.TB, bin string, env []string, args ...string) *exposeProc {
	t.Helper()
	p := &exposeProc{cmd: exec.Command(bin, args...), exited: make(chan struct{}), out: testkit.NewLines()}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(name) {
		case "ALL_PROXY", "NO_PROXY":
			continue
		}
		p.cmd.Env = append(p.cmd.Env, kv)
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() {
		err := p.cmd.Wait()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			p.code = exit.ExitCode()
		case err != nil:
			p.code = -1
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			t.Errorf("expose still runs: killed")
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		t.Logf("expose %s\n%s", strings.Join(args, " "), p.out.String())
	})
	return p
}

// next takes the first line not taken yet that matches re, waiting for it,
// and returns its submatches.
func (p *exposeProc) next(t testing.TB, re *regexp.Regexp) []string {
	t.Helper()
	m := p.out.Take(re, testTimeout, p.exited)
	if m == nil {
		select {
		case <-p.exited:
			require.FailNow(t, "expose exited without the line", "%v, exit status %d", re, p.code)
		default:
			require.FailNow(t, "no such line from expose", "%v", re)
		}
	}
	return m
}

// nextConn takes the next connection line without an error and returns
// its bytes up and down.
func (p *exposeProc) nextConn(t *testing.T) (up, down int) {
	t.Helper()
	m := p.next(t, exposeConn)
	assert.Empty(t, m[5], "the connection of %s ended well", m[2])
	up, _ = strconv.Atoi(m[3])
	down, _ = strconv.Atoi(m[4])
	return up, down
}

// requireConn takes the next connection line and checks its byte counts.
func (p *exposeProc) requireConn(t *testing.T, up, down int) {
	t.Helper()
	gotUp, gotDown := p.nextConn(t)
	assert.Equal(t, []int{up, down}, []int{gotUp, gotDown}, "bytes up and down")
}

// current returns where the program said last that the service is
// reachable.
func (p *exposeProc) current() string {
	if m := p.out.Last(exposeAddress); m != nil {
		return m[1]
	}
	return ""
}

// addrAfter waits for the program to say that the service is reachable
// at an address other than addr, after it last said addr, and returns it.
func (p *exposeProc) addrAfter(t *testing.T, addr string) string {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		var next string
		for _, line := range p.out.All() {
			if m := exposeAddress.FindStringSubmatch(line); m != nil {
				switch {
				case m[1] == addr:
					next = ""
				case next == "":
					next = m[1]
				}
			}
		}
		if next != "" {
			return next
		}
		select {
		case <-p.out.Added():
		case <-p.exited:
			require.FailNow(t, "expose exited", "exit status %d", p.code)
		case <-deadline:
			require.FailNow(t, "expose did not move from "+addr)
		}
	}
}

// exchangeCurrent connects as a peer that follows the program's output, to
// the address it said last, sends msg and reads it back, and returns the
// connection. It tries again while the proxy refuses the connection (the
// listener has not re-armed yet, or has moved and not said so yet) or ends
// it before any byte came back: Dante resets a peer that raced into the
// queue of a BIND socket that has had its peer and is about to close. Such
// a peer never reaches the program, which logs nothing of it.
func (p *exposeProc) exchangeCurrent(t *testing.T, msg string) *net.TCPConn {
	t.Helper()
	var (
		addr string
		c    net.Conn
		err  error
	)
	exchanged := testkit.PollEvery(pollInterval, testTimeout, func() bool {
		addr = p.current()
		if c, err = net.DialTimeout("tcp", addr, testTimeout); err == nil {
			dialed := c
			t.Cleanup(func() { dialed.Close() })
			require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
			got := make([]byte, len(msg))
			var n int
			if _, err = io.WriteString(c, msg); err == nil {
				n, err = io.ReadFull(c, got)
			}
			if err == nil {
				require.Equal(t, msg, string(got))
				return true
			}
			c.Close()
			if n > 0 || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF)) {
				require.NoError(t, err, "exchange with %s", addr)
			}
		} else {
			require.ErrorIs(t, err, syscall.ECONNREFUSED, "dial %s", addr)
		}
		return false
	})
	require.True(t, exchanged, "%s: no exchange for %v: %v", addr, testTimeout, err)
	return c.(*net.TCPConn)
}

// wait waits for the program to exit and returns its exit status.
func (p *exposeProc) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(testTimeout):
		require.FailNow(t, "expose did not exit")
		return 0
	}
}

// exposePeer connects to addr as a peer of the proxy's side, with
// testTimeout as the connection's deadline.
func exposePeer(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", addr)
	require.NoError(t, err)
	return dialPeer(t, "127.0.0.1", a)
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	port, err := strconv.Atoi(p)
	require.NoError(t, err)
	return port
}

// concurrentPeer sends size bytes to addr and reads them back, once every
// peer of first has had its first byte back. It may run on any goroutine.
func concurrentPeer(addr string, size int, first *sync.WaitGroup) error {
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		first.Done()
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(testTimeout)); err != nil {
		first.Done()
		return err
	}
	msg := []byte(strings.Repeat("0123456789abcdef", size/16+1)[:size])
	echo := make([]byte, size)
	_, err = c.Write(msg[:1])
	if err == nil {
		_, err = io.ReadFull(c, echo[:1])
	}
	first.Done()
	if err != nil {
		return err
	}
	first.Wait()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg[1:])
		errc <- err
	}()
	_, err = io.ReadFull(c, echo[1:])
	if werr := <-errc; err == nil {
		err = werr
	}
	if err == nil && string(echo) != string(msg) {
		err = fmt.Errorf("%d bytes: the echo differs", size)
	}
	return err
}

// pollReleased polls until no process of s listens on the port of addr.
func pollReleased(t *testing.T, s *Server, addr string) {
	t.Helper()
	port := portOf(t, addr)
	if !testkit.Poll(testTimeout, func() bool { return !ownsListener(s.pid, port) }) {
		require.FailNow(t, "the proxy still listens", "%s on port %d", s.Name, port)
	}
}
