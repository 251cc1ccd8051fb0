package socksbind

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/dialctx"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/wire"
)

// This file holds the one handshake every command goes through: reach the
// proxy, negotiate the method, send the request, read the first reply.

var noAuth = []Authenticator{NoAuth{}}

// open dials the proxy and runs the handshake for cmd to dst, pipelined
// when the Dialer says so. See [Dialer.handshake].
func (d *Dialer) open(ctx context.Context, cmd Command, network string, dst Addr) (net.Conn, Addr, error) {
	c, bnd, _, err := d.handshake(ctx, cmd, network, dst, d.Pipeline, nil)
	return c, bnd, err
}

// handshake dials the proxy and runs the handshake for cmd to dst, offering
// auth (nil: the Dialer's), all in one write when pipeline is set. It
// returns the connection, with every deadline cleared, the address of the
// first reply, and the method the proxy chose. ctx and the Dialer's
// handshake timeout bound all of it. Errors are *net.OpError.
func (d *Dialer) handshake(ctx context.Context, cmd Command, network string, dst Addr, pipeline bool, auth []Authenticator) (net.Conn, Addr, Authenticator, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "socks " + cmd.String(), Net: network, Source: d.proxyAddr(), Addr: netAddr(dst), Err: err}
	}
	if auth == nil {
		auth = d.Auth
	}
	if len(auth) == 0 {
		auth = noAuth
	}
	if ctx == nil {
		return nil, Addr{}, nil, opErr(errNilContext)
	}
	if err := validateAuth(auth); err != nil {
		return nil, Addr{}, nil, opErr(err)
	}
	deadline, own := d.handshakeDeadline(ctx)
	c, err := d.dialProxy(ctx, deadline, own)
	if err != nil {
		if own && netutil.IsTimeout(err) && ctx.Err() == nil {
			err = d.handshakeTimeoutError(false)
		}
		return nil, Addr{}, nil, opErr(err)
	}
	w := deadlines.Start(ctx, c, deadline)
	var bnd Addr
	var chosen Authenticator
	pm := pipelineMethod(auth)
	pipelined := pipeline && pm != nil
	if pipelined {
		chosen = pm
		bnd, err = d.exchangePipelined(c, pm, cmd, dst)
	} else {
		bnd, chosen, err = d.exchange(ctx, c, auth, cmd, dst)
	}
	if err = w.Done(err); err != nil {
		c.Close()
		switch {
		case own && errors.Is(err, context.DeadlineExceeded):
			err = d.handshakeTimeoutError(pipelined)
		case pipelined && errors.Is(err, context.DeadlineExceeded):
			// The caller's deadline: the hint matters as much.
			err = &hintedTimeout{err: err, hint: pipelineHint}
		}
		return nil, Addr{}, nil, opErr(err)
	}
	return c, bnd, chosen, nil
}

// hintedTimeout is a timeout of the caller's, with a hint of what to
// change. It unwraps to the caller's error.
type hintedTimeout struct {
	err  error
	hint string
}

func (e *hintedTimeout) Error() string { return e.err.Error() + " (" + e.hint + ")" }
func (e *hintedTimeout) Unwrap() error { return e.err }
func (e *hintedTimeout) Timeout() bool { return true }

// exchange sends each message when the previous one is answered.
func (d *Dialer) exchange(ctx context.Context, c net.Conn, auth []Authenticator, cmd Command, dst Addr) (Addr, Authenticator, error) {
	// One buffer for every message of the handshake, sized for the
	// longest: each is sent in a single Write, as some servers cannot
	// reassemble a split message, and replies are read into it.
	buf := make([]byte, 0, max(2+len(auth), 7+len(dst.Name), maxFixedMessage))
	buf = append(buf, version5, byte(len(auth)))
	for _, a := range auth {
		buf = append(buf, byte(a.Method()))
	}
	if _, err := c.Write(buf); err != nil {
		return Addr{}, nil, err
	}
	m, err := readMethodSelection(c, buf)
	if err != nil {
		return Addr{}, nil, wire.AtStage(wire.StageGreeting, err)
	}
	if m == AuthNoAcceptable {
		return Addr{}, nil, ErrNoAcceptableAuth
	}
	var chosen Authenticator
	for _, a := range auth {
		if a.Method() == m {
			chosen = a
			break
		}
	}
	if chosen == nil {
		return Addr{}, nil, fmt.Errorf("%w: proxy chose %v, which was not offered", ErrProtocolViolation, m)
	}
	if err := chosen.Authenticate(ctx, c); err != nil {
		if errors.Is(err, ErrAuthRejected) {
			return Addr{}, nil, err
		}
		return Addr{}, nil, wire.AtStage(wire.StageAuth, err)
	}
	if buf, err = appendRequest(buf[:0], cmd, dst); err != nil {
		return Addr{}, nil, err
	}
	if _, err := c.Write(buf); err != nil {
		return Addr{}, nil, err
	}
	bnd, err := d.firstReply(c, buf, cmd)
	if err != nil {
		return Addr{}, nil, err
	}
	return bnd, chosen, nil
}

// pipelineMethod is the one method a pipelined greeting offers: the
// username/password method when auth has one, else no authentication. Other
// methods cannot be pipelined: nil.
func pipelineMethod(auth []Authenticator) Authenticator {
	var none Authenticator
	for _, a := range auth {
		switch up := a.(type) {
		case UsernamePassword:
			return &up
		case *UsernamePassword:
			return a
		case NoAuth, *NoAuth:
			none = a
		}
	}
	return none
}

// exchangePipelined sends the greeting (offering the method of a alone),
// the authentication and the request in one write, then reads the answers
// in order. Dante and GOST answer such a write; microsocks does not, which
// is why it is opt-in.
func (d *Dialer) exchangePipelined(c net.Conn, a Authenticator, cmd Command, dst Addr) (Addr, error) {
	up, _ := a.(*UsernamePassword)
	n := 3 + 7 + len(dst.Name) + maxFixedMessage
	if up != nil {
		n += 3 + len(up.Username) + len(up.Password)
	}
	buf := append(make([]byte, 0, n), version5, 1, byte(a.Method()))
	if up != nil {
		buf = appendUserPass(buf, up.Username, up.Password)
	}
	buf, err := appendRequest(buf, cmd, dst)
	if err != nil {
		return Addr{}, err
	}
	if _, err := c.Write(buf); err != nil {
		return Addr{}, err
	}
	m, err := readMethodSelection(c, buf)
	switch {
	case err != nil:
		return Addr{}, wire.AtStage(wire.StageGreeting, err)
	case m == AuthNoAcceptable:
		return Addr{}, fmt.Errorf("%w (a pipelined greeting offers %v only)", ErrNoAcceptableAuth, a.Method())
	case m != a.Method():
		if rep, ok := skippedSelection(c, m); ok {
			return Addr{}, replyError(cmd, rep)
		}
		// The authentication and the request already sent mean
		// nothing to the method the proxy chose.
		return Addr{}, fmt.Errorf("%w: proxy chose %v, but a pipelined greeting offered %v only", ErrProtocolViolation, m, a.Method())
	}
	if up != nil {
		status, err := readUserPassStatus(c)
		if err != nil {
			return Addr{}, wire.AtStage(wire.StageAuth, err)
		}
		if status != 0 {
			return Addr{}, fmt.Errorf("%w: username/password status %d", ErrAuthRejected, status)
		}
	}
	return d.firstReply(c, buf, cmd)
}

// skippedSelection reads the rest of a failure reply whose first two bytes
// were taken for a method selection with method m. Tor answers a
// pipelined greeting and a command it lacks with the failure reply alone
// (05 07 00 01 ...), no method selection first. It reports false, and
// the caller reports the method, when m is no failure code of RFC 1928 or
// what follows is no reply.
func skippedSelection(c net.Conn, m AuthMethod) (Reply, bool) {
	if m < AuthMethod(ReplyGeneralFailure) || m > AuthMethod(ReplyAddressTypeNotSupported) {
		return 0, false
	}
	rep, _, err := readReply(io.MultiReader(bytes.NewReader([]byte{version5, byte(m)}), c), nil)
	return rep, err == nil
}

// firstReply reads the reply to the request for cmd, with buf as scratch,
// and returns its address, or the failure it reports.
func (d *Dialer) firstReply(c net.Conn, buf []byte, cmd Command) (Addr, error) {
	r := io.Reader(c)
	var counted *countingReader
	if cmd == CmdBind && atomic.LoadInt32(&d.bind) != bindAnswered {
		counted = &countingReader{r: c}
		r = counted
	}
	rep, bnd, err := readReply(r, buf)
	if err == nil && counted != nil {
		atomic.StoreInt32(&d.bind, bindAnswered)
	}
	switch {
	case err != nil && counted != nil && counted.n == 0 && errors.Is(err, io.ErrUnexpectedEOF):
		// A close without a reply, from a proxy that has never
		// answered a BIND here, is how Dante and OpenSSH (ssh -D) say
		// that they lack the command; a proxy that has answered one
		// is failing and may recover.
		return Addr{}, fmt.Errorf("%w: the proxy closed the connection without a reply to %v: %w",
			ErrCommandNotSupported, strings.ToUpper(cmd.String()), wire.AtStage(replyStage(cmd), err))
	case err != nil:
		return Addr{}, wire.AtStage(replyStage(cmd), err)
	case rep != ReplySucceeded:
		return Addr{}, replyError(cmd, rep)
	}
	return bnd, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.n += n
	return n, err
}

// dialProxy reaches the proxy through the forward dialer, under ctx even
// when the forward dialer has no DialContext. A deadline of the Dialer's
// own (not ctx's) bounds a forward dialer, which may itself wait on a
// proxy; a direct connect is left to ctx and the system's connect timeout,
// since a context with a deadline costs a dozen allocations per dial.
func (d *Dialer) dialProxy(ctx context.Context, deadline time.Time, own bool) (net.Conn, error) {
	network := d.ProxyNetwork
	if network == "" {
		network = "tcp"
	}
	if d.Forward == nil {
		var nd net.Dialer
		return nd.DialContext(ctx, network, d.ProxyAddress)
	}
	if own {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	return dialctx.Dial(ctx, d.Forward, network, d.ProxyAddress)
}

// proxyAddr is the proxy's address for error messages.
func (d *Dialer) proxyAddr() net.Addr {
	a, err := parseAddr(d.ProxyAddress)
	if err != nil {
		return nil
	}
	return netAddr(a)
}

// parseAddr splits "host:port" into an Addr. The host may be empty, an IP
// (a zone is dropped: it means nothing to the proxy) or a name of at most
// 255 bytes; the port is 0 to 65535 or a service name.
func parseAddr(address string) (Addr, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return Addr{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		p, lerr := net.LookupPort("tcp", portStr)
		if lerr != nil {
			return Addr{}, fmt.Errorf("invalid port %q", portStr)
		}
		port = uint64(p)
	}
	a := Addr{Port: uint16(port)}
	if ip, err := netip.ParseAddr(host); err == nil {
		a.IP = ip.WithZone("").Unmap()
		return a, nil
	}
	if len(host) > 255 {
		return Addr{}, errNameTooLong
	}
	a.Name = host
	return a, nil
}

// proxyIP is the proxy's own address: from ProxyAddress, or, when that is a
// name and the proxy is reached directly, from the control connection c.
// Otherwise the name itself.
func (d *Dialer) proxyIP(c net.Conn) (netip.Addr, string) {
	pa, err := parseAddr(d.ProxyAddress)
	if err == nil && pa.IP.IsValid() {
		return pa.IP, ""
	}
	if f := d.Forward; f == nil || f == proxy.Direct {
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip, _ := netip.AddrFromSlice(ta.IP)
			return ip.Unmap(), ""
		}
	}
	return netip.Addr{}, pa.Name
}
