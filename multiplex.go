package socksbind

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/xtaci/smux"

	"github.com/socksbind/socksbind/internal/deadlines"
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
	// stream over the control connection, an smux session with GOST's
	// settings (protocol version 1, a keep-alive every 10 s). A proxy
	// without it fails Listen with an error matching
	// [ErrCommandNotSupported], or what its reply code says.
	//
	// Each accepted connection is a stream: closing it closes only the
	// stream; Close of the listener ends the session and with it every
	// stream; a session that dies is a permanent error of Accept. A
	// stream's read deadline works as a TCP connection's; its write
	// deadline is read when a Write starts, so moving it does not end a
	// Write already blocked on a full session. GOST passes no half-close
	// on: CloseWrite ends the stream there. The session's goroutines
	// (smux's four) come on top of the listener's one.
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

// The finding of [MultiplexAuto], kept in Dialer.mbind.
const (
	mbindUnknown int32 = iota
	mbindYes
	mbindNo
)

// muxConfig is the smux configuration of a multiplexed listener: GOST's
// (smux's defaults: protocol version 1, a keep-alive every 10 s, a session
// dropped after 30 s without a frame), so both ends frame alike.
func muxConfig() *smux.Config {
	return smux.DefaultConfig()
}

// listenMux sends MBIND and, once the proxy has bound, starts the session.
// For MultiplexAuto it reports fallBack when the proxy has no MBIND and a
// standard BIND should be tried instead.
func (l *Listener) listenMux(ctx context.Context) (fallBack bool, err error) {
	d := l.cfg.Dialer
	auto := l.cfg.Multiplex == MultiplexAuto
	if auto && atomic.LoadInt32(&d.mbind) == mbindNo {
		return true, nil
	}
	c, bnd, err := d.open(ctx, CmdMultiplexBind, l.network, l.want)
	if err != nil {
		unsupported := noMBIND(err)
		if unsupported {
			atomic.StoreInt32(&d.mbind, mbindNo)
		}
		var re *ReplyError
		if auto && (unsupported || errors.As(err, &re)) {
			return true, nil // what BIND says is the answer
		}
		if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrCommandNotSupported) {
			err = l.mbindUnsupported(err)
		}
		return false, err
	}
	atomic.StoreInt32(&d.mbind, mbindYes)
	if l.fixed && bnd.Port != l.want.Port {
		c.Close()
		return false, l.cmdErr(CmdMultiplexBind, fmt.Errorf("%w: asked for port %d, got %d", ErrAddressInUse, l.want.Port, bnd.Port))
	}
	sess, err := smux.Server(c, muxConfig())
	if err != nil {
		c.Close()
		return false, l.cmdErr(CmdMultiplexBind, err)
	}
	l.sess = sess
	l.addr, l.port = l.advertise(c, bnd), bnd.Port
	return false, nil
}

// noMBIND reports an MBIND failure that says the proxy lacks the command:
// a close without a reply (Dante's answer to any unknown command) or reply
// 7, command not supported (microsocks).
func noMBIND(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrCommandNotSupported)
}

// mbindUnsupported turns a proxy's silent close after MBIND into an error
// that matches ErrCommandNotSupported, as reply 7 would.
func (l *Listener) mbindUnsupported(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err
	}
	return l.cmdErr(CmdMultiplexBind, fmt.Errorf("%w: the proxy closed the connection without a reply (no multiplexed BIND): %w", ErrCommandNotSupported, err))
}

// runMux is a multiplexed listener's goroutine: it accepts the streams the
// proxy opens, one per peer, reads the reply at the head of each, and hands
// the stream over to Accept. The session dying ends the listener.
func (l *Listener) runMux() {
	defer close(l.loopDone)
	defer l.sess.Close()
	for {
		st, err := l.sess.AcceptStream()
		if l.isClosed() {
			if st != nil {
				st.Close()
			}
			l.drain()
			return
		}
		if err != nil {
			l.fail(l.cmdErr(CmdMultiplexBind, wire.AtStage("MBIND session", err)))
			return
		}
		c, err := l.muxPeer(st)
		if err != nil {
			st.Close()
			l.callback(func() { l.cfg.Retrying(err, 0) }, l.cfg.Retrying != nil)
			continue
		}
		select {
		case l.conns <- c:
		case <-l.closed:
			c.Close()
			l.drain()
			return
		}
	}
}

// muxPeer reads the SOCKS reply that begins a stream, naming its peer,
// within the handshake timeout.
func (l *Listener) muxPeer(st *smux.Stream) (net.Conn, error) {
	deadline, _ := l.cfg.Dialer.handshakeDeadline(l.life)
	w := deadlines.Start(l.life, st, deadline)
	rep, peer, err := readReply(st, nil)
	if err = w.Done(err); err != nil {
		return nil, l.cmdErr(CmdMultiplexBind, wire.AtStage("MBIND stream reply", err))
	}
	if rep != ReplySucceeded {
		return nil, l.cmdErr(CmdMultiplexBind, peerError{peerReplyError(rep, peer)})
	}
	return &Conn{Conn: st, local: l.addr, remote: peer}, nil
}
