package socksbind

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind/internal/deadlines"
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
	// program while the connection is being served.
	Once bool

	// Multiplex selects standard BIND (the zero value), GOST's
	// multiplexed BIND, or whichever the proxy supports.
	Multiplex Multiplex

	// AdvertiseIP, when valid, replaces the IP address of every address
	// the proxy binds, for a proxy behind NAT that reports an address its
	// peers cannot reach.
	AdvertiseIP netip.Addr

	// Armed, when not nil, is called each time the listener has re-armed,
	// with the address of the BIND now waiting for a peer: the moment a
	// peer can connect, and where. In follow mode (port 0) the address may
	// differ from the previous one; Addr reports it from then on. Armed
	// runs on the listener's re-arming goroutine or in Accept. It may call
	// Close, which does not wait for it; it is not called once the
	// listener is closed.
	Armed func(net.Addr)
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
// returns, expiry of the context has no effect on the listener.
//
// Errors are [*net.OpError] with Op "socks bind"; see [Dialer.DialContext].
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (*Listener, error) {
	d := lc.Dialer
	if d == nil {
		return nil, &net.OpError{Op: "socks bind", Net: network, Addr: addrText(address), Err: errors.New("ListenConfig without a Dialer")}
	}
	want, err := bindTarget(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "socks bind", Net: network, Source: d.proxyAddr(), Addr: addrText(address), Err: err}
	}
	life, cancel := context.WithCancel(context.Background())
	l := &Listener{
		cfg:       *lc,
		network:   network,
		want:      want,
		fixedPort: want.Port != 0 && want.IP.IsUnspecified(),
		token:     make(chan struct{}, 1),
		closed:    make(chan struct{}),
		dlCh:      make(chan struct{}),
		life:      life,
		cancel:    cancel,
	}
	b, err := l.arm(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	l.pending, l.addr, l.port = b, b.addr, b.port
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
// [ListenConfig.Listen].
//
// One BIND request carries one connection. After each connection the
// listener re-arms: it sends a new BIND, asking for the same port, as soon
// as the proxy reports the peer, so that the time in which a peer would be
// refused is as short as the protocol allows. Whether the proxy grants the
// same port decides what happens next:
//
//   - A listener created with a specific port keeps that port. If a re-armed
//     BIND gets another, the listener releases it at once, and Accept
//     returns an error matching [ErrAddressInUse] whose Temporary method
//     reports true, as [net/http.Server.Serve] expects of an error worth a
//     retry. Each later Accept tries again, and serving resumes on the same
//     address once the proxy can bind it.
//   - A listener created with port 0 follows the proxy: Addr always
//     reports the address of the BIND now waiting, and
//     [ListenConfig.Armed] is told each time one waits, with its address.
//   - A listener created with [ListenConfig.Once] does not re-arm.
//
// Accept and Close may be called from several goroutines at once.
type Listener struct {
	cfg       ListenConfig
	network   string
	want      Addr // the BIND request's DST
	fixedPort bool

	// token is held by the one Accept that may use the pending BIND.
	token chan struct{}

	life   context.Context // ends on Close; bounds re-arms
	cancel context.CancelFunc
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup // the re-arm goroutine

	mu        sync.Mutex
	pending   *bind         // the BIND waiting for a peer, or nil
	armDone   chan struct{} // closed when the re-arm in progress settles
	armErr    error         // a temporary re-arm failure, for the next Accept
	used      bool          // Once: the connection has been accepted
	dead      error         // the permanent error of a dead listener
	addr      Addr          // the advertised address of the pending (or last) BIND
	port      uint16        // the port the proxy bound last
	deadline  time.Time
	dlTimer   *time.Timer
	dlCh      chan struct{} // closed when deadline passes
	reading   *bind         // the BIND whose reply 2 an Accept is reading
	abortRead bool          // the reading Accept's context is done
}

// bind is one BIND request that got its first reply.
type bind struct {
	c    net.Conn
	port uint16 // the port the proxy bound
	addr Addr   // what the listener advertises for it
	// reply2 holds the bytes of the second reply read so far, so a read
	// cut short by a deadline resumes where it stopped.
	reply2 resumable
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

// Accept waits for the proxy's second reply, which reports a peer, and
// returns the relayed connection, a [*Conn] whose RemoteAddr is the peer
// and LocalAddr the bound address. See [Listener.AcceptContext].
func (l *Listener) Accept() (net.Conn, error) {
	return l.AcceptContext(context.Background())
}

// AcceptContext is Accept bounded by ctx as well as by the deadline of
// [Listener.SetDeadline]. The proxy sets no time limit on a waiting BIND,
// so these and Close are the only bounds there are. When ctx or the
// deadline ends the wait, the BIND stays pending for the next call.
//
// Errors are [*net.OpError] with Op "accept". After Close the error
// matches [net.ErrClosed]. A failed second reply (the proxy turned the peer
// away, or failed) carries a [*ReplyError] with the peer's address; it is
// temporary, in the sense of [net.Error], only when the listener could
// re-arm and go on. A listener whose proxy is gone returns a permanent
// error from then on.
func (l *Listener) AcceptContext(ctx context.Context) (net.Conn, error) {
	if err := l.acquire(ctx); err != nil {
		return nil, l.opErr(err)
	}
	defer func() { <-l.token }()
	c, err := l.accept(ctx)
	if err != nil {
		if l.isClosed() {
			// Whatever woke the call, a closed listener says so.
			err = net.ErrClosed
		}
		return nil, l.opErr(err)
	}
	return c, nil
}

// acquire takes the token, unless the listener closes or the wait ends.
func (l *Listener) acquire(ctx context.Context) error {
	select {
	case l.token <- struct{}{}:
		return nil
	default:
	}
	select {
	case l.token <- struct{}{}:
		return nil
	case <-l.closed:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	case <-l.deadlineCh():
		return l.timeout()
	}
}

// accept runs with the token held.
func (l *Listener) accept(ctx context.Context) (net.Conn, error) {
	for {
		b, err := l.waitPending(ctx)
		if err != nil {
			return nil, err
		}
		peer, err := l.readReply2(ctx, b)
		if err == nil {
			return l.accepted(b, peer)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if isTimeout(err) && l.deadlinePassed() {
			return nil, l.timeout()
		}
		if isTimeout(err) {
			continue // the deadline moved while reading
		}
		return nil, l.reply2Failed(ctx, b, err)
	}
}

// waitPending returns the BIND waiting for a peer, waiting for the re-arm
// in progress or re-arming now when there is none.
func (l *Listener) waitPending(ctx context.Context) (*bind, error) {
	for {
		l.mu.Lock()
		b, dead, armDone, used := l.pending, l.dead, l.armDone, l.used
		armErr := l.armErr
		l.armErr = nil
		l.mu.Unlock()
		var wait <-chan struct{}
		switch {
		case l.isClosed():
			return nil, net.ErrClosed
		case dead != nil:
			return nil, dead
		case b != nil:
			return b, nil
		case armErr != nil:
			return nil, armErr
		case used:
			wait = l.closed // Once: the one connection was accepted
		case armDone != nil:
			wait = armDone
		default:
			// The last re-arm failed for a reason that may pass (a
			// wrong port, or a wait cut short): try again here.
			if err := l.rearmHere(ctx); err != nil {
				return nil, err
			}
			continue
		}
		select {
		case <-wait:
		case <-l.closed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.deadlineCh():
			return nil, l.timeout()
		}
	}
}

// rearmHere re-arms on the caller's goroutine. A re-arm cut short by the
// caller's context or deadline leaves the listener as it was, to re-arm at
// the next call; any other outcome is settled.
func (l *Listener) rearmHere(ctx context.Context) error {
	actx, cancel := l.bounded(ctx)
	defer cancel()
	b, err := l.arm(actx)
	// The connection's deadline can fire a moment before actx reports
	// it, so the error itself is asked too.
	cut := actx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
	if err != nil && cut && !l.isClosed() {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case l.deadlinePassed():
			return l.timeout()
		}
		return context.DeadlineExceeded // ctx's, a moment early
	}
	l.notifyArmed(l.settle(b, err, nil))
	return nil
}

// settle makes b the pending BIND, or records why a re-arm failed: a wrong
// port on a fixed-port listener is temporary, anything else is fatal. done
// is the re-arm goroutine's, or nil on the caller's goroutine. It returns
// the address to tell Armed, if any.
func (l *Listener) settle(b *bind, err error, done chan struct{}) (armed net.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if done != nil && l.armDone == done {
		l.armDone = nil
	}
	switch {
	case l.isClosed() || (err == nil && l.pending != nil):
		// Closed, or (never expected) a BIND already waits: this one
		// would be orphaned.
		if b != nil {
			b.c.Close()
		}
	case err != nil && l.fixedPort && errors.Is(err, ErrAddressInUse):
		l.armErr = &acceptError{err: err, temporary: true}
	case err != nil:
		if l.dead == nil {
			l.dead = &acceptError{err: err}
		}
	default:
		l.pending, l.port, l.addr = b, b.port, b.addr
		armed = netAddr(b.addr)
	}
	return armed
}

// notifyArmed calls Armed, unless the listener is closed.
func (l *Listener) notifyArmed(a net.Addr) {
	if a != nil && l.cfg.Armed != nil && !l.isClosed() {
		l.cfg.Armed(a)
	}
}

// accepted hands the pending BIND's connection over and re-arms. A Close
// that came first has closed the connection: the caller gets ErrClosed.
func (l *Listener) accepted(b *bind, peer Addr) (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = nil
	if l.isClosed() {
		b.c.Close()
		return nil, net.ErrClosed
	}
	if l.cfg.Once {
		l.used = true
	} else {
		l.startRearm()
	}
	return &Conn{Conn: b.c, local: b.addr, remote: peer}, nil
}

// startRearm sends the next BIND from a goroutine the listener owns; Close
// cancels it and waits for it, but not for Armed, which may call Close.
// l.mu is held.
func (l *Listener) startRearm() {
	done := make(chan struct{})
	l.armDone = done
	l.wg.Add(1)
	go func() {
		b, err := l.arm(l.life)
		armed := l.settle(b, err, done)
		close(done)
		l.wg.Done()
		l.notifyArmed(armed)
	}()
}

// reply2Failed handles a second reply that was a failure or never came.
// After a failure reply a listener that can re-arm goes on, and the error is
// temporary if the re-arm worked or may work at the next call.
func (l *Listener) reply2Failed(ctx context.Context, b *bind, err error) error {
	b.c.Close()
	l.mu.Lock()
	l.pending = nil
	l.mu.Unlock()
	if l.isClosed() {
		return net.ErrClosed
	}
	var re *ReplyError
	if !errors.As(err, &re) || l.cfg.Once {
		return l.kill(err)
	}
	cut := l.rearmHere(ctx) // a cut re-arm is retried at the next call
	l.mu.Lock()
	alive := cut != nil || l.pending != nil || l.armErr != nil
	l.armErr = nil
	l.mu.Unlock()
	if !alive {
		// The re-arm failed for good: the listener is dead, and this
		// call still reports the peer's failure.
		l.kill(err)
		return &acceptError{err: err}
	}
	return &acceptError{err: err, temporary: true}
}

// kill marks the listener dead with a permanent error.
func (l *Listener) kill(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead == nil {
		l.dead = &acceptError{err: err}
	}
	return l.dead
}

// arm sends one BIND and reads its first reply. A listener with a fixed port
// releases a different port at once.
func (l *Listener) arm(ctx context.Context) (*bind, error) {
	want := l.want
	if !l.fixedPort && want.IP.IsUnspecified() {
		// Follow mode asks for the port it had, which keeps the
		// address when the proxy can.
		l.mu.Lock()
		want.Port = l.port
		l.mu.Unlock()
	}
	c, bnd, err := l.cfg.Dialer.open(ctx, CmdBind, l.network, want)
	if err != nil {
		return nil, err
	}
	if l.fixedPort && bnd.Port != l.want.Port {
		c.Close()
		return nil, &net.OpError{Op: "socks bind", Net: l.network, Source: l.cfg.Dialer.proxyAddr(), Addr: netAddr(want),
			Err: fmt.Errorf("%w: asked for port %d, got %d", ErrAddressInUse, l.want.Port, bnd.Port)}
	}
	return &bind{c: c, port: bnd.Port, addr: l.advertise(c, bnd)}, nil
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

// readReply2 reads the second reply of b on the caller's goroutine, under
// ctx and the listener's deadline.
func (l *Listener) readReply2(ctx context.Context, b *bind) (Addr, error) {
	l.mu.Lock()
	l.reading, l.abortRead = b, false
	l.applyDeadline()
	l.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.abortRead = true
		l.applyDeadline()
		l.mu.Unlock()
	})
	b.reply2.begin(b.c)
	rep, peer, err := wire.ReadReply(&b.reply2, nil)
	stop()
	l.mu.Lock()
	l.reading = nil
	l.mu.Unlock()
	if err != nil {
		return Addr{}, err
	}
	b.reply2.done()
	b.c.SetReadDeadline(time.Time{})
	if rep != ReplySucceeded {
		return Addr{}, peerReplyError(rep, peer)
	}
	return peer, nil
}

// applyDeadline sets the read deadline of the BIND being read. l.mu is held.
func (l *Listener) applyDeadline() {
	if l.reading == nil {
		return
	}
	if l.abortRead {
		l.reading.c.SetReadDeadline(deadlines.LongAgo)
		return
	}
	l.reading.c.SetReadDeadline(l.deadline)
}

// SetDeadline sets the deadline for Accept, as on [*net.TCPListener]: an
// Accept waiting when it passes returns an error whose Timeout method
// reports true, and the BIND stays pending. A zero t means no deadline.
func (l *Listener) SetDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isClosed() {
		return &net.OpError{Op: "set", Net: l.network, Addr: netAddr(l.addr), Err: net.ErrClosed}
	}
	l.deadline = t
	if l.dlTimer != nil && !l.dlTimer.Stop() {
		<-l.dlCh // the timer fired: wait until it has closed the channel
	}
	l.dlTimer = nil
	if isDone(l.dlCh) {
		// Waiters on a channel not closed yet keep it: they see the
		// new deadline through it.
		l.dlCh = make(chan struct{})
	}
	if !t.IsZero() {
		ch := l.dlCh
		if d := time.Until(t); d <= 0 {
			close(ch)
		} else {
			l.dlTimer = time.AfterFunc(d, func() { close(ch) })
		}
	}
	l.applyDeadline()
	return nil
}

// deadlineCh is closed when the deadline passes. A waiter keeps the same
// channel when SetDeadline sets a deadline later, so it sees that one too.
func (l *Listener) deadlineCh() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dlCh
}

func (l *Listener) deadlinePassed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.deadline.IsZero() && !time.Now().Before(l.deadline)
}

func (l *Listener) timeout() error {
	return &acceptError{err: os.ErrDeadlineExceeded, temporary: true}
}

// bounded is ctx, also ended by Close and by the listener's deadline, as it
// is now or as SetDeadline sets it later.
func (l *Listener) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stopLife := context.AfterFunc(l.life, cancel)
	dl := l.deadlineCh()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-dl:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { stopLife(); cancel(); <-watched }
}

// Close stops the listener: the proxy's pending BIND is cancelled (a peer
// connecting afterwards is refused), every blocked Accept returns an error
// matching [net.ErrClosed], and a re-arm in progress is abandoned. It
// returns once nothing of the listener's is left running. Connections
// already accepted stay open. Close is idempotent.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		close(l.closed)
		l.cancel()
		if l.pending != nil {
			l.pending.c.Close()
			l.pending = nil
		}
		if l.reading != nil {
			l.reading.c.Close()
		}
		if l.dlTimer != nil {
			l.dlTimer.Stop()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return nil
}

func (l *Listener) isClosed() bool { return isDone(l.closed) }

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (l *Listener) opErr(err error) error {
	return &net.OpError{Op: "accept", Net: l.network, Source: l.cfg.Dialer.proxyAddr(), Addr: l.Addr(), Err: err}
}

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

// resumable reads a reply from a connection and keeps what it read, so that
// an attempt cut short by a deadline can be replayed and continued.
type resumable struct {
	c   net.Conn
	buf []byte
	off int
}

func (r *resumable) begin(c net.Conn) { r.c, r.off = c, 0 }
func (r *resumable) done()            { r.buf, r.off = nil, 0 }

func (r *resumable) Read(p []byte) (int, error) {
	if r.off < len(r.buf) {
		n := copy(p, r.buf[r.off:])
		r.off += n
		return n, nil
	}
	n, err := r.c.Read(p)
	r.buf = append(r.buf, p[:n]...)
	r.off += n
	return n, err
}

var _ io.Reader = (*resumable)(nil)
