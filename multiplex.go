package socksbind

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"

	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/wire"
)

// Multiplex selects the command a [Listener] asks the proxy to listen with.
type Multiplex int

const (
	// MultiplexOff uses the standard BIND command of RFC 1928: one
	// connection per request, the listener re-arming after each.
	MultiplexOff Multiplex = iota

	// MultiplexOn uses GOST's multiplexed BIND (MBIND, command 0xF2): one
	// request, one port at the proxy, and every peer arriving as its own
	// stream over the control connection, an smux session. The listener
	// speaks the smux version the proxy opens the session with (GOST's
	// mux.version, 1 by default; 2 gives each stream flow control of its
	// own, so a peer the application does not read cannot hold up the
	// others). A proxy without MBIND fails Listen with an error matching
	// [ErrCommandNotSupported], or what its reply code says.
	//
	// The listener keeps taking streams whatever Accept does: each
	// stream's header (the SOCKS5 reply naming its peer) is read on a
	// goroutine of its own within [Dialer.HandshakeTimeout], with at most
	// 1024 (or the backlog, if larger) waiting for theirs, and ready
	// streams wait in a backlog ([ListenConfig.Backlog]); a stream beyond
	// either is closed at once. A session that ends (the proxy restarted,
	// reset, or sent nothing for 30 s while the listener waited for it;
	// a session that stops reading because the application does not read
	// is not silent) is asked for again for the same address,
	// with the listener's backoff, as a standard BIND is re-armed; Accept
	// blocks meanwhile, [ListenConfig.Retrying] is told why and
	// [ListenConfig.Armed] when the session is back. The streams of a lost
	// session fail with an error naming the loss.
	//
	// Each accepted connection is a stream: closing it closes only the
	// stream; Close of the listener ends the session and with it every
	// stream. A stream's read deadline works as a TCP connection's; its
	// write deadline is read when a Write starts, so moving it does not end
	// a Write already blocked on a full session. GOST passes no half-close
	// on: CloseWrite ends the stream there. A session costs smux's four
	// goroutines and one of the listener's on top of the listener's own.
	MultiplexOn

	// MultiplexAuto uses MBIND when the proxy has it and BIND otherwise.
	// The answer is learned once per [Dialer] and remembered.
	MultiplexAuto
)

func (m Multiplex) String() string {
	switch m {
	case MultiplexOff:
		return "off"
	case MultiplexOn:
		return "on"
	case MultiplexAuto:
		return "auto"
	}
	return "multiplex " + strconv.Itoa(int(m))
}

// MarshalText returns "off", "on" or "auto".
func (m Multiplex) MarshalText() ([]byte, error) {
	if m < MultiplexOff || m > MultiplexAuto {
		return nil, fmt.Errorf("socksbind: unknown %v", m)
	}
	return []byte(m.String()), nil
}

// UnmarshalText sets m from "off", "on" or "auto", or "mux", which means
// "on" (the word proxy URLs have long used: bind=mux). It is the parser of the
// setting wherever it is written: in a proxy URL's bind parameter, and,
// since a *Multiplex is an [encoding.TextUnmarshaler], in a flag
// ([flag.TextVar]) or a configuration file.
func (m *Multiplex) UnmarshalText(text []byte) error {
	switch string(text) {
	case "off":
		*m = MultiplexOff
	case "on", "mux":
		*m = MultiplexOn
	case "auto":
		*m = MultiplexAuto
	default:
		return fmt.Errorf("socksbind: unknown multiplex mode %q: want off, on or auto", text)
	}
	return nil
}

// The finding of [MultiplexAuto], kept in Dialer.mbind.
const (
	mbindUnknown int32 = iota
	mbindYes
	mbindNo
)

// muxSilence is how long a session may go without a byte from the proxy
// before it counts as lost: three of GOST's keep-alives (one every 10 s),
// its own limit. A variable for the tests.
var muxSilence = 30 * time.Second

// The buffers of a session (see muxConfig); variables for the benchmarks.
var (
	muxSessionBuffer = 16 << 20
	muxStreamBuffer  = 256 << 10
)

const (
	// muxReadBuffer is the buffer under a session's reads: smux reads
	// each frame's header and body apart.
	muxReadBuffer = 64 << 10
	// maxGreeting is how many streams may wait for their header at
	// once, at least: Linux's default tcp_max_syn_backlog for its queue
	// of half-open connections. The backlog raises it.
	maxGreeting = 1024
	// smuxNOP is smux's keep-alive command.
	smuxNOP = 3
	// muxProven is how long a session must have lived for its loss to
	// start the backoff afresh.
	muxProven = 10 * time.Second
)

// muxConfig is the smux configuration of a multiplexed listener for the
// protocol version the proxy speaks: GOST's keep-alive (a NOP every 10 s)
// and frame size. The listener watches the proxy's silence itself (see
// muxSilence); smux's own check, which notices in 30 to 60 s, is set past
// it. Buffers, which cost memory only while they hold unread bytes: a
// window of 256 KiB per stream at version 2, which BenchmarkMultiplexBulk
// measured at 1.3 times the throughput of smux's 64 KiB (1 MiB gave no
// more), and 16 MiB for the session, so that at version 2 it takes 64
// streams the application does not read to stall the session, where smux's
// default of 4 MiB would take 16.
func muxConfig(version int) *smux.Config {
	return &smux.Config{
		Version:           version,
		KeepAliveInterval: 10 * time.Second,
		KeepAliveTimeout:  60 * time.Second,
		MaxFrameSize:      32 << 10,
		MaxReceiveBuffer:  muxSessionBuffer,
		MaxStreamBuffer:   muxStreamBuffer,
	}
}

// muxEngine owns the sessions of a multiplexed listener: one at a time,
// asked for again when lost. Its goroutine (run) owns the session, its
// watchdog, the backoff and the reports to the hooks; the session's
// accepting goroutine and a greet goroutine per stream feed it.
type muxEngine struct {
	l    *Listener
	want Addr // the MBIND request's DST; its port is the bound one once known
	out  chan net.Conn
	// greeting bounds the streams whose header is still awaited, as a
	// kernel bounds its queue of half-open connections.
	greeting chan struct{}

	first net.Conn // the control connection Listen opened; run's from then on

	// What the other goroutines tell run: news wakes it, and it reports
	// the peers turned away since its last look.
	news    chan struct{}
	full    atomic.Int64 // streams closed because the backlog was full
	crowded atomic.Int64 // streams closed because too many headers were awaited
	badMu   sync.Mutex   // guards bad and nbad
	bad     error        // the first stream without a valid header
	nbad    int          // and how many there were
}

// startMux sends MBIND under ctx. For MultiplexAuto it reports fallBack
// when the proxy has no MBIND and a standard BIND should be tried instead.
func startMux(ctx context.Context, l *Listener, want Addr) (e *muxEngine, fallBack bool, err error) {
	d := l.cfg.Dialer
	auto := l.cfg.Multiplex == MultiplexAuto
	if auto && atomic.LoadInt32(&d.mbind) == mbindNo {
		return nil, true, nil
	}
	backlog := l.cfg.Backlog
	if backlog == 0 {
		backlog = defaultBacklog
	}
	e = &muxEngine{
		l:        l,
		want:     want,
		out:      make(chan net.Conn, backlog),
		greeting: make(chan struct{}, max(backlog, maxGreeting)),
		news:     make(chan struct{}, 1),
	}
	c, bnd, err := d.open(ctx, CmdMultiplexBind, l.network, want)
	if err != nil {
		unsupported := noMBIND(err)
		if unsupported {
			atomic.StoreInt32(&d.mbind, mbindNo)
		}
		var re *ReplyError
		if auto && (unsupported || errors.As(err, &re)) {
			return nil, true, nil // what BIND says is the answer
		}
		if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrCommandNotSupported) {
			err = e.err(fmt.Errorf("%w: the proxy closed the connection without a reply (no multiplexed BIND): %w", ErrCommandNotSupported, unwrapOp(err)))
		}
		return nil, false, err
	}
	atomic.StoreInt32(&d.mbind, mbindYes)
	addr, err := e.bound(c, bnd)
	if err != nil {
		return nil, false, err
	}
	e.first = c
	l.setAddr(addr)
	return e, false, nil
}

// bound checks the address the proxy bound for a session, and returns the
// one the listener advertises for it.
func (e *muxEngine) bound(c net.Conn, bnd Addr) (Addr, error) {
	if err := e.l.checkPort(CmdMultiplexBind, c, e.want, bnd.Port); err != nil {
		return Addr{}, err
	}
	e.want.Port = bnd.Port // a lost session asks for the same address
	return e.l.advertise(c, bnd), nil
}

// noMBIND reports an MBIND failure that says the proxy lacks the command:
// a close without a reply (Dante's answer to any unknown command) or reply
// 7, command not supported (microsocks).
func noMBIND(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrCommandNotSupported)
}

func (e *muxEngine) conns() chan net.Conn { return e.out }

// err is err as the error of an MBIND request.
func (e *muxEngine) err(err error) error { return e.l.cmdErr(CmdMultiplexBind, e.want, err) }

func (e *muxEngine) run() {
	l := e.l
	defer l.drainIfClosed()
	c := e.first
	e.first = nil
	b := backoff{limit: l.cfg.RetryLimit}
	for c != nil {
		up := time.Now()
		err := e.serve(c)
		if err == nil { // closed
			return
		}
		if time.Since(up) >= muxProven {
			b.reset() // the pace starts afresh after a session that lasted
		}
		c = e.reconnect(&b, err)
	}
}

// serve runs one session over c until it ends, and returns why: nil when
// the listener was closed.
func (e *muxEngine) serve(c net.Conn) error {
	s := newMuxSession(e, c)
	dog := time.NewTimer(muxSilence)
	defer dog.Stop()
	for {
		select {
		case <-s.ended:
			s.close(nil)
			e.purge()
			e.report()
			return e.err(s.cause())
		case <-e.news:
			e.report()
		case <-dog.C:
			if left := muxSilence - s.c.waitedFor(); left > 0 {
				dog.Reset(left)
				continue
			}
			s.close(&silenceError{silent: s.c.waitedFor()})
		case <-e.l.closed:
			s.close(net.ErrClosed)
			return nil
		}
	}
}

// purge closes the streams of a lost session that wait for Accept: their
// peers are gone with it.
func (e *muxEngine) purge() {
	for {
		select {
		case c := <-e.out:
			c.Close()
		default:
			return
		}
	}
}

// reconnect asks the proxy for the address of the lost session again,
// after err, until it has it, waiting between attempts as b says. It
// returns nil when the listener is closed or has given up.
func (e *muxEngine) reconnect(b *backoff, err error) net.Conn {
	l := e.l
	for l.retry(b, err) {
		var c net.Conn
		var bnd Addr
		c, bnd, err = l.cfg.Dialer.open(l.life, CmdMultiplexBind, l.network, e.want)
		if err != nil {
			continue
		}
		var addr Addr
		if addr, err = e.bound(c, bnd); err != nil {
			continue
		}
		b.restart() // RetryLimit counts from this session's end
		l.armed(addr)
		if l.isClosed() {
			c.Close()
			return nil
		}
		return c
	}
	return nil
}

// report tells Retrying of the peers turned away since it last looked: a
// stream without a valid header as its own error, a flood of them in one.
func (e *muxEngine) report() {
	e.badMu.Lock()
	bad, n := e.bad, e.nbad
	e.bad, e.nbad = nil, 0
	e.badMu.Unlock()
	switch {
	case n == 1:
		e.l.turnedAway(bad)
	case n > 1:
		e.l.turnedAway(e.err(peerError{fmt.Errorf("%d peers turned away, the first: %w", n, unwrapOp(bad))}))
	}
	if n := e.full.Swap(0); n > 0 {
		e.l.turnedAway(e.err(peerError{fmt.Errorf("%d peers closed at once: the backlog of %d connections waiting for Accept is full", n, cap(e.out))}))
	}
	if n := e.crowded.Swap(0); n > 0 {
		e.l.turnedAway(e.err(peerError{fmt.Errorf("%d peers closed at once: %d streams are already waiting for their header", n, cap(e.greeting))}))
	}
}

// tell wakes run to report.
func (e *muxEngine) tell() {
	select {
	case e.news <- struct{}{}:
	default:
	}
}

// greet reads the SOCKS reply that begins st, naming its peer, within the
// handshake timeout, and queues the stream for Accept, or closes it. It
// holds a place in e.greeting, which it gives back.
func (e *muxEngine) greet(s *muxSession, st *smux.Stream) {
	defer s.wg.Done()
	defer func() { <-e.greeting }()
	limit := e.l.cfg.Dialer.handshakeTimeout()
	if limit > 0 {
		st.SetReadDeadline(time.Now().Add(limit))
	}
	rep, peer, err := readReply(st, nil)
	st.SetReadDeadline(time.Time{})
	switch {
	case err != nil && s.cause() != nil:
		err = nil // the session's end, which run reports
	case netutil.IsTimeout(err):
		err = e.err(peerError{wire.AtStage(wire.StageMBINDStreamReply, &deadlines.TimeoutError{Limit: limit, Hint: "a stream without its header"})})
	case err != nil:
		err = e.err(peerError{wire.AtStage(wire.StageMBINDStreamReply, err)})
	case rep != ReplySucceeded:
		err = e.err(peerError{peerReplyError(rep, peer)})
	}
	if err != nil || s.cause() != nil {
		st.Close()
		if err != nil {
			e.badMu.Lock()
			if e.nbad == 0 {
				e.bad = err
			}
			e.nbad++
			e.badMu.Unlock()
			e.tell()
		}
		return
	}
	c := &Conn{Conn: &muxStream{Stream: st, s: s}, local: s.addr, remote: peer}
	select {
	case e.out <- c:
	default:
		st.Close()
		e.full.Add(1)
		e.tell()
	}
}

// A muxSession is one smux session over an MBIND control connection. Its
// goroutine accepts the streams the proxy opens and starts a greet for
// each; run owns the rest.
type muxSession struct {
	c    *muxTransport
	addr Addr           // the listener's address for this session
	wg   sync.WaitGroup // the accepting goroutine and the greets

	ended chan struct{} // closed when the accepting goroutine has returned
	lost  atomic.Pointer[sessionLost]

	mu   sync.Mutex    // guards sess
	sess *smux.Session // nil until the proxy's first frame gave the version
}

func newMuxSession(e *muxEngine, c net.Conn) *muxSession {
	s := &muxSession{
		addr:  e.l.address(),
		ended: make(chan struct{}),
	}
	s.c = newMuxTransport(c, s)
	s.wg.Add(1)
	go s.accept(e)
	return s
}

// accept learns the smux version from the proxy's first frame, starts the
// session and hands every stream to a greet of its own.
func (s *muxSession) accept(e *muxEngine) {
	defer s.wg.Done()
	defer close(s.ended)
	v, err := s.c.version()
	if err == nil {
		// A keep-alive of ours at once: the proxy has heard nothing
		// from this side of the session yet.
		_, err = s.c.Write([]byte{byte(v), smuxNOP, 0, 0, 0, 0, 0, 0})
	}
	if err != nil {
		s.lose(err)
		return
	}
	s.mu.Lock()
	if s.lost.Load() == nil {
		s.sess, err = smux.Server(s.c, muxConfig(v))
	}
	sess := s.sess
	s.mu.Unlock()
	if sess == nil {
		s.lose(err)
		return
	}
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			s.lose(err)
			return
		}
		select {
		case e.greeting <- struct{}{}:
			s.wg.Add(1)
			go e.greet(s, st)
		default:
			st.Close()
			e.crowded.Add(1)
			e.tell()
		}
	}
}

// lose records why the session ended, the first time, and returns the
// loss.
func (s *muxSession) lose(err error) *sessionLost {
	var sl *sessionLost
	if errors.As(err, &sl) {
		err = sl.err
	}
	if err == nil {
		err = io.ErrClosedPipe
	}
	s.lost.CompareAndSwap(nil, &sessionLost{err: err})
	return s.lost.Load()
}

// cause is why the session ended, or nil while it lives.
func (s *muxSession) cause() error {
	if l := s.lost.Load(); l != nil {
		return l
	}
	return nil
}

// close ends the session for why (nil: it ended on its own), closing its
// control connection, and waits for its goroutines.
func (s *muxSession) close(why error) {
	s.lose(why)
	s.mu.Lock()
	if s.sess != nil {
		s.sess.Close()
	}
	s.c.Close()
	s.mu.Unlock()
	s.wg.Wait()
}

// A sessionLost is the end of an MBIND session: what the streams of the
// session fail with, and what the listener retries.
type sessionLost struct{ err error }

func (e *sessionLost) Error() string {
	if errors.Is(e.err, net.ErrClosed) {
		return "listener closed"
	}
	return "MBIND session lost: " + e.err.Error()
}
func (e *sessionLost) Unwrap() error { return e.err }
func (e *sessionLost) Timeout() bool { return netutil.IsTimeout(e.err) }

// A silenceError is a proxy that sent nothing, not even a keep-alive, while
// the listener waited for it.
type silenceError struct{ silent time.Duration }

func (e *silenceError) Error() string {
	return "proxy silent for " + e.silent.Round(100*time.Millisecond).String() + " (it sends a keep-alive every 10s)"
}
func (e *silenceError) Unwrap() error { return os.ErrDeadlineExceeded }
func (e *silenceError) Timeout() bool { return true }

// muxStream is a stream of a session: its errors say why the session
// ended, and its timeouts match os.ErrDeadlineExceeded as a TCP
// connection's do.
type muxStream struct {
	*smux.Stream
	s *muxSession
}

func (m *muxStream) Read(b []byte) (int, error) {
	n, err := m.Stream.Read(b)
	return n, m.fail("read", err)
}

func (m *muxStream) Write(b []byte) (int, error) {
	n, err := m.Stream.Write(b)
	return n, m.fail("write", err)
}

func (m *muxStream) WriteTo(w io.Writer) (int64, error) {
	n, err := m.Stream.WriteTo(w)
	return n, m.fail("read", err)
}

func (m *muxStream) fail(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if err == smux.ErrTimeout {
		err = os.ErrDeadlineExceeded
	} else if cause := m.s.cause(); cause != nil {
		err = cause
	}
	return &net.OpError{Op: op, Net: "tcp", Source: m.LocalAddr(), Addr: m.RemoteAddr(), Err: err}
}

// muxTransport is the control connection under a session: reads go
// through a buffer (smux reads each frame's header and body apart); a read
// of the connection that fails ends the session with why, so that smux
// hands that to every stream; and the start of a read still waiting is
// kept for the watchdog, which so tells a silent proxy from a session
// that has stopped reading because the application does not.
type muxTransport struct {
	net.Conn
	s       *muxSession
	r       *bufio.Reader
	waiting atomic.Int64 // unix nanoseconds since a read of Conn waits; 0 when none
}

func newMuxTransport(c net.Conn, s *muxSession) *muxTransport {
	t := &muxTransport{Conn: c, s: s}
	t.r = bufio.NewReaderSize(connReader{t}, muxReadBuffer)
	return t
}

func (t *muxTransport) Read(b []byte) (int, error) { return t.r.Read(b) }

// waitedFor is how long a read of the connection has waited, if one does.
func (t *muxTransport) waitedFor() time.Duration {
	since := t.waiting.Load()
	if since == 0 {
		return 0
	}
	return time.Since(time.Unix(0, since))
}

// connReader reads the connection under the buffer.
type connReader struct{ t *muxTransport }

func (r connReader) Read(b []byte) (int, error) {
	r.t.waiting.Store(time.Now().UnixNano())
	n, err := r.t.Conn.Read(b)
	r.t.waiting.Store(0)
	if err != nil {
		return n, r.t.s.lose(err)
	}
	return n, nil
}

// version waits for the proxy's first frame and returns its smux version.
func (t *muxTransport) version() (int, error) {
	b, err := t.r.Peek(1)
	if err != nil {
		return 0, err
	}
	if v := int(b[0]); v == 1 || v == 2 {
		return v, nil
	}
	return 0, fmt.Errorf("%w: the proxy's first frame has version %d, not smux 1 or 2", ErrProtocolViolation, b[0])
}
