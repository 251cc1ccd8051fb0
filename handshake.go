package socksbind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/dialctx"
	"github.com/socksbind/socksbind/internal/wire"
)

// This file holds the one handshake every command goes through: reach the
// proxy, negotiate the method, send the request, read the first reply.

var noAuth = []Authenticator{NoAuth{}}

// open dials the proxy and runs the handshake for cmd to dst. It returns the
// connection, with every deadline cleared, and the address of the first
// reply. ctx and the Dialer's handshake timeout bound all of it. Errors are
// *net.OpError.
func (d *Dialer) open(ctx context.Context, cmd Command, network string, dst Addr) (net.Conn, Addr, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "socks " + cmd.String(), Net: network, Source: d.proxyAddr(), Addr: netAddr(dst), Err: err}
	}
	auth := d.Auth
	if len(auth) == 0 {
		auth = noAuth
	}
	if err := validateAuth(auth); err != nil {
		return nil, Addr{}, opErr(err)
	}
	deadline, own := d.handshakeDeadline(ctx)
	c, err := d.dialProxy(ctx, deadline, own)
	if err != nil {
		if own && isTimeout(err) && ctx.Err() == nil {
			err = &handshakeTimeoutError{d.handshakeTimeout()}
		}
		return nil, Addr{}, opErr(err)
	}
	bnd, err := handshake(ctx, c, deadline, auth, cmd, dst)
	if err != nil {
		c.Close()
		if own && errors.Is(err, context.DeadlineExceeded) {
			err = &handshakeTimeoutError{d.handshakeTimeout()}
		}
		return nil, Addr{}, opErr(err)
	}
	return c, bnd, nil
}

// handshake runs greeting, authentication and request on c under ctx and
// deadline (ctx's, or an earlier one); see [deadlines.Watch].
func handshake(ctx context.Context, c net.Conn, deadline time.Time, auth []Authenticator, cmd Command, dst Addr) (Addr, error) {
	w := deadlines.Start(ctx, c, deadline)
	bnd, err := exchange(ctx, c, auth, cmd, dst)
	if err = w.Done(err); err != nil {
		return Addr{}, err
	}
	return bnd, nil
}

// The stages of a handshake, named in the errors of a reply cut short.
const (
	stageGreeting = "greeting reply"
	stageAuth     = "authentication reply"
)

// replyStage names the first reply to cmd.
func replyStage(cmd Command) string {
	if cmd == CmdBind {
		return "BIND reply 1"
	}
	return strings.ToUpper(cmd.String()) + " reply"
}

func exchange(ctx context.Context, c net.Conn, auth []Authenticator, cmd Command, dst Addr) (Addr, error) {
	// One buffer for every message of the handshake, sized for the
	// longest: each is sent in a single Write, as some servers cannot
	// reassemble a split message, and replies are read into it.
	buf := make([]byte, 0, max(2+len(auth), 7+len(dst.Name), wire.MaxFixedMessage))
	buf = append(buf, wire.Version5, byte(len(auth)))
	for _, a := range auth {
		buf = append(buf, byte(a.Method()))
	}
	if _, err := c.Write(buf); err != nil {
		return Addr{}, err
	}
	m, err := wire.ReadMethodSelection(c, buf)
	if err != nil {
		return Addr{}, wire.AtStage(stageGreeting, err)
	}
	if m == AuthNoAcceptable {
		return Addr{}, ErrNoAcceptableAuth
	}
	var chosen Authenticator
	for _, a := range auth {
		if a.Method() == m {
			chosen = a
			break
		}
	}
	if chosen == nil {
		return Addr{}, fmt.Errorf("%w: proxy chose %v, which was not offered", ErrProtocolViolation, m)
	}
	if err := chosen.Authenticate(ctx, c); err != nil {
		if errors.Is(err, ErrAuthRejected) {
			return Addr{}, err
		}
		return Addr{}, wire.AtStage(stageAuth, err)
	}
	if buf, err = wire.AppendRequest(buf[:0], cmd, dst); err != nil {
		return Addr{}, err
	}
	if _, err := c.Write(buf); err != nil {
		return Addr{}, err
	}
	rep, bnd, err := wire.ReadReply(c, buf)
	if err != nil {
		return Addr{}, wire.AtStage(replyStage(cmd), err)
	}
	if rep != ReplySucceeded {
		return Addr{}, replyError(cmd, rep)
	}
	return bnd, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialProxy reaches the proxy through the forward dialer, under ctx even
// when the forward dialer has no DialContext.
// A deadline of its own (not ctx's) bounds the dial too.
func (d *Dialer) dialProxy(ctx context.Context, deadline time.Time, own bool) (net.Conn, error) {
	network := d.ProxyNetwork
	if network == "" {
		network = "tcp"
	}
	if d.Forward == nil {
		nd := net.Dialer{Deadline: deadline}
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
		return Addr{}, wire.ErrNameTooLong
	}
	a.Name = host
	return a, nil
}
