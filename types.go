package socksbind

import (
	"net"

	"github.com/socksbind/socksbind/internal/wire"
)

// A Command is a SOCKS request command. Its String method uses the words of
// RFC 1928.
type Command = wire.Command

// The commands of RFC 1928, and GOST's multiplexed BIND (see [MultiplexOn]).
const (
	CmdConnect       = wire.CmdConnect
	CmdBind          = wire.CmdBind
	CmdUDPAssociate  = wire.CmdUDPAssociate
	CmdMultiplexBind = wire.CmdMultiplexBind
)

// A Reply is the code of a SOCKS reply. Its String method uses the words of
// RFC 1928 ("connection not allowed by ruleset").
type Reply = wire.Reply

// The reply codes of RFC 1928.
const (
	ReplySucceeded               = wire.ReplySucceeded
	ReplyGeneralFailure          = wire.ReplyGeneralFailure
	ReplyNotAllowed              = wire.ReplyNotAllowed
	ReplyNetworkUnreachable      = wire.ReplyNetworkUnreachable
	ReplyHostUnreachable         = wire.ReplyHostUnreachable
	ReplyConnectionRefused       = wire.ReplyConnectionRefused
	ReplyTTLExpired              = wire.ReplyTTLExpired
	ReplyCommandNotSupported     = wire.ReplyCommandNotSupported
	ReplyAddressTypeNotSupported = wire.ReplyAddressTypeNotSupported
)

// An AuthMethod is a SOCKS authentication method number.
type AuthMethod = wire.AuthMethod

// The authentication methods of RFC 1928.
const (
	AuthNone             = wire.AuthNone
	AuthGSSAPI           = wire.AuthGSSAPI
	AuthUsernamePassword = wire.AuthUsernamePassword
	AuthNoAcceptable     = wire.AuthNoAcceptable
)

// An AddrType is the type of an address in a SOCKS message.
type AddrType = wire.AddrType

// The address types of RFC 1928.
const (
	AddrIPv4   = wire.AddrIPv4
	AddrDomain = wire.AddrDomain
	AddrIPv6   = wire.AddrIPv6
)

// Addr is an address as a SOCKS server sees it: an IP address or a domain
// name, and a port. It implements [net.Addr] with the network "tcp"; the
// library returns a [*net.TCPAddr] instead wherever the address is an IP.
type Addr = wire.Addr

// netAddr returns a as a *net.TCPAddr when it holds an IP address, and as
// itself when it holds a name.
func netAddr(a Addr) net.Addr {
	if a.Name != "" {
		return a
	}
	return &net.TCPAddr{IP: a.IP.Unmap().AsSlice(), Port: int(a.Port), Zone: a.IP.Zone()}
}
