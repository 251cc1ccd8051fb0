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

	"github.com/socksbind/socksbind/internal/goid"
	"github.com/socksbind/socksbind/internal/netutil"
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
	// is returned from Accept, as a permanent error. Once takes standard
	// BIND: with [MultiplexAuto] it sends no MBIND, and Listen refuses it
	// with [MultiplexOn].
	Once bool

	// Multiplex selects standard BIND (the zero value), GOST's
	// multiplexed BIND, or whichever the proxy supports.
	Multiplex Multiplex

	// Backlog bounds the connections a multiplexed listener holds for
	// Accept, as the backlog of listen(2) does: a peer arriving while
	// Backlog connections wait is closed at once, counted, and reported to
	// Retrying, and the listener goes on. Zero means 4096, Linux's default
	// somaxconn. A standard BIND listener holds one connection (one BIND
	// carries one); Listen refuses a Backlog with [MultiplexOff], and with
	// [MultiplexAuto] it applies when the proxy has MBIND.
	Backlog int

	// AdvertiseIP, when valid, replaces the IP address of every address
	// the proxy binds, for a proxy behind NAT that reports an address its
	// peers cannot reach.
	AdvertiseIP netip.Addr

	// RetryLimit bounds how long the listener keeps retrying trouble that
	// may pass (see [Listener]) before it gives up: Accept then returns
	// the last error, as a permanent one. It counts from the first failure
	// since the listener last carried a connection (standard BIND) or had
	// a working session (MBIND). Zero means no limit: the listener retries
	// for as long as it is open.
	RetryLimit time.Duration

	// Armed, when not nil, is called each time the listener is armed
	// again: a standard BIND listener after each re-arm, a multiplexed one
	// when its session is back after a loss. It gets the address peers
	// can connect to from then on. In follow mode (port 0) the address may
	// differ from the previous one; Addr reports it from then on.
	//
	// Armed and Retrying run on the listener's goroutine and must not
	// block it: while they run, the listener waits, and so does a Close
	// called from another goroutine. They may call Close themselves.
	// Neither is called once Close has begun.
	Armed func(addr net.Addr)

	// Retrying, when not nil, is called each time the listener meets
	// trouble it handles on its own (err, which Accept does not return),
	// with the time it waits before the next attempt: for an operator's
	// log line such as "port 8080 unavailable at the proxy, retrying in
	// 1s". A peer the listener turned away (a failed second reply, a
	// stream without a valid header, a full backlog) is reported with a
	// wait of 0. See Armed for where it runs.
	Retrying func(err error, wait time.Duration)
}

// defaultBacklog is a multiplexed listener's backlog when
// ListenConfig.Backlog is zero: Linux's default somaxconn since 5.4.
const defaultBacklog = 4096

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
// misconfiguration shows at start. Options that do not fit the mode are
// refused.
//
// Errors are [*net.OpError] with Op "socks bind"; see [Dialer.DialContext].
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (*Listener, error) {
	if lc == nil || lc.Dialer == nil {
		return nil, &net.OpError{Op: "socks bind", Net: network, Addr: netutil.TextAddr(address), Err: errNilDialer}
	}
	d := lc.Dialer
	want, err := bindTarget(network, address)
	if err == nil {
		err = lc.check()
	}
	if err != nil {
		return nil, &net.OpError{Op: "socks bind", Net: network, Source: d.proxyAddr(), Addr: netutil.TextAddr(address), Err: err}
	}
	life, cancel := context.WithCancel(context.Background())
	l := &Listener{
		cfg:      *lc,
		network:  network,
		closed:   make(chan struct{}),
		failed:   make(chan struct{}),
		done:     make(chan struct{}),
		started:  make(chan struct{}),
		life:     life,
		cancel:   cancel,
		deadline: makeAcceptDeadline(),
	}
	eng, err := l.start(ctx, want)
	if err != nil {
		cancel()
		return nil, err
	}
	l.eng = eng
	go func() {
		defer close(l.done)
		l.engineID = goid.Current()
		close(l.started)
		eng.run()
	}()
	return l, nil
}

// check refuses the options that do not fit the mode.
func (lc *ListenConfig) check() error {
	switch {
	case lc.Multiplex < MultiplexOff || lc.Multiplex > MultiplexAuto:
		return fmt.Errorf("unknown %v", lc.Multiplex)
	case lc.Once && lc.Multiplex == MultiplexOn:
		return errors.New("Once carries one connection and a multiplexed BIND many: use MultiplexOff")
	case lc.Backlog < 0:
		return fmt.Errorf("negative Backlog %d", lc.Backlog)
	case lc.Backlog > 0 && (lc.Multiplex == MultiplexOff || lc.Once):
		return fmt.Errorf("Backlog %d needs a multiplexed BIND: a standard BIND holds one connection", lc.Backlog)
	}
	return nil
}

// start makes the first request of the mode and the engine that owns what
// follows.
func (l *Listener) start(ctx context.Context, want Addr) (engine, error) {
	if l.cfg.Multiplex != MultiplexOff && !l.cfg.Once {
		m, fallBack, err := startMux(ctx, l, want)
		if err != nil || !fallBack {
			return m, err
		}
	}
	return startBind(ctx, l, want)
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

// An engine owns the requests of one mode and the goroutines that serve
// them: bindEngine the re-arm cycle of standard BIND, muxEngine the
// sessions of GOST's multiplexed BIND. Its run is the listener's
// goroutine; it hands connections to the Listener through conns, calls the
// hooks through the Listener, watches the Listener's closed channel (and
// life context, which bounds its I/O), and returns once the listener is
// closed or has failed, with every goroutine of its own ended.
type engine interface {
	run()
	// conns is the channel of results Accept takes; its capacity is the
	// backlog.
	conns() chan net.Conn
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
// proxy. A multiplexed listener works otherwise: see [MultiplexOn].
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
//	MBIND session lost (EOF, reset, proxy silent)    asks again for the address
//	not allowed (2), command not supported (7),      fails: permanent
//	  address type not supported (8)
//	authentication rejected, no acceptable method,   fails: permanent
//	  bytes that are not SOCKS 5
//	retrying for longer than [ListenConfig.RetryLimit] fails: permanent
//	any failure with Once                            fails: permanent
//
// Every request the listener sends on its own is bounded by
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
	eng     engine // set before the goroutine starts

	life   context.Context // ends on Close; bounds the engine's I/O
	cancel context.CancelFunc

	closed chan struct{} // closed by Close
	failed chan struct{} // closed by fail, when the engine gives up
	err    error         // why, once failed is closed
	done   chan struct{} // closed when the engine's goroutine has returned

	started  chan struct{} // closed once engineID is set
	engineID uint64        // the goroutine running the engine and the hooks

	deadline  acceptDeadline
	closeOnce sync.Once

	mu   sync.Mutex // guards addr
	addr Addr       // the advertised address peers connect to
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

func (l *Listener) address() Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

func (l *Listener) setAddr(a Addr) {
	l.mu.Lock()
	l.addr = a
	l.mu.Unlock()
}

// Multiplexed reports whether the listener uses GOST's multiplexed BIND
// (see [ListenConfig.Multiplex]): every peer arrives at one address,
// concurrently, with no re-arming.
func (l *Listener) Multiplexed() bool {
	_, ok := l.eng.(*muxEngine)
	return ok
}

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
	conns := l.eng.conns()
	select {
	case c := <-conns:
		return l.handOver(c)
	case <-l.closed:
		return nil, l.opErr(net.ErrClosed)
	case <-l.failed:
		select {
		case c := <-conns: // held before the listener gave up
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
// connecting afterwards is refused), a request in progress is abandoned,
// the connections held for Accept are closed, and every blocked Accept
// returns an error matching [net.ErrClosed]. It returns once nothing of the
// listener's is left running: it waits for a hook that is running (which
// must not block). Called from Armed or Retrying, it returns at once, and
// the listener's goroutine ends as soon as the hook returns. Connections
// already accepted through standard BIND stay open; those of a multiplexed
// listener are streams of its session, which Close ends, so they end with
// it. Close is idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		close(l.closed) // no hook starts from now on (see hook)
		l.mu.Unlock()
		l.cancel()
		l.deadline.stop()
	})
	// Every Close waits, not only the first: a hook's Close and another
	// goroutine's may run at once.
	<-l.started
	if goid.Current() != l.engineID {
		<-l.done
		l.drain()
	}
	return nil
}

// drain closes the connections held for an Accept that will not come.
func (l *Listener) drain() {
	for {
		select {
		case c := <-l.eng.conns():
			c.Close()
		default:
			return
		}
	}
}

// drainIfClosed is drain for an engine that ends: after a hook's Close,
// which cannot wait for the engine, what came after its drain is closed
// here. A listener that failed keeps its connections for Accept.
func (l *Listener) drainIfClosed() {
	if l.isClosed() {
		l.drain()
	}
}

func (l *Listener) isClosed() bool { return isDone(l.closed) }

func (l *Listener) opErr(err error) error {
	return &net.OpError{Op: "accept", Net: l.network, Source: l.cfg.Dialer.proxyAddr(), Addr: l.Addr(), Err: err}
}

// fail makes the listener give up with err, which Accept wraps in an
// error of its own. Only the engine's goroutine calls it, once.
func (l *Listener) fail(err error) {
	l.err = unwrapOp(err)
	close(l.failed)
}

// unwrapOp is what an *net.OpError says, without its Op and addresses.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

// armed records addr as the listener's and tells Armed.
func (l *Listener) armed(a Addr) {
	l.setAddr(a)
	if f := l.cfg.Armed; f != nil {
		l.hook(func() { f(netAddr(a)) })
	}
}

// turnedAway tells Retrying of a peer the listener turned away.
func (l *Listener) turnedAway(err error) {
	if f := l.cfg.Retrying; f != nil {
		l.hook(func() { f(err, 0) })
	}
}

// hook runs f, a hook of the config, unless Close has begun. Only the
// engine's goroutine calls it, so that Close, which waits for that
// goroutine, also waits for the hook.
//
// Taking mu orders the hook after what the user's goroutines did under it
// (Addr, Listen's return), as the race detector sees it too: a hook may
// use a variable that was set to the Listener once Listen returned.
func (l *Listener) hook(f func()) {
	l.mu.Lock()
	closed := l.isClosed()
	l.mu.Unlock()
	if !closed {
		f()
	}
}

// retry handles err for an engine: it gives the listener up when err is
// permanent or b's limit has passed, and otherwise reports err and waits
// as b says. It returns false when the engine must stop.
func (l *Listener) retry(b *backoff, err error) bool {
	if l.isClosed() {
		return false
	}
	wait, ok := b.next(time.Now())
	if !ok || permanent(err) {
		l.fail(err)
		return false
	}
	if f := l.cfg.Retrying; f != nil {
		l.hook(func() { f(err, wait) })
	}
	t := time.NewTimer(wait)
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

// cmdErr is err as the error of a request with cmd for want.
func (l *Listener) cmdErr(cmd Command, want Addr, err error) error {
	return &net.OpError{Op: "socks " + cmd.String(), Net: l.network, Source: l.cfg.Dialer.proxyAddr(), Addr: netAddr(want), Err: err}
}

// fixedPort reports a BIND target that asks for a port the listener must
// keep: a non-zero port with any peer.
func fixedPort(want Addr) bool { return want.Port != 0 && want.IP.IsUnspecified() }

// checkPort fails a request the proxy answered with another port than the
// fixed one wanted, and closes its connection c.
func (l *Listener) checkPort(cmd Command, c net.Conn, want Addr, got uint16) error {
	if !fixedPort(want) || got == want.Port {
		return nil
	}
	c.Close()
	return l.cmdErr(cmd, want, fmt.Errorf("%w: asked for port %d, got %d", ErrAddressInUse, want.Port, got))
}

// advertise is the address peers should use for what the proxy bound.
func (l *Listener) advertise(c net.Conn, bnd Addr) Addr {
	switch {
	case l.cfg.AdvertiseIP.IsValid():
		bnd.IP, bnd.Name = l.cfg.AdvertiseIP, ""
	case bnd.Name == "" && (!bnd.IP.IsValid() || bnd.IP.IsUnspecified()):
		bnd.IP, bnd.Name = l.cfg.Dialer.proxyIP(c)
	}
	return bnd
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
func (e *acceptError) Timeout() bool   { return netutil.IsTimeout(e.err) }
