package socksbind

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/wire"
)

// bindEngine owns the re-arm cycle of a standard BIND listener: one BIND
// pending at the proxy at a time, its second reply read on the engine's
// goroutine, the connection handed over through a backlog of one.
type bindEngine struct {
	l     *Listener
	want  Addr // the BIND request's DST
	out   chan net.Conn
	first *bind // armed by Listen; the goroutine's from then on

	// The rest belongs to the engine's goroutine once it runs (and to
	// startBind before).

	port uint16 // the port the proxy bound last, which follow mode asks for again
	// rearmAuth is the method the proxy chose for the last BIND, which
	// re-arms offer alone, pipelined; nil until a BIND succeeds, and
	// after a pipelined re-arm failed before its reply.
	rearmAuth Authenticator
}

// bind is one BIND request that got its first reply.
type bind struct {
	c    net.Conn
	port uint16 // the port the proxy bound
	addr Addr   // what the listener advertises for it
}

// startBind sends the first BIND under ctx.
func startBind(ctx context.Context, l *Listener, want Addr) (*bindEngine, error) {
	e := &bindEngine{
		l:    l,
		want: want,
		out:  make(chan net.Conn, 1),
	}
	b, err := e.arm(ctx)
	if err != nil {
		return nil, err
	}
	e.first = b
	l.setAddr(b.addr)
	return e, nil
}

func (e *bindEngine) conns() chan net.Conn { return e.out }

func (e *bindEngine) run() {
	l := e.l
	defer l.drainIfClosed()
	b := e.first
	e.first = nil
	r := backoff{limit: l.cfg.RetryLimit}
	for b != nil {
		c, err := e.waitPeer(b)
		switch {
		case l.isClosed():
			if c != nil {
				c.Close()
			}
			return
		case err != nil && l.cfg.Once:
			l.fail(err)
			return
		case err != nil:
			if !l.retry(&r, err) {
				return
			}
		default:
			select {
			case e.out <- c:
			case <-l.closed:
				c.Close()
				return
			}
			if l.cfg.Once {
				return
			}
			r.reset()
		}
		b = e.rearm(&r)
	}
}

// waitPeer reads the second reply of b and returns its connection, or
// closes it. Only Close bounds the wait.
func (e *bindEngine) waitPeer(b *bind) (net.Conn, error) {
	w := deadlines.Start(e.l.life, b.c, time.Time{})
	rep, peer, err := readReply(b.c, nil)
	err = w.Done(err)
	switch {
	case err != nil:
		err = e.err(wire.AtStage(wire.StageBindReply2, err))
	case rep != ReplySucceeded:
		err = e.err(peerError{peerReplyError(rep, peer)})
	default:
		return &Conn{Conn: b.c, local: b.addr, remote: peer}, nil
	}
	b.c.Close()
	return nil, err
}

// rearm sends BINDs until one is armed, waiting between attempts as r says.
// It returns nil when the listener is closed or has given up.
func (e *bindEngine) rearm(r *backoff) *bind {
	l := e.l
	for {
		b, err := e.arm(l.life)
		switch {
		case l.isClosed():
			if b != nil {
				b.c.Close()
			}
			return nil
		case err == nil:
			l.armed(b.addr)
			return b
		case !l.retry(r, err):
			return nil
		}
	}
}

// arm sends one BIND and reads its first reply. A listener with a fixed port
// releases a different port at once.
func (e *bindEngine) arm(ctx context.Context) (*bind, error) {
	want := e.want
	if !fixedPort(want) && want.IP.IsUnspecified() {
		// Follow mode asks for the port it had, which keeps the
		// address when the proxy can.
		want.Port = e.port
	}
	d := e.l.cfg.Dialer
	pipeline, auth := d.Pipeline, []Authenticator(nil)
	if e.rearmAuth != nil {
		pipeline, auth = true, []Authenticator{e.rearmAuth}
	}
	c, bnd, chosen, err := d.handshake(ctx, CmdBind, e.l.network, want, pipeline, auth)
	if err != nil {
		if e.rearmAuth != nil && !d.Pipeline && beforeReply(err) {
			e.rearmAuth = nil // the proxy cannot take it: wait for each answer
		}
		return nil, err
	}
	if e.rearmAuth == nil && pipelineMethod([]Authenticator{chosen}) != nil {
		// The proxy has answered a BIND with this method: re-arms
		// send it alone, pipelined.
		e.rearmAuth = chosen
	}
	if err := e.l.checkPort(CmdBind, c, e.want, bnd.Port); err != nil {
		return nil, err
	}
	e.port = bnd.Port
	return &bind{c: c, port: bnd.Port, addr: e.l.advertise(c, bnd)}, nil
}

// err is err as the error of a BIND request.
func (e *bindEngine) err(err error) error { return e.l.cmdErr(CmdBind, e.want, err) }

// beforeReply reports a handshake that failed before the proxy's reply to
// the request: in the greeting or the authentication, or with bytes that
// are not SOCKS.
func beforeReply(err error) bool {
	switch wire.StageOf(err) {
	case wire.StageGreeting, wire.StageAuth:
		return true
	}
	return errors.Is(err, ErrProtocolViolation)
}
