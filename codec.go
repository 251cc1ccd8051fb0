package socksbind

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/socksbind/socksbind/internal/wire"
)

// This file is the client's codec for the messages of RFC 1928 (SOCKS5)
// and RFC 1929 (username/password): what the client writes (greeting,
// credentials, request) and what it reads (method selection, status,
// reply). Every message is built into a single byte slice, so that it is
// sent in one Write, and every message is read to its exact length, so
// that no byte following it on the connection is ever consumed.

// The version bytes, and the address types (ATYP) of RFC 1928, section 5.
const (
	version5        = 0x05
	userPassVersion = 0x01

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// maxFixedMessage is the length of the longest reply without a domain
// name: a head of 4 bytes, an IPv6 address and a port.
const maxFixedMessage = 4 + 16 + 2

// errNameTooLong reports a domain name that does not fit in one byte of
// length.
var errNameTooLong = errors.New("domain name longer than 255 bytes")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...)
}

// appendAddr appends ATYP, the address and the port. With neither a name
// nor an IP, it appends the unspecified IPv4 address, which every server
// reads as "any".
func appendAddr(b []byte, a Addr) ([]byte, error) {
	switch {
	case a.Name != "":
		if len(a.Name) > 255 {
			return b, errNameTooLong
		}
		b = append(b, atypDomain, byte(len(a.Name)))
		b = append(b, a.Name...)
	case a.IP.Is4():
		ip := a.IP.As4()
		b = append(b, atypIPv4)
		b = append(b, ip[:]...)
	case !a.IP.IsValid():
		b = append(b, atypIPv4, 0, 0, 0, 0)
	default:
		ip := a.IP.As16()
		b = append(b, atypIPv6)
		b = append(b, ip[:]...)
	}
	return append(b, byte(a.Port>>8), byte(a.Port)), nil
}

// appendRequest appends a request: VER CMD RSV DST.ADDR DST.PORT.
func appendRequest(b []byte, cmd Command, dst Addr) ([]byte, error) {
	return appendAddr(append(b, version5, byte(cmd), 0), dst)
}

// appendUserPass appends an RFC 1929 request. The caller checks the
// lengths.
func appendUserPass(b []byte, user, pass string) []byte {
	b = append(b, userPassVersion, byte(len(user)))
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...)
}

// readMethodSelection reads the proxy's choice of method. scratch, when it
// has room for 2 bytes, spares an allocation.
func readMethodSelection(r io.Reader, scratch []byte) (AuthMethod, error) {
	b := scratchBuf(scratch, 2)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, unexpected(err)
	}
	if b[0] != version5 {
		return 0, malformed("method selection version %d", b[0])
	}
	return AuthMethod(b[1]), nil
}

// readUserPassStatus reads the RFC 1929 status reply.
func readUserPassStatus(r io.Reader) (byte, error) {
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, unexpected(err)
	}
	if b[0] != userPassVersion {
		return 0, malformed("username/password status version %d", b[0])
	}
	return b[1], nil
}

// readReply reads a reply, VER REP RSV BND.ADDR BND.PORT: exactly its head
// and its address, never a byte more. The reserved byte is not checked:
// servers are known to send garbage there. A domain name must pass
// [wire.ValidName], or the reply is malformed: the name becomes the
// address of a connection or a listener, and its text reaches logs.
// scratch, when it has room for [maxFixedMessage] bytes, spares an
// allocation.
func readReply(r io.Reader, scratch []byte) (Reply, Addr, error) {
	buf := scratchBuf(scratch, maxFixedMessage)
	if _, err := io.ReadFull(r, buf[:4]); err != nil {
		return 0, Addr{}, unexpected(err)
	}
	if buf[0] != version5 {
		return 0, Addr{}, malformed("version %d", buf[0])
	}
	rep := Reply(buf[1])
	var a Addr
	switch buf[3] {
	case atypIPv4, atypIPv6:
		n := 4
		if buf[3] == atypIPv6 {
			n = 16
		}
		rest := buf[4 : 4+n+2]
		if _, err := io.ReadFull(r, rest); err != nil {
			return 0, Addr{}, unexpected(err)
		}
		a.IP, _ = netip.AddrFromSlice(rest[:n])
		a.Port = uint16(rest[n])<<8 | uint16(rest[n+1])
	case atypDomain:
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
		for _, b := range rest[:n] {
			if !wire.NameByte(b) {
				return 0, Addr{}, malformed("byte 0x%02x in domain name", b)
			}
		}
		a.Name = string(rest[:n])
		a.Port = uint16(rest[n])<<8 | uint16(rest[n+1])
	default:
		return 0, Addr{}, malformed("address type %d", buf[3])
	}
	return rep, a, nil
}

func scratchBuf(scratch []byte, n int) []byte {
	if cap(scratch) >= n {
		return scratch[:n]
	}
	return make([]byte, n)
}

// unexpected turns an EOF in the middle of a message into
// io.ErrUnexpectedEOF: a peer that closes instead of answering has failed.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// replyStage names the first reply to cmd, for errors.
func replyStage(cmd Command) wire.Stage {
	switch cmd {
	case CmdConnect:
		return wire.StageConnectReply
	case CmdBind:
		return wire.StageBindReply1
	case CmdUDPAssociate:
		return wire.StageUDPAssociateReply
	case CmdMultiplexBind:
		return wire.StageMBINDReply
	}
	return wire.Stage(strings.ToUpper(cmd.String()) + " reply")
}
