// Package wire encodes and decodes SOCKS version 5 messages (RFC 1928) and
// the username/password sub-negotiation (RFC 1929).
//
// It is shared by the client in the root package and by the test server in
// socks5test, so that both speak through one codec. Every message is built
// into a single byte slice, so a caller can send it in one Write, and every
// message is read to its exact length, so no byte that follows it on the
// connection is ever consumed.
package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Version5 is the protocol version byte of SOCKS version 5.
const Version5 = 0x05

// A Command is a SOCKS request command (CMD).
type Command byte

// The commands of RFC 1928, section 4.
const (
	CmdConnect      Command = 0x01
	CmdBind         Command = 0x02
	CmdUDPAssociate Command = 0x03

	// CmdMultiplexBind is GOST's multiplexed BIND ("MBIND"), an
	// extension: reply 1 as for BIND, then an smux session on the
	// connection with one stream per peer.
	CmdMultiplexBind Command = 0xF2
)

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

// A Reply is the reply field (REP) of a SOCKS reply.
type Reply byte

// The replies of RFC 1928, section 6.
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

// String returns the wording of RFC 1928.
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

// An AuthMethod is an authentication method number (METHOD).
type AuthMethod byte

// The methods of RFC 1928, section 3.
const (
	AuthNone             AuthMethod = 0x00
	AuthGSSAPI           AuthMethod = 0x01
	AuthUsernamePassword AuthMethod = 0x02
	AuthNoAcceptable     AuthMethod = 0xff
)

func (m AuthMethod) String() string {
	switch m {
	case AuthNone:
		return "no authentication required"
	case AuthGSSAPI:
		return "GSSAPI"
	case AuthUsernamePassword:
		return "username/password"
	case AuthNoAcceptable:
		return "no acceptable methods"
	}
	return "method " + strconv.Itoa(int(m))
}

// An AddrType is the address type field (ATYP).
type AddrType byte

// The address types of RFC 1928, section 5.
const (
	AddrIPv4   AddrType = 0x01
	AddrDomain AddrType = 0x03
	AddrIPv6   AddrType = 0x04
)

func (t AddrType) String() string {
	switch t {
	case AddrIPv4:
		return "IPv4"
	case AddrDomain:
		return "domain name"
	case AddrIPv6:
		return "IPv6"
	}
	return "address type " + strconv.Itoa(int(t))
}

// Addr is an address as it travels in a SOCKS message: an IP address or a
// domain name, and a port. Exactly one of IP and Name is set.
type Addr struct {
	IP   netip.Addr
	Name string
	Port uint16
}

// Type returns the address type the Addr is encoded as.
func (a Addr) Type() AddrType {
	switch {
	case a.Name != "":
		return AddrDomain
	case a.IP.Is4():
		return AddrIPv4
	}
	return AddrIPv6
}

// Host returns the name or the IP address as text.
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
// that [ValidName] refuses (one a program made, since no reply carries
// one) is written as a Go string literal with ASCII escapes, so that the
// text never holds a control byte: a name "a", newline, "b" and port 80
// give `"a\nb":80`.
func (a Addr) String() string {
	port := strconv.Itoa(int(a.Port))
	if a.Name != "" && !ValidName(a.Name) {
		return strconv.QuoteToASCII(a.Name) + ":" + port
	}
	return net.JoinHostPort(a.Host(), port)
}

// ErrMalformed is the error every decoding failure wraps: the peer sent bytes
// that are not a valid message.
var ErrMalformed = errors.New("malformed message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// ErrNameTooLong reports a domain name that does not fit in one byte of length.
var ErrNameTooLong = errors.New("domain name longer than 255 bytes")

// AppendAddr appends ATYP, the address and the port.
func AppendAddr(b []byte, a Addr) ([]byte, error) {
	switch a.Type() {
	case AddrDomain:
		if len(a.Name) > 255 {
			return b, ErrNameTooLong
		}
		b = append(b, byte(AddrDomain), byte(len(a.Name)))
		b = append(b, a.Name...)
	case AddrIPv4:
		ip := a.IP.As4()
		b = append(b, byte(AddrIPv4))
		b = append(b, ip[:]...)
	default:
		if !a.IP.IsValid() {
			// No address at all: the unspecified IPv4 address, which
			// every server reads as "any".
			b = append(b, byte(AddrIPv4), 0, 0, 0, 0)
			break
		}
		ip := a.IP.As16()
		b = append(b, byte(AddrIPv6))
		b = append(b, ip[:]...)
	}
	return append(b, byte(a.Port>>8), byte(a.Port)), nil
}

// AppendGreeting appends the version/method selection message.
func AppendGreeting(b []byte, methods []AuthMethod) []byte {
	b = append(b, Version5, byte(len(methods)))
	for _, m := range methods {
		b = append(b, byte(m))
	}
	return b
}

// ReadGreeting reads a version/method selection message (server side).
func ReadGreeting(r io.Reader) ([]AuthMethod, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	if head[0] != Version5 {
		return nil, malformed("version %d", head[0])
	}
	buf := make([]byte, head[1])
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, unexpected(err)
	}
	methods := make([]AuthMethod, len(buf))
	for i, m := range buf {
		methods[i] = AuthMethod(m)
	}
	return methods, nil
}

// ReadMethodSelection reads the server's choice of method (client side).
// scratch, when it has room for 2 bytes, spares an allocation.
func ReadMethodSelection(r io.Reader, scratch []byte) (AuthMethod, error) {
	b := scratchBuf(scratch, 2)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, unexpected(err)
	}
	if b[0] != Version5 {
		return 0, malformed("method selection version %d", b[0])
	}
	return AuthMethod(b[1]), nil
}

// UserPassVersion is the version byte of the RFC 1929 sub-negotiation.
const UserPassVersion = 0x01

// AppendUserPass appends an RFC 1929 request. The caller checks the lengths.
func AppendUserPass(b []byte, user, pass string) []byte {
	b = append(b, UserPassVersion, byte(len(user)))
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...)
}

// ReadUserPass reads an RFC 1929 request (server side).
func ReadUserPass(r io.Reader) (user, pass string, err error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return "", "", unexpected(err)
	}
	if head[0] != UserPassVersion {
		return "", "", malformed("username/password version %d", head[0])
	}
	u := make([]byte, int(head[1])+1)
	if _, err := io.ReadFull(r, u); err != nil {
		return "", "", unexpected(err)
	}
	p := make([]byte, u[len(u)-1])
	if _, err := io.ReadFull(r, p); err != nil {
		return "", "", unexpected(err)
	}
	return string(u[:len(u)-1]), string(p), nil
}

// ReadUserPassStatus reads the RFC 1929 status reply (client side).
func ReadUserPassStatus(r io.Reader) (byte, error) {
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, unexpected(err)
	}
	if b[0] != UserPassVersion {
		return 0, malformed("username/password status version %d", b[0])
	}
	return b[1], nil
}

// AppendRequest appends a request: VER CMD RSV DST.ADDR DST.PORT.
func AppendRequest(b []byte, cmd Command, dst Addr) ([]byte, error) {
	return AppendAddr(append(b, Version5, byte(cmd), 0), dst)
}

// AppendReply appends a reply: VER REP RSV BND.ADDR BND.PORT.
func AppendReply(b []byte, rep Reply, bnd Addr) []byte {
	b, err := AppendAddr(append(b, Version5, byte(rep), 0), bnd)
	if err != nil {
		// A reply's address comes from the server itself, never from
		// a name longer than 255 bytes.
		panic(err)
	}
	return b
}

// ReadRequest reads a request (server side). Its domain name, if any, may
// hold any bytes: what a server resolves is the server's business.
func ReadRequest(r io.Reader) (Command, Addr, error) {
	code, a, err := readMessage(r, nil, false)
	return Command(code), a, err
}

// ReadReply reads a reply (client side): exactly its head and its address,
// never a byte more. A domain name in the reply must pass [ValidName], or
// the reply is malformed: the name becomes the address of a connection or a
// listener, and its text reaches logs. scratch, when it has room for 22
// bytes, spares an allocation.
func ReadReply(r io.Reader, scratch []byte) (Reply, Addr, error) {
	code, a, err := readMessage(r, scratch, true)
	return Reply(code), a, err
}

// MaxFixedMessage is the length of the longest request or reply without a
// domain name: a head of 4 bytes, an IPv6 address and a port.
const MaxFixedMessage = 4 + 16 + 2

func scratchBuf(scratch []byte, n int) []byte {
	if cap(scratch) >= n {
		return scratch[:n]
	}
	return make([]byte, n)
}

// readMessage reads the shared shape of requests and replies. The reserved
// byte is not checked: servers are known to send garbage there. hostName
// holds a domain name to [ValidName].
func readMessage(r io.Reader, scratch []byte, hostName bool) (byte, Addr, error) {
	buf := scratchBuf(scratch, MaxFixedMessage)
	if _, err := io.ReadFull(r, buf[:4]); err != nil {
		return 0, Addr{}, unexpected(err)
	}
	if buf[0] != Version5 {
		return 0, Addr{}, malformed("version %d", buf[0])
	}
	code := buf[1]
	var a Addr
	switch t := AddrType(buf[3]); t {
	case AddrIPv4, AddrIPv6:
		n := 4
		if t == AddrIPv6 {
			n = 16
		}
		rest := buf[4 : 4+n+2]
		if _, err := io.ReadFull(r, rest); err != nil {
			return 0, Addr{}, unexpected(err)
		}
		a.IP, _ = netip.AddrFromSlice(rest[:n])
		a.Port = uint16(rest[n])<<8 | uint16(rest[n+1])
	case AddrDomain:
		if _, err := io.ReadFull(r, buf[4:5]); err != nil {
			return 0, Addr{}, unexpected(err)
		}
		rest := make([]byte, int(buf[4])+2)
		if _, err := io.ReadFull(r, rest); err != nil {
			return 0, Addr{}, unexpected(err)
		}
		n := len(rest) - 2
		if n == 0 {
			return 0, Addr{}, malformed("empty domain name")
		}
		if hostName {
			for _, b := range rest[:n] {
				if !nameByte(b) {
					return 0, Addr{}, malformed("byte 0x%02x in domain name", b)
				}
			}
		}
		a.Name = string(rest[:n])
		a.Port = uint16(rest[n])<<8 | uint16(rest[n+1])
	default:
		return 0, Addr{}, malformed("%v", t)
	}
	return code, a, nil
}

// unexpected turns an EOF in the middle of a message into
// io.ErrUnexpectedEOF: a peer that closes instead of answering has failed.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Network returns "tcp": the library uses an Addr as the address of a
// relayed TCP connection whose end it knows only by name.
func (a Addr) Network() string { return "tcp" }

// A Stage names the message of an exchange that an error is about, in the
// words its errors print.
type Stage string

// The stages of the exchanges with a proxy.
const (
	StageGreeting          Stage = "greeting reply"       // the method selection
	StageAuth              Stage = "authentication reply" // the answer to the credentials
	StageConnectReply      Stage = "CONNECT reply"
	StageBindReply1        Stage = "BIND reply 1" // the address the proxy listens on
	StageBindReply2        Stage = "BIND reply 2" // the peer that connected
	StageUDPAssociateReply Stage = "UDP ASSOCIATE reply"
	StageMBINDReply        Stage = "MBIND reply"        // the address of a multiplexed BIND
	StageMBINDStreamReply  Stage = "MBIND stream reply" // the header of a stream: its peer
	StageHTTPConnect       Stage = "HTTP CONNECT response"
)

// ReplyStage names the first reply to cmd.
func ReplyStage(cmd Command) Stage {
	switch cmd {
	case CmdConnect:
		return StageConnectReply
	case CmdBind:
		return StageBindReply1
	case CmdUDPAssociate:
		return StageUDPAssociateReply
	case CmdMultiplexBind:
		return StageMBINDReply
	}
	return Stage(strings.ToUpper(cmd.String()) + " reply")
}

// A StageError says which message of an exchange failed. It unwraps to the
// cause, so errors.Is(err, io.ErrUnexpectedEOF) still holds for a message
// cut short.
type StageError struct {
	Stage Stage
	Err   error
}

func (e *StageError) Error() string { return string(e.Stage) + ": " + e.Err.Error() }
func (e *StageError) Unwrap() error { return e.Err }

// AtStage wraps err, unless nil, in a StageError for stage.
func AtStage(stage Stage, err error) error {
	if err == nil {
		return nil
	}
	return &StageError{Stage: stage, Err: err}
}

// StageOf returns the stage of the first StageError in err's tree, or ""
// when there is none.
func StageOf(err error) Stage {
	var se *StageError
	if errors.As(err, &se) {
		return se.Stage
	}
	return ""
}
