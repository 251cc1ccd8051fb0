package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"time"

	"github.com/socksbind/socksbind"
)

// troubleWindow is how long the same trouble with the proxy is kept from
// being logged again.
const troubleWindow = 30 * time.Second

// The wait between two attempts to listen at the proxy, when the first
// BIND of a tunnel fails with trouble that may pass (its port is taken, the
// proxy is down): it doubles from the first to the last.
const (
	firstListenRetry = 50 * time.Millisecond
	maxListenRetry   = 2 * time.Second
)

// A tunnel publishes one service through a listener at the proxy: it
// relays every connection the listener accepts to the service, and logs
// where the service is reachable and what each connection carried.
type tunnel struct {
	cfg   config
	spec  tunnelSpec
	log   *slog.Logger // with the tunnel's listen and to attributes
	stats *tunnelStats

	reach    reachability
	troubles *troubleLog
	conns    connSet

	// force ends the dials and relays still running once the grace
	// period is over.
	force       context.Context
	cancelForce context.CancelFunc
}

func newTunnel(cfg config, spec tunnelSpec, logger *slog.Logger) *tunnel {
	logger = logger.With("listen", spec.listen, "to", spec.target)
	t := &tunnel{
		cfg:      cfg,
		spec:     spec,
		log:      logger,
		stats:    &tunnelStats{listen: spec.listen, target: spec.target},
		troubles: newTroubleLog(logger, troubleWindow, time.Now),
	}
	t.force, t.cancelForce = context.WithCancel(context.Background())
	return t
}

// run listens at the proxy and serves until ctx ends, then stops and
// returns nil; or until the listener fails for good, and returns its
// error. Either way it takes no connection from then on (see stop), and
// the connections still open get the grace period of cfg to end.
func (t *tunnel) run(ctx context.Context) error {
	defer t.cancelForce()
	defer t.stats.ready.Store(false)
	ln, err := t.listen(ctx)
	if ln == nil {
		return err // nil when stopped before the proxy had bound
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
		t.stats.ready.Store(false)
		ln.Close()
		t.finish(t.conns.stop())
		return err
	}
}

// listen asks the proxy to listen until it does. Trouble that may pass (the
// port is taken or refused at the proxy, the proxy is unreachable) is
// retried with backoff, and reported as the listener's own retries are,
// for as long as -retry-limit allows. A refusal that retrying cannot mend
// (the proxy's rules, the credentials, a proxy without the command) is
// returned at once, as is the last error once the limit is over. It
// returns nil and nil when ctx ends first.
func (t *tunnel) listen(ctx context.Context) (*socksbind.Listener, error) {
	lc := socksbind.ListenConfig{
		Dialer:      t.cfg.dialer,
		Multiplex:   t.cfg.mux,
		AdvertiseIP: t.cfg.advertise,
		RetryLimit:  t.cfg.retryLimit,
		Armed:       t.armed,
		Retrying:    t.retrying,
	}
	var since time.Time
	var wait time.Duration
	for {
		ln, err := lc.Listen(ctx, t.spec.network, t.spec.listen)
		switch {
		case err == nil:
			t.stats.listening()
			return ln, nil
		case ctx.Err() != nil:
			return nil, nil
		case since.IsZero():
			since = time.Now()
		}
		if permanent(err) || (t.cfg.retryLimit > 0 && time.Since(since) >= t.cfg.retryLimit) {
			return nil, err
		}
		wait = min(max(2*wait, firstListenRetry), maxListenRetry)
		t.retrying(err, wait)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, nil
		}
	}
}

// permanent reports a failure to listen that retrying cannot mend: what
// [socksbind.Listener] gives up on at once.
func permanent(err error) bool {
	for _, e := range []error{socksbind.ErrNotAllowed, socksbind.ErrCommandNotSupported,
		socksbind.ErrAddressNotSupported, socksbind.ErrAuthRejected,
		socksbind.ErrNoAcceptableAuth, socksbind.ErrProtocolViolation} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
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
		t.stats.total.Add(1)
		if !t.conns.add(c) {
			c.Close()
			t.logConn(c.RemoteAddr(), 0, 0, start, errors.New("turned away: stopping"))
			continue
		}
		t.stats.open.Add(1)
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
	t.stats.ready.Store(false)
	if ln.Multiplexed() {
		open := t.conns.stop()
		t.log.Info("stopping: new connections are turned away")
		t.finish(open)
		ln.Close()
		return
	}
	ln.Close()
	open := t.conns.stop()
	t.log.Info("stopping: the proxy no longer listens")
	t.finish(open)
}

// finish waits for the open connections of a stopped connSet, for at most
// the grace period; then it closes those still open.
func (t *tunnel) finish(open int) {
	if open > 0 {
		t.log.Info("waiting for open connections", "open", open, "grace", t.cfg.grace)
	}
	if cut := t.conns.wait(t.cfg.grace, t.cancelForce); cut > 0 {
		t.log.Warn("closed connections still open after the grace period", "closed", cut, "grace", t.cfg.grace)
	}
}

// serve relays c to the service, after the PROXY protocol header when
// asked, and logs the connection when it ends.
func (t *tunnel) serve(c net.Conn, start time.Time) {
	defer t.conns.done(c)
	peer := c.RemoteAddr()
	d := net.Dialer{Timeout: t.cfg.dialTimeout}
	var up, down int64
	svc, err := d.DialContext(t.force, "tcp", t.spec.target)
	if err != nil {
		t.stats.refusals.Add(1)
		err = fmt.Errorf("service unreachable: %w", err)
	} else if h := t.cfg.proxyProtocol.header(peer, c.LocalAddr()); h != nil {
		if _, err = svc.Write(h); err != nil {
			svc.Close()
			err = fmt.Errorf("PROXY protocol header: %w", err)
		}
	}
	if err != nil {
		c.Close()
	} else {
		up, down, err = relay(c, svc, t.stats.addUp, t.stats.addDown)
	}
	if err != nil && t.force.Err() != nil {
		err = fmt.Errorf("closed after the grace period of %v", t.cfg.grace)
	}
	t.stats.open.Add(-1) // before the line, which tells a reader it has ended
	t.logConn(peer, up, down, start, err)
}

// logConn writes the line of a connection that ended: its peer, the bytes
// from the peer to the service (up) and back (down), how long it lasted,
// and what went wrong, if anything.
func (t *tunnel) logConn(peer net.Addr, up, down int64, start time.Time, err error) {
	args := []any{"peer", peer.String(), "up", up, "down", down, "dur", time.Since(start).Round(time.Microsecond)}
	if err != nil {
		t.log.Warn("connection", append(args, "err", err.Error())...)
		return
	}
	t.log.Info("connection", args...)
}

// started logs where the service is reachable, and how.
func (t *tunnel) started(ln *socksbind.Listener) {
	var how string
	switch {
	case ln.Multiplexed():
		how = "multiplexed BIND: concurrent connections"
	case t.spec.port == 0:
		how = "standard BIND: one connection at a time, and the port may change after each"
	default:
		how = "standard BIND: one connection at a time"
	}
	if !ln.Multiplexed() && t.cfg.mux == socksbind.MultiplexAuto {
		how = "the proxy has no multiplexed BIND; " + how
	}
	addr := ln.Addr().String()
	t.reach.set(addr)
	args := []any{"addr", addr, "how", how}
	if retries, after, ok := t.troubles.recovered(); ok {
		args = append(args, "retries", retries, "after", after)
	}
	t.log.Info("reachable", args...)
}

// armed is the listener's Armed hook: it logs the address when it has
// changed, or when the listener is back after trouble that was logged.
func (t *tunnel) armed(a net.Addr) {
	t.stats.armed()
	addr := a.String()
	changed := t.reach.set(addr)
	retries, after, logged := t.troubles.recovered()
	var args []any
	if logged {
		args = []any{"retries", retries, "after", after}
	}
	switch {
	case changed:
		t.log.Info("now reachable", append([]any{"addr", addr}, args...)...)
	case logged:
		t.log.Info("reachable again", append([]any{"addr", addr}, args...)...)
	}
}

// retrying is the listener's Retrying hook, and is called for the retries
// of listen as well. A multiplexed listener calls it with no wait for a
// stream it could not take (the proxy spoiled its header): that peer is
// lost, but the tunnel stays armed, so it is logged and nothing more.
func (t *tunnel) retrying(err error, wait time.Duration) {
	if wait > 0 {
		t.stats.retrying()
	}
	t.troubles.retrying(err, wait)
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
	log    *slog.Logger
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

func newTroubleLog(logger *slog.Logger, window time.Duration, now func() time.Time) *troubleLog {
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
	var args []any
	if wait > 0 {
		args = append(args, "retry_in", wait)
	}
	if tr.suppressed > 0 {
		args = append(args, "suppressed", tr.suppressed, "since", now.Sub(tr.logged).Round(time.Second))
	}
	args = append(args, "err", err.Error())
	l.log.Warn("proxy trouble", args...)
	tr.logged, tr.suppressed = now, 0
	l.reported = true
}

// recovered ends the trouble since the listener last armed. When a line
// about it was logged, it returns how many retries there were and how
// long they lasted, for the line that says the service is reachable again.
func (l *troubleLog) recovered() (retries int, after time.Duration, logged bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reported {
		retries, after, logged = l.retries, l.now().Sub(l.since).Round(time.Millisecond), true
	}
	l.retries, l.reported = 0, false
	return retries, after, logged
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
