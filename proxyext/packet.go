package proxyext

import (
	"context"
	"fmt"
	"net"
	"net/url"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
)

// PacketListener is a dialer that can also relay UDP, with UDP ASSOCIATE
// or GOST's UDP-TUN. What [FromURL] and [FromEnvironment] return implements
// it when the proxy is a SOCKS5 one; ListenPacket has the meaning of
// [socksbind.Dialer.ListenPacket], and the URL's udp parameter selects the
// command. Their DialContext also takes the networks "udp", "udp4" and
// "udp6", for a connected datagram conn through the proxy.
type PacketListener interface {
	ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error)
}

var (
	_ PacketListener = (*socksDialer)(nil)
	_ PacketListener = (*envListenDialer)(nil)
)

// udpMode reads the udp query parameter of a SOCKS5 URL: absent for UDP
// ASSOCIATE, "tun" for GOST's UDP-TUN, "auto" for UDP ASSOCIATE with
// UDP-TUN as the fallback.
func udpMode(q url.Values) (socksbind.UDPMode, error) {
	v, ok, err := param(q, "udp")
	switch {
	case err != nil || !ok:
		return socksbind.UDPAssociate, err
	case v == "tun":
		return socksbind.UDPTunnel, nil
	case v == "auto":
		return socksbind.UDPAuto, nil
	}
	return 0, fmt.Errorf("invalid udp=%s: want udp=tun or udp=auto, or no udp for UDP ASSOCIATE", url.QueryEscape(v))
}

// ListenPacket asks the proxy to relay UDP; see
// [socksbind.Dialer.ListenPacket].
func (s *socksDialer) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	pc, err := s.d.ListenPacket(ctx, network, address)
	if err != nil {
		return nil, via(s.url, err)
	}
	return pc, nil
}

// ListenPacket asks the proxy to relay UDP. NO_PROXY does not apply.
func (e *envListenDialer) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	pl, ok := e.ld.(PacketListener)
	if !ok {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: netutil.TextAddr(address), Err: socksbind.ErrCommandNotSupported}
	}
	pc, err := pl.ListenPacket(ctx, network, address)
	return pc, e.via(err)
}

// ListenPacket returns a [net.PacketConn] whose datagrams go through the
// proxy of ALL_PROXY, read at the time of the call: a
// [*socksbind.PacketConn], from the [PacketListener] of [FromEnvironment].
// The proxy URL's udp parameter selects UDP ASSOCIATE (the default) or
// GOST's UDP-TUN (udp=tun, or udp=auto to fall back to it).
//
// When no proxy is configured, ListenPacket listens on this host instead,
// as [net.ListenConfig.ListenPacket] does with the same arguments, so that
// the same program runs with and without a proxy. When the proxy cannot
// relay UDP (an http or https proxy), the error matches
// [socksbind.ErrCommandNotSupported]. ctx bounds the handshake. Errors are
// *net.OpError.
func ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	return listenPacket(ctx, network, address, true)
}

// ListenPacketProxy is [ListenPacket] without the local fallback: when no
// proxy is configured, it fails with an error matching
// [socksbind.ErrNoProxy].
func ListenPacketProxy(ctx context.Context, network, address string) (net.PacketConn, error) {
	return listenPacket(ctx, network, address, false)
}

func listenPacket(ctx context.Context, network, address string, fallback bool) (net.PacketConn, error) {
	env, err := configuredProxy(network, address, fallback)
	if err != nil {
		return nil, err
	}
	if env == nil {
		var lc net.ListenConfig
		return lc.ListenPacket(ctx, network, address)
	}
	pl, ok := env.dialer.(PacketListener)
	if !ok {
		return nil, env.cannot(network, address, "relay UDP")
	}
	return pl.ListenPacket(ctx, network, address)
}
