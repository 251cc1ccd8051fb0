package socksbind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/socksbind/socksbind/internal/dialctx"
	"github.com/socksbind/socksbind/internal/wire"
)

// This file holds the one handshake every command goes through: reach the
// proxy, negotiate the method, send the request, read the first reply.

// aLongTimeAgo is a deadline in the past, used to abort blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

var noAuth = []Authenticator{NoAuth{}}

// open dials the proxy and runs the handshake for cmd to dst. It returns the
// connection, with every deadline cleared, and the address of the first
// reply. ctx bounds all of it. Errors are *net.OpError.
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
	c, err := d.dialProxy(ctx)
	if err != nil {
		return nil, Addr{}, opErr(err)
	}
	bnd, err := handshake(ctx, c, auth, cmd, dst)
	if err != nil {
		c.Close()
		return nil, Addr{}, opErr(err)
	}
	return c, bnd, nil
}

// handshake runs greeting, authentication and request on c under ctx: a
// deadline of ctx becomes the connection's, and a cancellation aborts the
// blocked read or write at once. Every deadline is cleared on success.
func handshake(ctx context.Context, c net.Conn, auth []Authenticator, cmd Command, dst Addr) (Addr, error) {
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		c.SetDeadline(deadline)
	}
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	}
	bnd, err := exchange(ctx, c, auth, cmd, dst)
	if !stop() {
		// ctx is done and the deadline may be set at any moment: the
		// connection cannot be handed over.
		return Addr{}, ctx.Err()
	}
	if err != nil {
		if hasDeadline && isTimeout(err) && !time.Now().Before(deadline) {
			return Addr{}, context.DeadlineExceeded
		}
		return Addr{}, err
	}
	if hasDeadline {
		c.SetDeadline(time.Time{})
	}
	return bnd, nil
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
		return Addr{}, err
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
		return Addr{}, err
	}
	if buf, err = wire.AppendRequest(buf[:0], cmd, dst); err != nil {
		return Addr{}, err
	}
	if _, err := c.Write(buf); err != nil {
		return Addr{}, err
	}
	rep, bnd, err := wire.ReadReply(c, buf)
	if err != nil {
		return Addr{}, err
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
func (d *Dialer) dialProxy(ctx context.Context) (net.Conn, error) {
	network := d.ProxyNetwork
	if network == "" {
		network = "tcp"
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
