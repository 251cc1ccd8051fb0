package socksbind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/netutil"
	"golang.org/x/net/proxy"
)

var (
	_ proxy.Dialer        = (*Dialer)(nil)
	_ proxy.ContextDialer = (*Dialer)(nil)
)

// A Dialer reaches targets through a SOCKS version 5 proxy. Its fields must
// not change once it is in use; it is safe for concurrent use. A nil
// *Dialer has no proxy: Dial, DialContext and Listen return an error
// matching [ErrNoProxy].
type Dialer struct {
	// ProxyNetwork and ProxyAddress locate the proxy, as for [net.Dial].
	// An empty ProxyNetwork means "tcp".
	ProxyNetwork string
	ProxyAddress string

	// Forward reaches the proxy. Nil means a direct connection. When it
	// implements [proxy.ContextDialer] its DialContext is used, so that
	// cancellation reaches every hop of a chain.
	Forward proxy.Dialer

	// Auth lists the authentication methods to offer, in order of
	// preference. Empty means [NoAuth] only.
	Auth []Authenticator

	// ResolveLocally makes the Dialer resolve target names itself, with
	// Resolver (or [net.DefaultResolver]), and send the proxy an IP
	// address: the behaviour of the "socks5" URL scheme. By default names
	// are sent to the proxy to resolve ("socks5h").
	ResolveLocally bool
	Resolver       *net.Resolver

	// HandshakeTimeout is the longest a handshake may take (the greeting,
	// authenticating, and the proxy's reply, and reaching the proxy
	// through Forward) when the caller's context sets no earlier
	// deadline. It bounds Dial, DialContext, Listen and every BIND a
	// [Listener] sends on its own; its expiry matches
	// [os.ErrDeadlineExceeded]. A direct TCP connect to the proxy is
	// bounded by the context and by the system's connect timeout. Zero
	// means [DefaultHandshakeTimeout]; a negative value means no bound
	// but the caller's.
	HandshakeTimeout time.Duration

	// Pipeline sends the greeting, the authentication and the request in
	// one write instead of waiting for each answer: one round trip to the
	// proxy instead of two, or three with a password. The greeting then
	// offers one method: username/password when Auth has one, else none;
	// a proxy that picks another fails the handshake with
	// [ErrProtocolViolation]. Dante and GOST answer pipelined handshakes;
	// some servers (microsocks) cannot, which is why it is off by default.
	// Application data is never sent before the proxy's reply.
	Pipeline bool

	// UDP selects the command of ListenPacket and of DialContext for
	// "udp": [UDPAssociate] (the zero value), [UDPTunnel] or [UDPAuto].
	UDP UDPMode

	mbind int32 // what MultiplexAuto learned of the proxy; atomic
	bind  int32 // bindAnswered once the proxy replied to a BIND; atomic
}

// bindAnswered, in Dialer.bind, says that the proxy has the BIND command.
const bindAnswered int32 = 1

// DefaultHandshakeTimeout is the bound of a handshake when
// [Dialer.HandshakeTimeout] is zero: 30 seconds, the time Dante gives a
// client for its own negotiation.
const DefaultHandshakeTimeout = 30 * time.Second

// handshakeDeadline is when a handshake started now under ctx must end:
// the earlier of ctx's deadline and the Dialer's handshake timeout. own
// reports that the timeout, not ctx, set it.
func (d *Dialer) handshakeDeadline(ctx context.Context) (deadline time.Time, own bool) {
	return deadlines.Bound(ctx, d.handshakeTimeout())
}

// handshakeTimeoutError reports a handshake that outlived the Dialer's
// handshake timeout.
func (d *Dialer) handshakeTimeoutError(pipelined bool) error {
	e := &deadlines.TimeoutError{Limit: d.handshakeTimeout()}
	if pipelined {
		e.Hint = pipelineHint
	}
	return e
}

// pipelineHint is said of a pipelined handshake that timed out, whoever's
// the deadline: microsocks, for one, drops what follows the greeting and
// waits in silence.
const pipelineHint = "it was pipelined: a proxy that cannot take that stays silent; set Dialer.Pipeline to false"

func (d *Dialer) handshakeTimeout() time.Duration {
	if d.HandshakeTimeout == 0 {
		return DefaultHandshakeTimeout
	}
	return d.HandshakeTimeout
}

// SOCKS5 returns a Dialer that reaches the proxy at address on network
// through forward (nil meaning direct), with the username and password of
// auth when it is not nil. It has the signature and meaning of
// [golang.org/x/net/proxy.SOCKS5], and reports credentials that cannot be
// sent (a username of 0 or more than 255 bytes, a password of more than
// 255) at once.
func SOCKS5(network, address string, auth *proxy.Auth, forward proxy.Dialer) (*Dialer, error) {
	d := &Dialer{ProxyNetwork: network, ProxyAddress: address, Forward: forward}
	if auth != nil {
		up := &UsernamePassword{Username: auth.User, Password: auth.Password}
		if err := up.Validate(); err != nil {
			return nil, fmt.Errorf("socksbind: %w", err)
		}
		d.Auth = []Authenticator{NoAuth{}, up}
	}
	return d, nil
}

// Dial connects to address through the proxy. See [Dialer.DialContext].
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext connects to address on network ("tcp", "tcp4" or "tcp6")
// through the proxy with the CONNECT command. The connection is a [*Conn].
//
// For "udp", "udp4" and "udp6" it makes an association as
// [Dialer.ListenPacket] does, with its own control connection, and returns
// a connected datagram conn: Write sends to address, Read returns datagrams
// from address only, and it is a [net.PacketConn] too, so that the Go
// resolver frames DNS for UDP on it:
//
//	r := &net.Resolver{PreferGo: true, Dial: d.DialContext}
//
// ctx bounds the whole of it: reaching the proxy, authenticating, and the
// proxy's reply. Once DialContext returns, ctx has no effect on the
// connection, and no deadline is left set on it.
//
// The error is a [*net.OpError]: Op is "socks connect", Net is network,
// Source is the proxy's address and Addr the target's. Its Err is the
// cause: a [*ReplyError] when the proxy refused (match it with the
// sentinels of this package, or with a syscall errno), the error of ctx
// when it ended first, or the error of the connection to the proxy.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch {
	case d == nil:
		return nil, &net.OpError{Op: "socks connect", Net: network, Addr: netutil.TextAddr(address), Err: errNilDialer}
	case ctx == nil:
		return nil, &net.OpError{Op: "socks connect", Net: network, Source: d.proxyAddr(), Addr: netutil.TextAddr(address), Err: errNilContext}
	}
	switch network {
	case "udp", "udp4", "udp6":
		return d.dialUDP(ctx, network, address)
	}
	dst, err := d.target(ctx, network, address)
	if err != nil {
		return nil, &net.OpError{Op: "socks connect", Net: network, Source: d.proxyAddr(), Addr: netutil.TextAddr(address), Err: err}
	}
	c, bnd, err := d.open(ctx, CmdConnect, network, dst)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, local: bnd, remote: dst}, nil
}

// target parses a CONNECT target, resolving its name when the Dialer
// resolves locally.
func (d *Dialer) target(ctx context.Context, network, address string) (Addr, error) {
	ipNet, err := ipNetwork(network)
	if err != nil {
		return Addr{}, err
	}
	a, err := parseAddr(address)
	if err != nil {
		return Addr{}, err
	}
	if a.Name == "" && !a.IP.IsValid() {
		return Addr{}, errors.New("missing host")
	}
	if a.IP.IsValid() {
		if (ipNet == "ip4" && !a.IP.Is4()) || (ipNet == "ip6" && !a.IP.Is6()) {
			return Addr{}, &net.AddrError{Err: "address family mismatch", Addr: address}
		}
		return a, nil
	}
	if !d.ResolveLocally {
		return a, nil
	}
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ips, err := r.LookupNetIP(ctx, ipNet, a.Name)
	if err != nil {
		return Addr{}, err
	}
	a.IP, a.Name = firstIP(ips), ""
	return a, nil
}

// firstIP prefers an IPv4 address, as the proxy is likelier to reach it.
func firstIP(ips []netip.Addr) netip.Addr {
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap()
		}
	}
	return ips[0]
}

func ipNetwork(network string) (string, error) {
	switch network {
	case "tcp":
		return "ip", nil
	case "tcp4":
		return "ip4", nil
	case "tcp6":
		return "ip6", nil
	}
	return "", net.UnknownNetworkError(network)
}
