package socksbind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/xtaci/smux"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/wire"
)

var _ net.Listener = (*Listener)(nil)

// ListenConfig holds the options of a BIND listener. The zero value of
// every field but Dialer is the default.
type ListenConfig struct {
	// Dialer reaches the proxy and authenticates to it.
	Dialer *Dialer

	// Once makes the listener carry a single connection, as a classic
	// BIND does (an FTP active-mode data connection, a call-back from one
	// known peer): it does not re-arm, and after the one connection Accept
	// blocks until Close and then returns an error matching
	// [net.ErrClosed]. So log.Fatal(http.Serve(ln, h)) does not end the
	// program while the connection is being served. A failed second reply
	// is returned from Accept, as a permanent error.
	Once bool

	// Multiplex selects standard BIND (the zero value), GOST's
	// multiplexed BIND, or whichever the proxy supports.
	Multiplex Multiplex

	// AdvertiseIP, when valid, replaces the IP address of every address
	// the proxy binds, for a proxy behind NAT that reports an address its
	// peers cannot reach.
	AdvertiseIP netip.Addr

	// RetryLimit bounds how long the listener keeps retrying trouble that
	// may pass (see [Listener]) before it gives up: Accept then returns
	// the last error, as a permanent one. It counts from the first failure
	// since the last connection the listener carried. Zero means no
	// limit: the listener retries for as long as it is open.
	RetryLimit time.Duration

	// Armed, when not nil, is called each time the listener has re-armed,
	// with the address of the BIND now waiting for a peer: the moment a
	// peer can connect, and where. In follow mode (port 0) the address may
	// differ from the previous one; Addr reports it from then on.
	//
	// Armed and Retrying run on the listener's goroutine and must not
	// block it: while they run, the listener waits. They may call Close.
	// Neither is called once Close has begun.
	Armed func(addr net.Addr)

	// Retrying, when not nil, is called each time the listener meets
	// trouble it will retry on its own (err, which Accept does not
	// return), with the time it waits before the next attempt: for an
	// operator's log line such as "port 8080 unavailable at the proxy,
	// retrying in 1s". See Armed for where it runs.
	Retrying func(err error, wait time.Duration)
}

// Listen asks the proxy to listen with the BIND command. See
// [ListenConfig.Listen].
func (d *Dialer) Listen(ctx context.Context, network, address string) (*Listener, error) {
	lc := ListenConfig{Dialer: d}
	return lc.Listen(ctx, network, address)
}

// Listen opens a control connection to the proxy, sends BIND and returns
// once the proxy has bound (its first reply). The listener's Addr is the
// address the proxy bound.
//
// network is "tcp", "tcp4" or "tcp6". address is the BIND request's
// DST.ADDR:DST.PORT:
//
//   - an empty host means any peer, as the unspecified address of the
//     family ("tcp" and "tcp4": 0.0.0.0, "tcp6": ::);
//   - a specific host is the expected peer: proxies such as Dante refuse
//     any other (RFC 1928 gives the field this meaning), and ignore the
//     port;
//   - with an empty host, a non-zero port asks the proxy for that port.
//     The caller then needs that port: if the proxy binds another, Listen
//     fails with an error matching [ErrAddressInUse] and releases what it
//     got. Port 0 accepts whatever port the proxy picks.
//
// The context bounds the handshake and the first reply only; once Listen
// returns, expiry of the context has no effect on the listener. Listen does
// not retry: a proxy that fails the first BIND fails Listen, so that a
// misconfiguration shows at start.
//
// Errors are [*net.OpError] with Op "socks bind"; see [Dialer.DialContext].
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (*Listener, error) {
	d := lc.Dialer
	if d == nil {
		return nil, &net.OpError{Op: "socks bind", Net: network, Addr: netutil.TextAddr(address), Err: errors.New("ListenConfig without a Dialer")}
	}
	want, err := bindTarget(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "socks bind", Net: network, Source: d.proxyAddr(), Addr: netutil.TextAddr(address), Err: err}
	}
	life, cancel := context.WithCancel(context.Background())
	l := &Listener{
		cfg:      *lc,
		network:  network,
		want:     want,
		fixed:    want.Port != 0 && want.IP.IsUnspecified(),
		conns:    make(chan net.Conn, 1),
		closed:   make(chan struct{}),
		failed:   make(chan struct{}),
		loopDone: make(chan struct{}),
		life:     life,
		cancel:   cancel,
		deadline: makeAcceptDeadline(),
	}
	if lc.Multiplex != MultiplexOff {
		fallBack, err := l.listenMux(ctx)
		if err != nil {
			cancel()
			return nil, err
		}
		if !fallBack {
			go l.runMux()
			return l, nil
		}
	}
	b, err := l.arm(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	l.addr, l.port = b.addr, b.port
	go l.run(b)
	return l, nil
}

// bindTarget turns a Listen address into a BIND request's DST.
func bindTarget(network, address string) (Addr, error) {
	ipNet, err := ipNetwork(network)
	if err != nil {
		return Addr{}, err
	}
	a, err := parseAddr(address)
	if err != nil {
		return Addr{}, err
	}
	switch {
	case a.Name != "":
		return Addr{}, &net.AddrError{Err: "expected peer must be an IP address", Addr: address}
	case !a.IP.IsValid() && ipNet == "ip6":
		a.IP = netip.IPv6Unspecified()
	case !a.IP.IsValid():
		a.IP = netip.IPv4Unspecified()
	case (ipNet == "ip4" && !a.IP.Is4()) || (ipNet == "ip6" && !a.IP.Is6()):
		return Addr{}, &net.AddrError{Err: "address family mismatch", Addr: address}
	case a.IP == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		// Dante reads it as its broken "bind extension".
		return Addr{}, &net.AddrError{Err: "the broadcast address cannot be the expected peer", Addr: address}
	}
	return a, nil
}

// A Listener is a [net.Listener] whose connections arrive at a SOCKS proxy:
// the address it listens on is the proxy's, and each accepted connection is
// relayed by the proxy from a peer. Create one with [Dialer.Listen] or
// [ListenConfig.Listen]. Accept, Close and the other methods may be called
// from several goroutines at once.
//
// # The BIND cycle
//
// One BIND request carries one connection. A goroutine of the listener owns
// the cycle: it waits for the proxy's second reply, which names the peer,
// hands the connection over to Accept, and at once sends the next BIND,
// asking for the same port, so that the time in which a peer would be
// refused is as short as the protocol allows. A connection that arrives
// while no Accept waits is held for the next one (a backlog of one, as a
// kernel listener's queue) with none of its bytes lost; while it is held
// the listener keeps one BIND armed, and takes no further peer once that
// one has come.
//
// Whether the proxy grants the same port decides the address:
//
//   - A listener created with a specific port keeps that port. If the
//     proxy binds another (Dante does while the last connection holds the
//     port, or while the port sits in TIME_WAIT), the listener releases it
//     and tries again, as for any trouble that may pass.
//   - A listener created with port 0 follows the proxy: Addr reports the
//     address of the BIND now waiting, and [ListenConfig.Armed] is told
//     each time one waits.
//   - A listener created with [ListenConfig.Once] does not re-arm.
//
// An idle listener costs one goroutine and its control connection to the
// proxy.
//
// # What Accept returns
//
// Accept returns a connection, a timeout, an error matching
// [net.ErrClosed] after Close, or a permanent error once retrying cannot
// help. Trouble that may pass is retried inside the listener, with a wait
// that starts at 5 ms and doubles up to 1 s (what [net/http.Server] uses),
// reported to [ListenConfig.Retrying] and never returned:
//
//	failure                                          the listener
//	proxy bound another port than a fixed one        retries
//	failed second reply (peer turned away), cut      retries
//	general failure, network or host unreachable,    retries
//	  connection refused, TTL expired (codes 1, 3-6)
//	proxy unreachable, restarting, silent, timed out retries
//	not allowed (2), command not supported (7),      fails: permanent
//	  address type not supported (8)
//	authentication rejected, no acceptable method,   fails: permanent
//	  bytes that are not SOCKS 5
//	retrying for longer than [ListenConfig.RetryLimit] fails: permanent
//	any failure with Once                            fails: permanent
//
// Every BIND the listener sends on its own is bounded by
// [Dialer.HandshakeTimeout]; the wait for a peer has no bound but the
// caller's (the deadline of [Listener.SetDeadline], the context of
// [Listener.AcceptContext]) and Close. When either ends the wait, Accept
// returns an error whose Timeout method reports true and the BIND stays
// pending. A permanent error is returned by every later Accept, once the
// connections already held are taken. Errors are [*net.OpError] with Op
// "accept"; the permanent ones wrap what the proxy said, so the sentinels
// of this package match them.
type Listener struct {
	cfg     ListenConfig
	network string
	want    Addr // the BIND request's DST
	fixed   bool // a port was asked for: keep it

	// Set once, before the goroutine starts or before it closes failed.
	life   context.Context // ends on Close; bounds the goroutine's I/O
	cancel context.CancelFunc
	err    error // why the listener failed, once failed is closed

	conns    chan net.Conn // the goroutine's results; Accept takes them
	closed   chan struct{} // closed by Close
	failed   chan struct{} // closed when the listener gives up
	loopDone chan struct{} // closed when the goroutine has returned
	sess     *smux.Session // a multiplexed listener's session, or nil

	deadline  acceptDeadline
	closeOnce sync.Once

	// rearmAuth is the method the proxy chose for the last BIND, which
	// re-arms offer alone, pipelined; nil until a BIND succeeds, and
	// after a pipelined re-arm failed before its reply. Used by arm only,
	// which runs in Listen and then on the listener's goroutine.
	rearmAuth Authenticator

	mu     sync.Mutex // guards addr and port, and inHook
	addr   Addr       // the advertised address of the pending (or last) BIND
	port   uint16     // the port the proxy bound last
	inHook bool       // the goroutine is calling Armed or Retrying
}

// bind is one BIND request that got its first reply.
type bind struct {
	c    net.Conn
	port uint16 // the port the proxy bound
	addr Addr   // what the listener advertises for it
}

// Addr returns the address the proxy bound for the BIND now waiting: a
// [*net.TCPAddr] when the proxy reports an IP address. An unspecified
// address (0.0.0.0, ::) is replaced by the proxy's own IP address, and any
// address by [ListenConfig.AdvertiseIP] when set.
func (l *Listener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return netAddr(l.addr)
}

// Multiplexed reports whether the listener uses GOST's multiplexed BIND
// (see [ListenConfig.Multiplex]): every peer arrives at one address,
// concurrently, with no re-arming.
func (l *Listener) Multiplexed() bool { return l.sess != nil }

// Accept waits for a peer and returns the relayed connection, a [*Conn]
// whose RemoteAddr is the peer and LocalAddr the bound address. See
// [Listener] for what else it returns.
func (l *Listener) Accept() (net.Conn, error) {
	return l.AcceptContext(context.Background())
}

// AcceptContext is Accept bounded by ctx as well as by the deadline of
// [Listener.SetDeadline]. When ctx ends the wait, the error wraps ctx's
// error, and the BIND stays pending for the next call.
func (l *Listener) AcceptContext(ctx context.Context) (net.Conn, error) {
	if l.isClosed() {
		return nil, l.opErr(net.ErrClosed)
	}
	select {
	case c := <-l.conns:
		return l.handOver(c)
	default:
	}
	select {
	case c := <-l.conns:
		return l.handOver(c)
	case <-l.closed:
		return nil, l.opErr(net.ErrClosed)
	case <-l.failed:
		select {
		case c := <-l.conns: // held before the listener gave up
			return l.handOver(c)
		default:
		}
		if l.isClosed() {
			return nil, l.opErr(net.ErrClosed)
		}
		return nil, l.opErr(&acceptError{err: l.err})
	case <-ctx.Done():
		return nil, l.opErr(&acceptError{err: ctx.Err(), temporary: true})
	case <-l.deadline.wait():
		return nil, l.opErr(&acceptError{err: os.ErrDeadlineExceeded, temporary: true})
	}
}

// handOver returns c to Accept's caller, unless Close came first.
func (l *Listener) handOver(c net.Conn) (net.Conn, error) {
	if l.isClosed() {
		c.Close()
		return nil, l.opErr(net.ErrClosed)
	}
	return c, nil
}

// SetDeadline sets the deadline for Accept, as on [*net.TCPListener]: an
// Accept waiting when it passes returns an error whose Timeout method
// reports true, and the BIND stays pending. A zero t means no deadline.
func (l *Listener) SetDeadline(t time.Time) error {
	if l.isClosed() {
		return &net.OpError{Op: "set", Net: l.network, Addr: l.Addr(), Err: net.ErrClosed}
	}
	l.deadline.set(t)
	return nil
}

// Close stops the listener: the proxy's pending BIND is cancelled (a peer
// connecting afterwards is refused), a BIND in progress is abandoned, a
// connection held for Accept is closed, and every blocked Accept returns an
// error matching [net.ErrClosed]. It returns once nothing of the listener's
// is left running, except when called from Armed or Retrying: the
// listener's goroutine then ends as soon as the callback returns.
// Connections already accepted through standard BIND stay open; those of a
// multiplexed listener are streams of its session, which Close ends, so
// they end with it. Close is idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		close(l.closed) // no callback starts from now on
		inHook := l.inHook
		l.mu.Unlock()
		l.cancel()
		if l.sess != nil {
			l.sess.Close() // ends AcceptStream; the proxy closes its port
		}
		l.deadline.stop()
		if !inHook {
			<-l.loopDone
		}
		l.drain()
	})
	return nil
}

// drain closes a connection held for an Accept that will not come.
func (l *Listener) drain() {
	select {
	case c := <-l.conns:
		c.Close()
	default:
	}
}

func (l *Listener) isClosed() bool { return isDone(l.closed) }

func (l *Listener) opErr(err error) error {
	return &net.OpError{Op: "accept", Net: l.network, Source: l.cfg.Dialer.proxyAddr(), Addr: l.Addr(), Err: err}
}

// run is the listener's goroutine: it owns b and every BIND after it.
func (l *Listener) run(b *bind) {
	defer close(l.loopDone)
	var r retrier
	for b != nil {
		c, err := l.waitPeer(b)
		switch {
		case l.isClosed():
			if c != nil {
				c.Close()
			}
			l.drain() // a connection held after Close's own drain
			return
		case err != nil && l.cfg.Once:
			l.fail(err)
			return
		case err != nil:
			if !r.wait(l, err) {
				return
			}
		default:
			select {
			case l.conns <- c:
			case <-l.closed:
				c.Close()
				return
			}
			if l.cfg.Once {
				return
			}
			r.reset()
		}
		b = l.rearm(&r)
	}
}

// waitPeer reads the second reply of b and returns its connection, or
// closes it. Only Close bounds the wait.
func (l *Listener) waitPeer(b *bind) (net.Conn, error) {
	w := deadlines.Start(l.life, b.c, time.Time{})
	rep, peer, err := readReply(b.c, nil)
	err = w.Done(err)
	switch {
	case err != nil:
		err = l.bindErr(wire.AtStage("BIND reply 2", err))
	case rep != ReplySucceeded:
		err = l.bindErr(peerError{peerReplyError(rep, peer)})
	default:
		return &Conn{Conn: b.c, local: b.addr, remote: peer}, nil
	}
	b.c.Close()
	return nil, err
}

// rearm sends BINDs until one is armed, waiting between attempts as r says.
// It returns nil when the listener is closed or has given up.
func (l *Listener) rearm(r *retrier) *bind {
	for {
		b, err := l.arm(l.life)
		switch {
		case l.isClosed():
			if b != nil {
				b.c.Close()
			}
			return nil
		case err == nil:
			l.mu.Lock()
			l.addr, l.port = b.addr, b.port
			l.mu.Unlock()
			l.callback(func() { l.cfg.Armed(netAddr(b.addr)) }, l.cfg.Armed != nil)
			return b
		case !r.wait(l, err):
			return nil
		}
	}
}

// fail makes the listener give up with err, which Accept wraps in an
// error of its own.
func (l *Listener) fail(err error) {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err
	}
	l.err = err
	close(l.failed)
}

// callback runs f, a callback of the config, unless Close has begun.
func (l *Listener) callback(f func(), set bool) {
	if !set {
		return
	}
	l.mu.Lock()
	if l.isClosed() {
		l.mu.Unlock()
		return
	}
	l.inHook = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.inHook = false
		l.mu.Unlock()
	}()
	f()
}

// retrier paces the retries of the listener's goroutine.
type retrier struct {
	since time.Time     // the first failure since the last connection
	delay time.Duration // the last wait
}

const (
	firstRetryDelay = 5 * time.Millisecond
	maxRetryDelay   = time.Second
)

func (r *retrier) reset() { *r = retrier{} }

// wait handles err: it gives the listener up when err is permanent or the
// retry limit has passed, and otherwise reports err and waits before the
// next attempt. It returns false when the listener must stop.
func (r *retrier) wait(l *Listener, err error) bool {
	if l.isClosed() {
		return false
	}
	now := time.Now()
	if r.since.IsZero() {
		r.since = now
	}
	if permanent(err) || (l.cfg.RetryLimit > 0 && now.Sub(r.since) >= l.cfg.RetryLimit) {
		l.fail(err)
		return false
	}
	r.delay = min(max(2*r.delay, firstRetryDelay), maxRetryDelay)
	if l.cfg.RetryLimit > 0 {
		r.delay = min(r.delay, max(time.Until(r.since.Add(l.cfg.RetryLimit)), 0))
	}
	l.callback(func() { l.cfg.Retrying(err, r.delay) }, l.cfg.Retrying != nil)
	t := time.NewTimer(r.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.closed:
		return false
	}
}

// permanent reports a failure that retrying cannot mend: a refusal by the
// proxy's policy, or a proxy that does not speak SOCKS 5.
func permanent(err error) bool {
	var pe peerError
	if errors.As(err, &pe) {
		return false // a peer turned away: the next one may do
	}
	return errors.Is(err, ErrNotAllowed) || errors.Is(err, ErrCommandNotSupported) ||
		errors.Is(err, ErrAddressNotSupported) || errors.Is(err, ErrAuthRejected) ||
		errors.Is(err, ErrNoAcceptableAuth) || errors.Is(err, ErrProtocolViolation)
}

// arm sends one BIND and reads its first reply. A listener with a fixed port
// releases a different port at once.
func (l *Listener) arm(ctx context.Context) (*bind, error) {
	want := l.want
	if !l.fixed && want.IP.IsUnspecified() {
		// Follow mode asks for the port it had, which keeps the
		// address when the proxy can.
		l.mu.Lock()
		want.Port = l.port
		l.mu.Unlock()
	}
	d := l.cfg.Dialer
	pipeline, auth := d.Pipeline, []Authenticator(nil)
	if l.rearmAuth != nil {
		pipeline, auth = true, []Authenticator{l.rearmAuth}
	}
	c, bnd, chosen, err := d.handshake(ctx, CmdBind, l.network, want, pipeline, auth)
	if err != nil {
		if l.rearmAuth != nil && !d.Pipeline && beforeReply(err) {
			l.rearmAuth = nil // the proxy cannot take it: wait for each answer
		}
		return nil, err
	}
	if l.rearmAuth == nil && pipelineMethod([]Authenticator{chosen}) != nil {
		// The proxy has answered a BIND with this method: re-arms
		// send it alone, pipelined.
		l.rearmAuth = chosen
	}
	if l.fixed && bnd.Port != l.want.Port {
		c.Close()
		return nil, l.bindErr(fmt.Errorf("%w: asked for port %d, got %d", ErrAddressInUse, l.want.Port, bnd.Port))
	}
	return &bind{c: c, port: bnd.Port, addr: l.advertise(c, bnd)}, nil
}

// beforeReply reports a handshake that failed before the proxy's reply to
// the request: in the greeting or the authentication, or with bytes that
// are not SOCKS.
func beforeReply(err error) bool {
	var se *wire.StageError
	if errors.As(err, &se) && (se.Stage == stageGreeting || se.Stage == stageAuth) {
		return true
	}
	return errors.Is(err, ErrProtocolViolation)
}

// bindErr is err as the error of a BIND request.
func (l *Listener) bindErr(err error) error { return l.cmdErr(CmdBind, err) }

// cmdErr is err as the error of a request with cmd.
func (l *Listener) cmdErr(cmd Command, err error) error {
	return &net.OpError{Op: "socks " + cmd.String(), Net: l.network, Source: l.cfg.Dialer.proxyAddr(), Addr: netAddr(l.want), Err: err}
}

// advertise is the address peers should use for what the proxy bound.
func (l *Listener) advertise(c net.Conn, bnd Addr) Addr {
	switch {
	case l.cfg.AdvertiseIP.IsValid():
		bnd.IP, bnd.Name = l.cfg.AdvertiseIP, ""
	case bnd.Name == "" && (!bnd.IP.IsValid() || bnd.IP.IsUnspecified()):
		bnd.IP, bnd.Name = l.proxyIP(c)
	}
	return bnd
}

// proxyIP is the proxy's own address: from the Dialer's ProxyAddress, or,
// when that is a name and the proxy is reached directly, from the control
// connection. Otherwise the name itself.
func (l *Listener) proxyIP(c net.Conn) (netip.Addr, string) {
	pa, err := parseAddr(l.cfg.Dialer.ProxyAddress)
	if err == nil && pa.IP.IsValid() {
		return pa.IP, ""
	}
	if f := l.cfg.Dialer.Forward; f == nil || f == proxy.Direct {
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip, _ := netip.AddrFromSlice(ta.IP)
			return ip.Unmap(), ""
		}
	}
	return netip.Addr{}, pa.Name
}

// peerError is a failed second reply: it concerns one peer only.
type peerError struct{ error }

func (e peerError) Unwrap() error { return e.error }

// acceptError says whether an Accept error is worth a retry. It is always
// there, so that [net.OpError.Temporary] never guesses from an errno that
// the listener is alive when it is not.
type acceptError struct {
	err       error
	temporary bool
}

func (e *acceptError) Error() string   { return e.err.Error() }
func (e *acceptError) Unwrap() error   { return e.err }
func (e *acceptError) Temporary() bool { return e.temporary }
func (e *acceptError) Timeout() bool   { return isTimeout(e.err) }
