package socksbind

import (
	"net"
	"net/netip"
	"strconv"

	"github.com/socksbind/socksbind/internal/wire"
)

// A Command is a SOCKS request command (CMD). Its String method uses the
// words of RFC 1928.
type Command byte

// The commands of RFC 1928, and GOST's multiplexed BIND (see [MultiplexOn]).
const (
	CmdConnect      Command = 0x01
	CmdBind         Command = 0x02
	CmdUDPAssociate Command = 0x03

	// CmdMultiplexBind is GOST's multiplexed BIND ("MBIND"), an
	// extension: reply 1 as for BIND, then an smux session on the
	// connection with one stream per peer.
	CmdMultiplexBind Command = 0xF2

	// CmdUDPTun is GOST's UDP-over-TCP ("UDP-TUN"), an extension: the
	// reply as for UDP ASSOCIATE, then every datagram framed on the
	// control connection itself. See [UDPTunnel].
	CmdUDPTun Command = 0xF3
)

// String returns the command in lower case: "connect", "bind", "udp
// associate", "mbind", "udp tun", or "unknown command N".
func (c Command) String() string {
	switch c {
	case CmdConnect:
		return "connect"
	case CmdBind:
		return "bind"
	case CmdUDPAssociate:
		return "udp associate"
	case CmdMultiplexBind:
		return "mbind"
	case CmdUDPTun:
		return "udp tun"
	}
	return "unknown command " + strconv.Itoa(int(c))
}

// A Reply is the code of a SOCKS reply (REP). Its String method uses the
// words of RFC 1928 ("connection not allowed by ruleset").
type Reply byte

// The reply codes of RFC 1928.
const (
	ReplySucceeded               Reply = 0x00
	ReplyGeneralFailure          Reply = 0x01
	ReplyNotAllowed              Reply = 0x02
	ReplyNetworkUnreachable      Reply = 0x03
	ReplyHostUnreachable         Reply = 0x04
	ReplyConnectionRefused       Reply = 0x05
	ReplyTTLExpired              Reply = 0x06
	ReplyCommandNotSupported     Reply = 0x07
	ReplyAddressTypeNotSupported Reply = 0x08
)

// String returns the wording of RFC 1928, or "unknown reply N".
func (r Reply) String() string {
	switch r {
	case ReplySucceeded:
		return "succeeded"
	case ReplyGeneralFailure:
		return "general SOCKS server failure"
	case ReplyNotAllowed:
		return "connection not allowed by ruleset"
	case ReplyNetworkUnreachable:
		return "network unreachable"
	case ReplyHostUnreachable:
		return "host unreachable"
	case ReplyConnectionRefused:
		return "connection refused"
	case ReplyTTLExpired:
		return "TTL expired"
	case ReplyCommandNotSupported:
		return "command not supported"
	case ReplyAddressTypeNotSupported:
		return "address type not supported"
	}
	return "unknown reply " + strconv.Itoa(int(r))
}

// An AuthMethod is a SOCKS authentication method number (METHOD).
type AuthMethod byte

// The authentication methods of RFC 1928.
const (
	AuthNone             AuthMethod = 0x00
	AuthUsernamePassword AuthMethod = 0x02
	AuthNoAcceptable     AuthMethod = 0xFF
)

// String returns the name of the method ("no authentication required",
// "username/password", "GSSAPI" for method 1, which a proxy may choose),
// or "method N".
func (m AuthMethod) String() string {
	switch m {
	case AuthNone:
		return "no authentication required"
	case 0x01:
		return "GSSAPI"
	case AuthUsernamePassword:
		return "username/password"
	case AuthNoAcceptable:
		return "no acceptable methods"
	}
	return "method " + strconv.Itoa(int(m))
}

// Addr is an address as a SOCKS server sees it: an IP address or a domain
// name, and a port. At most one of IP and Name is set; with neither, a
// request carries the unspecified address 0.0.0.0. It implements [net.Addr]
// with the network "tcp"; the library returns a [*net.TCPAddr] instead
// wherever the address is an IP.
type Addr struct {
	// IP is the address when the message carries one (ATYP 1 or 4).
	IP netip.Addr

	// Name is the domain name when the message carries one (ATYP 3).
	Name string

	// Port is the port (DST.PORT or BND.PORT).
	Port uint16
}

// Host returns the name or the IP address as text, an IPv4-mapped IPv6
// address as IPv4; "" when neither is set.
func (a Addr) Host() string {
	if a.Name != "" {
		return a.Name
	}
	if !a.IP.IsValid() {
		return ""
	}
	return a.IP.Unmap().String()
}

// String returns "host:port", with an IPv6 address in brackets. A name
// that is not a host name as a reply may carry one (1 to 255 bytes, each an
// ASCII letter or digit, '-', '.' or '_') is written as a Go string literal
// with ASCII escapes, so that the text never holds a control byte: a name
// "a", newline, "b" and port 80 give `"a\nb":80`.
func (a Addr) String() string {
	port := strconv.Itoa(int(a.Port))
	if a.Name != "" && !wire.ValidName(a.Name) {
		return strconv.QuoteToASCII(a.Name) + ":" + port
	}
	return net.JoinHostPort(a.Host(), port)
}

// Network returns "tcp": the library uses an Addr as the address of a
// relayed TCP connection whose end it knows only by name.
func (a Addr) Network() string { return "tcp" }

var _ net.Addr = Addr{}

// netAddr returns a as a *net.TCPAddr when it holds an IP address, and as
// itself when it holds a name.
func netAddr(a Addr) net.Addr {
	if a.Name != "" {
		return a
	}
	return &net.TCPAddr{IP: a.IP.Unmap().AsSlice(), Port: int(a.Port), Zone: a.IP.Zone()}
}
