// Package testkit holds the fixtures the tests of every package share: an
// echo server, free ports, polling, an Accept run in the background, an
// in-process proxy, a forward dialer that records what it dials, and the
// lines of a log to take one by one.
// Only _test.go files import it, so it may fail tests itself.
package testkit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/xtaci/smux"

	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/socks5test"
)

// An EchoServer sends back what it reads on every connection, and passes
// the client's half-close on.
type EchoServer struct {
	net.Listener
	// Peers receives the remote address of each connection accepted, the
	// first 1024 of them.
	Peers <-chan net.Addr
}

// Port returns the port the server listens on.
func (e *EchoServer) Port() int { return e.Addr().(*net.TCPAddr).Port }

// Echo starts an EchoServer on a port of network's loopback address ([::1]
// for "tcp6", 127.0.0.1 otherwise). When the test ends it closes the
// listener and the connections still open, and waits for its goroutines.
func Echo(t testing.TB, network string) *EchoServer {
	t.Helper()
	address := "127.0.0.1:0"
	if network == "tcp6" {
		address = "[::1]:0"
	}
	ln, err := net.Listen(network, address)
	require.NoError(t, err)
	peers := make(chan net.Addr, 1024)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			select {
			case peers <- c.RemoteAddr():
			default:
			}
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				if _, err := io.Copy(c, c); err == nil {
					if cw, ok := c.(interface{ CloseWrite() error }); ok {
						_ = cw.CloseWrite()
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &EchoServer{Listener: ln, Peers: peers}
}

// FreePort returns a port of 127.0.0.1 that the kernel picked and that was
// free a moment ago. lc may set a Control for the probing socket.
func FreePort(t testing.TB, lc net.ListenConfig) int {
	t.Helper()
	ln, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// FreePortIn returns a port of 127.0.0.1 in [lo, hi) that was free a moment
// ago, picked at random. Tests that ask a proxy for a port by number take
// it below the kernel's ephemeral range, where no outgoing connection can
// take it (or leave it in TIME_WAIT) behind the test's back; packages that
// run at once take theirs from ranges apart. The port is tried without
// SO_REUSEADDR, as a proxy's BIND socket binds it: a port an earlier test
// left in TIME_WAIT is not free.
func FreePortIn(t testing.TB, lo, hi int) int {
	t.Helper()
	for range 100 {
		port := lo + rand.IntN(hi-lo)
		lc := net.ListenConfig{Control: netutil.NoReuseAddr}
		ln, err := lc.Listen(t.Context(), "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatalf("no free port in [%d, %d)", lo, hi)
	return 0
}

// IsTimeout reports whether err itself, not an error it wraps, is a
// net.Error that is a timeout: what code that predates errors.As checks.
func IsTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Poll checks cond every millisecond until it holds, for timeout at most,
// and reports whether it held. It runs cond on the caller's goroutine.
func Poll(timeout time.Duration, cond func() bool) bool {
	return PollEvery(time.Millisecond, timeout, cond)
}

// PollEvery is Poll with another interval, for a cond that costs more than
// a look at memory (a dial, a read of /proc).
func PollEvery(interval, timeout time.Duration, cond func() bool) bool {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// Eventually polls cond as Poll does and fails the test, without stopping
// it, when cond never held.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Errorf("condition never satisfied: %s", msg)
	}
}

// Get sends a GET for url, which must be answered within timeout, and
// returns the status code and the body of the answer.
func Get(t testing.TB, url string, timeout time.Duration) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get(url)
	require.NoError(t, err, "GET %s", url)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// PollGet sends GETs for url until one is answered with code, for timeout
// at most, and returns its body. It stops the test when none was.
func PollGet(t testing.TB, url string, code int, timeout time.Duration) string {
	t.Helper()
	var got int
	var body string
	if !Poll(timeout, func() bool { got, body = Get(t, url, timeout); return got == code }) {
		t.Fatalf("GET %s still answers %d:\n%s", url, got, body)
	}
	return body
}

// Lines collects what is written to it, a logger's or a program's output,
// line by line, for a test to take the lines it expects one at a time, in
// any order. Make one with NewLines.
type Lines struct {
	mu      sync.Mutex // guards lines, taken and partial
	lines   []string
	taken   []bool
	partial []byte        // the start of a line not ended yet
	notify  chan struct{} // a line was added
}

// NewLines returns an empty Lines.
func NewLines() *Lines { return &Lines{notify: make(chan struct{}, 1)} }

// Write adds the lines ended in p; the rest waits for the next Write.
func (l *Lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.taken = append(l.taken, false)
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Take takes the first line not taken yet that matches re and returns its
// submatches. It waits for one for timeout at most, or until done (which
// may be nil) is closed and one more look found none; then it returns nil.
func (l *Lines) Take(re *regexp.Regexp, timeout time.Duration, done <-chan struct{}) []string {
	deadline := time.After(timeout)
	for {
		if m := l.take(re); m != nil {
			return m
		}
		select {
		case <-l.notify:
		case <-done:
			return l.take(re) // the writer's last lines are in
		case <-deadline:
			return nil
		}
	}
}

func (l *Lines) take(re *regexp.Regexp) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, line := range l.lines {
		if m := re.FindStringSubmatch(line); m != nil && !l.taken[i] {
			l.taken[i] = true
			return m
		}
	}
	return nil
}

// Added receives after a line was added, once for any number of lines
// added since the last receive. Take receives from it too.
func (l *Lines) Added() <-chan struct{} { return l.notify }

// All returns the lines ended so far, taken or not.
func (l *Lines) All() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// Last returns the submatches of the last line that matches re, taken or
// not, and nil when none does.
func (l *Lines) Last(re *regexp.Regexp) []string {
	lines := l.All()
	for i := len(lines) - 1; i >= 0; i-- {
		if m := re.FindStringSubmatch(lines[i]); m != nil {
			return m
		}
	}
	return nil
}

// Count returns how many lines match re, taken or not.
func (l *Lines) Count(re *regexp.Regexp) int {
	n := 0
	for _, line := range l.All() {
		if re.MatchString(line) {
			n++
		}
	}
	return n
}

// String returns everything written so far.
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(slices.Clone(l.lines), string(l.partial)), "\n")
}

// Accepted is what an Accept run in the background returned.
type Accepted struct {
	Conn net.Conn
	Err  error
}

// AcceptAsync runs ln.Accept once in a goroutine and hands its result over
// the channel.
func AcceptAsync(ln net.Listener) <-chan Accepted {
	ch := make(chan Accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- Accepted{c, err}
	}()
	return ch
}

// Exchange writes msg on c, reads as many bytes back and returns them. It
// sets no deadline: c's bounds it.
func Exchange(t testing.TB, c net.Conn, msg string) string {
	t.Helper()
	return Carry(t, c, c, msg)
}

// Carry writes msg on from, reads as many bytes from to and returns them:
// what one end of a relay receives of what the other sent. It sets no
// deadline.
func Carry(t testing.TB, from io.Writer, to io.Reader, msg string) string {
	t.Helper()
	_, err := io.WriteString(from, msg)
	require.NoError(t, err)
	b := make([]byte, len(msg))
	_, err = io.ReadFull(to, b)
	require.NoError(t, err)
	return string(b)
}

// Port returns the port of a, a TCP or UDP address, in decimal.
func Port(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

// Proxy starts an in-process SOCKS5 server configured by setup (nil for
// none) and closes it when the test ends.
func Proxy(t testing.TB, setup func(*socks5test.Server)) *socks5test.Server {
	t.Helper()
	srv := socks5test.NewUnstartedServer()
	if setup != nil {
		setup(srv)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// A Dialer is a forward dialer that records every dial: the address asked
// for, the deadline of the dial's context, and the connection made, whose
// SetDeadline calls it records too. It dials loopback only: a name in Hosts
// is dialed at the address given there; "localhost" and loopback IPs as
// they are; any other address fails without a dial. Its zero value is ready
// to use.
type Dialer struct {
	// Hosts maps a name the tests use to the loopback IP dialed for it.
	Hosts map[string]string

	mu    sync.Mutex // guards dials and next
	dials []Dial
	next  int // the index in dials that Next looks at first
}

// A Dial is one dial a Dialer was asked for.
type Dial struct {
	Address  string      // as asked for, before Hosts
	Deadline time.Time   // the context's; zero when it had none
	Conn     *DialedConn // nil when the dial failed
}

// A DialedConn is a connection a Dialer made. It records each deadline set
// with SetDeadline; everything else is the *net.TCPConn's. Code that looks
// for a *net.TCPConn itself (to splice, say) does not find one: a test of
// such a path dials without this Dialer.
type DialedConn struct {
	*net.TCPConn

	mu        sync.Mutex // guards deadlines
	deadlines []time.Time
}

// Dial dials address without a context.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext records the dial and makes it.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	dl, _ := ctx.Deadline()
	d.mu.Lock()
	i := len(d.dials)
	d.dials = append(d.dials, Dial{Address: address, Deadline: dl})
	d.mu.Unlock()
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if ip, ok := d.Hosts[host]; ok {
		host = ip
	} else if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.IsLoopback()) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("not a loopback address: " + address)}
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	dc := &DialedConn{TCPConn: c.(*net.TCPConn)}
	d.mu.Lock()
	d.dials[i].Conn = dc
	d.mu.Unlock()
	return dc, nil
}

// Dials returns the dials made so far, in order.
func (d *Dialer) Dials() []Dial {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dials)
}

// Addresses returns the addresses of the dials made so far, in order.
func (d *Dialer) Addresses() []string {
	var addrs []string
	for _, dl := range d.Dials() {
		addrs = append(addrs, dl.Address)
	}
	return addrs
}

// Next returns the first connection made that Next has not returned yet,
// and fails the test when there is none.
func (d *Dialer) Next(t testing.TB) *DialedConn {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for ; d.next < len(d.dials); d.next++ {
		if c := d.dials[d.next].Conn; c != nil {
			d.next++
			return c
		}
	}
	t.Fatal("no connection was made")
	return nil
}

// SetDeadline records t and sets it.
func (c *DialedConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadlines = append(c.deadlines, t)
	c.mu.Unlock()
	return c.TCPConn.SetDeadline(t)
}

// Deadlines returns the deadlines set with SetDeadline so far, in order.
func (c *DialedConn) Deadlines() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.deadlines)
}

// AcceptStream accepts the next stream the peer of sess opens, within
// timeout, with timeout as the stream's deadline; the stream is closed
// when the test ends.
func AcceptStream(t testing.TB, sess *smux.Session, timeout time.Duration) *smux.Stream {
	t.Helper()
	require.NoError(t, sess.SetDeadline(time.Now().Add(timeout)))
	st, err := sess.AcceptStream()
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	require.NoError(t, st.SetDeadline(time.Now().Add(timeout)))
	return st
}
