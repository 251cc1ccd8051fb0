package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"regexp"
	"sync"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
)

// troubleWindow is how long the same trouble with the proxy is kept from
// being logged again.
const troubleWindow = 30 * time.Second

// A tunnel publishes the service through a listener at the proxy: it
// relays every connection the listener accepts to the service, and logs
// where the service is reachable and what each connection carried.
type tunnel struct {
	cfg config
	log *log.Logger

	reach    reachability
	troubles *troubleLog
	conns    connSet

	// force ends the dials and relays still running once the grace
	// period is over.
	force       context.Context
	cancelForce context.CancelFunc
}

func newTunnel(cfg config, logger *log.Logger) *tunnel {
	t := &tunnel{cfg: cfg, log: logger, troubles: newTroubleLog(logger, troubleWindow, time.Now)}
	t.force, t.cancelForce = context.WithCancel(context.Background())
	return t
}

// run listens at the proxy and serves until ctx ends, then stops and
// returns nil; or until the listener fails, and returns its error. Either
// way it takes no connection from then on (see stop), and the connections
// still open get the grace period of cfg to end.
func (t *tunnel) run(ctx context.Context) error {
	defer t.cancelForce()
	lc := socksbind.ListenConfig{
		Dialer:      t.cfg.dialer,
		Multiplex:   t.cfg.mux,
		AdvertiseIP: t.cfg.advertise,
		RetryLimit:  t.cfg.retryLimit,
		Armed:       t.armed,
		Retrying:    t.troubles.retrying,
	}
	ln, err := lc.Listen(ctx, t.cfg.network, t.cfg.listen)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while the proxy had not answered yet
		}
		return err
	}
	t.started(ln)

	served := make(chan error, 1)
	go func() { served <- t.acceptLoop(ln) }()
	select {
	case <-ctx.Done():
		t.stop(ln)
		<-served
		return nil
	case err = <-served:
		ln.Close()
		t.finish(t.conns.stop())
		return err
	}
}

// acceptLoop serves the connections of ln until Accept fails, and returns
// the error.
func (t *tunnel) acceptLoop(ln *socksbind.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		start := time.Now()
		if !t.conns.add(c) {
			c.Close()
			t.logConn(c.RemoteAddr(), 0, 0, start, errors.New("turned away: stopping"))
			continue
		}
		go t.serve(c, start)
	}
}

// stop stops listening and lets the open connections end. A standard
// listener is closed at once, so that the proxy turns new peers away;
// closing a multiplexed one would cut its open connections too (they are
// streams of its session), so it turns new peers away itself until they
// have ended. Either way, no connection is taken from the moment the line
// that says so is logged.
func (t *tunnel) stop(ln *socksbind.Listener) {
	if ln.Multiplexed() {
		open := t.conns.stop()
		t.log.Print("stopping: new connections are turned away")
		t.finish(open)
		ln.Close()
		return
	}
	ln.Close()
	open := t.conns.stop()
	t.log.Print("stopping: the proxy no longer listens")
	t.finish(open)
}

// finish waits for the open connections of a stopped connSet, for at most
// the grace period; then it closes those still open.
func (t *tunnel) finish(open int) {
	if open > 0 {
		t.log.Printf("waiting up to %v for %d open connection%s", t.cfg.grace, open, plural(open))
	}
	if cut := t.conns.wait(t.cfg.grace, t.cancelForce); cut > 0 {
		t.log.Printf("closed %d connection%s still open after %v", cut, plural(cut), t.cfg.grace)
	}
}

// serve relays c to the service and logs the connection when it ends.
func (t *tunnel) serve(c net.Conn, start time.Time) {
	defer t.conns.done(c)
	peer := c.RemoteAddr()
	d := net.Dialer{Timeout: t.cfg.dialTimeout}
	var up, down int64
	svc, err := d.DialContext(t.force, "tcp", t.cfg.target)
	if err != nil {
		c.Close()
		err = fmt.Errorf("service unreachable: %w", err)
	} else {
		up, down, err = relay(c, svc)
	}
	if err != nil && t.force.Err() != nil {
		err = fmt.Errorf("closed after the grace period of %v", t.cfg.grace)
	}
	t.logConn(peer, up, down, start, err)
}

// logConn writes the line of a connection that ended: its peer, the bytes
// from the peer to the service (up) and back (down), how long it lasted,
// and what went wrong, if anything.
func (t *tunnel) logConn(peer net.Addr, up, down int64, start time.Time, err error) {
	line := fmt.Sprintf("peer=%v up=%d down=%d dur=%.3fs", peer, up, down, time.Since(start).Seconds())
	if err != nil {
		line += fmt.Sprintf(" err=%q", err.Error())
	}
	t.log.Print(line)
}

// started logs where the service is reachable, and how.
func (t *tunnel) started(ln *socksbind.Listener) {
	var how string
	switch {
	case ln.Multiplexed():
		how = "multiplexed BIND: concurrent connections"
	case t.cfg.port == 0:
		how = "standard BIND: one connection at a time, and the port may change after each"
	default:
		how = "standard BIND: one connection at a time"
	}
	if !ln.Multiplexed() && t.cfg.mux == socksbind.MultiplexAuto {
		how = "the proxy has no multiplexed BIND; " + how
	}
	addr := ln.Addr().String()
	t.reach.set(addr)
	t.log.Printf("%s reachable at %s (%s)", t.cfg.target, addr, how)
}

// armed is the listener's Armed hook: it logs the address when it has
// changed, or when the listener is back after trouble that was logged.
func (t *tunnel) armed(a net.Addr) {
	addr := a.String()
	changed := t.reach.set(addr)
	after := t.troubles.recovered()
	switch {
	case changed:
		t.log.Printf("now reachable at %s%s", addr, after)
	case after != "":
		t.log.Printf("reachable again at %s%s", addr, after)
	}
}

// reachability is the address the operator was last told of.
type reachability struct {
	mu   sync.Mutex // guards addr
	addr string
}

// set records addr and reports whether it differs from the last one.
func (r *reachability) set(addr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := addr != r.addr
	r.addr = addr
	return changed
}

// A troubleLog turns the listener's Retrying calls into log lines: the first
// of each kind of trouble at once, then at most one per window, saying how
// many were left out. Errors are of a kind when their texts are the same
// but for numbers (ports, counts).
type troubleLog struct {
	log    *log.Logger
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex // guards kinds and the fields below it
	kinds map[string]*trouble
	// Of the trouble since the listener last armed:
	retries  int       // how many retries
	since    time.Time // when the first one came
	reported bool      // whether a line was logged
}

// trouble is what a troubleLog knows of one kind of trouble.
type trouble struct {
	logged     time.Time // when it was last logged
	suppressed int       // how many were not logged since
}

func newTroubleLog(logger *log.Logger, window time.Duration, now func() time.Time) *troubleLog {
	return &troubleLog{log: logger, window: window, now: now, kinds: make(map[string]*trouble)}
}

var digits = regexp.MustCompile(`[0-9]+`)

// retrying is the listener's Retrying hook.
func (l *troubleLog) retrying(err error, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.retries == 0 {
		l.since = now
	}
	l.retries++
	kind := digits.ReplaceAllString(err.Error(), "N")
	tr := l.kinds[kind]
	if tr == nil {
		tr = &trouble{}
		l.kinds[kind] = tr
	} else if now.Sub(tr.logged) < l.window {
		tr.suppressed++
		return
	}
	line := "proxy trouble"
	if wait > 0 {
		line += fmt.Sprintf(", retrying in %v", wait)
	}
	line += ": " + err.Error()
	if tr.suppressed > 0 {
		line += fmt.Sprintf(" (%d more like it not shown since %v ago)", tr.suppressed, now.Sub(tr.logged).Round(time.Second))
	}
	l.log.Print(line)
	tr.logged, tr.suppressed = now, 0
	l.reported = true
}

// recovered ends the trouble since the listener last armed. When a line
// about it was logged, it returns a note on how long it lasted, for the
// line that says the service is reachable again.
func (l *troubleLog) recovered() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var note string
	if l.reported {
		retries := "retries"
		if l.retries == 1 {
			retries = "retry"
		}
		note = fmt.Sprintf(" (after %d %s in %v)", l.retries, retries, l.now().Sub(l.since).Round(time.Millisecond))
	}
	l.retries, l.reported = 0, false
	return note
}

// connSet holds the connections being served, for the grace period when
// the tunnel stops.
type connSet struct {
	mu      sync.Mutex // guards set and stopped
	set     map[net.Conn]struct{}
	stopped bool
	wg      sync.WaitGroup // one count per connection in set
}

// add records c, or reports false once the set was stopped.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	if s.set == nil {
		s.set = make(map[net.Conn]struct{})
	}
	s.set[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// done removes c once it has been served.
func (s *connSet) done(c net.Conn) {
	s.mu.Lock()
	delete(s.set, c)
	s.mu.Unlock()
	s.wg.Done()
}

// stop makes add refuse from now on, and returns how many connections are
// open.
func (s *connSet) stop() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	return len(s.set)
}

// wait waits for the connections of a stopped set to be served, for at
// most grace; then it calls force, closes those left and waits for them.
// It returns how many it closed.
func (s *connSet) wait(grace time.Duration, force func()) int {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		return 0
	case <-timer.C:
	}
	force()
	s.mu.Lock()
	n := len(s.set)
	for c := range s.set {
		c.Close()
	}
	s.mu.Unlock()
	<-done
	return n
}

// relay copies between the peer's connection and the service's until both
// directions are done, and returns the bytes that went from the peer to
// the service (up) and back (down). The end of one direction is passed on
// as a half-close of the other side; a side that cannot half-close is
// closed. A failure in either direction (a side gone: reset, broken pipe)
// closes both and is returned.
func relay(peer, svc net.Conn) (up, down int64, err error) {
	var once sync.Once
	var first error
	end := func(err error) {
		once.Do(func() {
			first = err
			peer.Close()
			svc.Close()
		})
	}
	upDone := make(chan int64, 1)
	go func() { upDone <- pipe(svc, peer, end) }()
	down = pipe(peer, svc, end)
	up = <-upDone
	end(nil)
	return up, down, first
}

// pipe copies src to dst, then half-closes dst. It calls end with the
// failure, or with nil when dst cannot half-close.
func pipe(dst, src net.Conn, end func(error)) int64 {
	n, err := io.Copy(dst, src)
	if err != nil {
		end(err)
		return n
	}
	if netutil.CloseWrite(dst, nil, nil) != nil {
		end(nil)
	}
	return n
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
