// Package srvwire reads and writes SOCKS5 messages as a server does: the
// greeting, the credentials and the request come in, replies and datagram
// headers go out. The test servers use it; the client's own codec is in the
// root package, and the two are written apart so that one mistake cannot
// hide on both sides of a test.
//
// Its readers take the whole message from an io.Reader, byte group by byte
// group, in the order a server meets them; nothing here is fast, and
// nothing needs to be.
package srvwire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/wire"
)

// The protocol's version bytes, its address types, and GOST's UDP-TUN
// fragment byte.
const (
	Version         = 5
	UserPassVersion = 1

	ipv4   = 1
	domain = 3
	ipv6   = 4

	tunFrag = 0xFF
)

// MaxUDPHeader is the length of the longest datagram header: RSV, FRAG,
// ATYP, a domain name of 255 bytes and a port.
const MaxUDPHeader = 2 + 1 + 1 + 1 + 255 + 2

// MaxTunData is the most data one UDP-TUN frame carries: its length
// travels in the 16-bit RSV field.
const MaxTunData = 0xFFFF

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{wire.ErrMalformed}, args...)...)
}

// readN reads the next n bytes. An EOF after the first byte of a message
// is io.ErrUnexpectedEOF; at, the offset of these bytes in the message,
// tells the two apart.
func readN(r io.Reader, n, at int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if at > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// ReadGreeting reads the version/method selection message.
func ReadGreeting(r io.Reader) ([]socksbind.AuthMethod, error) {
	head, err := readN(r, 2, 0)
	if err != nil {
		return nil, err
	}
	if head[0] != Version {
		return nil, malformed("version %d", head[0])
	}
	list, err := readN(r, int(head[1]), 2)
	if err != nil {
		return nil, err
	}
	methods := make([]socksbind.AuthMethod, len(list))
	for i, m := range list {
		methods[i] = socksbind.AuthMethod(m)
	}
	return methods, nil
}

// ReadUserPass reads an RFC 1929 request.
func ReadUserPass(r io.Reader) (user, pass string, err error) {
	head, err := readN(r, 2, 1) // owed once the method is chosen
	if err != nil {
		return "", "", err
	}
	if head[0] != UserPassVersion {
		return "", "", malformed("username/password version %d", head[0])
	}
	u, err := readN(r, int(head[1])+1, 2)
	if err != nil {
		return "", "", err
	}
	p, err := readN(r, int(u[len(u)-1]), 1)
	if err != nil {
		return "", "", err
	}
	return string(u[:len(u)-1]), string(p), nil
}

// ReadMessage reads a request (VER CMD RSV DST.ADDR DST.PORT), or, for a
// test playing the client, a reply of the same shape, and returns its
// second byte and its address. The reserved byte is not checked, and a
// domain name may hold any bytes: what a server resolves is its own
// business. An EOF anywhere in it is io.ErrUnexpectedEOF: a peer that
// closes instead of sending a message it owes has failed.
func ReadMessage(r io.Reader) (byte, socksbind.Addr, error) {
	head, err := readN(r, 4, 1)
	if err != nil {
		return 0, socksbind.Addr{}, err
	}
	if head[0] != Version {
		return 0, socksbind.Addr{}, malformed("version %d", head[0])
	}
	a, err := readAddrAfter(r, head[3])
	return head[1], a, err
}

// ReadRequest reads a request with [ReadMessage].
func ReadRequest(r io.Reader) (socksbind.Command, socksbind.Addr, error) {
	cmd, a, err := ReadMessage(r)
	return socksbind.Command(cmd), a, err
}

// readAddr reads ATYP, the address and the port.
func readAddr(r io.Reader) (socksbind.Addr, error) {
	atyp, err := readN(r, 1, 0)
	if err != nil {
		return socksbind.Addr{}, err
	}
	return readAddrAfter(r, atyp[0])
}

// readAddrAfter reads the address and the port that follow ATYP.
func readAddrAfter(r io.Reader, atyp byte) (socksbind.Addr, error) {
	var n int
	switch atyp {
	case ipv4:
		n = 4
	case ipv6:
		n = 16
	case domain:
		l, err := readN(r, 1, 1)
		if err != nil {
			return socksbind.Addr{}, err
		}
		n = int(l[0])
	default:
		return socksbind.Addr{}, malformed("address type %d", atyp)
	}
	b, err := readN(r, n+2, 1)
	if err != nil {
		return socksbind.Addr{}, err
	}
	a := socksbind.Addr{Port: binary.BigEndian.Uint16(b[n:])}
	if atyp == domain {
		// Read to its end first: a server that drops the message has
		// taken every byte of it.
		if n == 0 {
			return socksbind.Addr{}, malformed("empty domain name")
		}
		a.Name = string(b[:n])
	} else {
		a.IP, _ = netip.AddrFromSlice(b[:n])
	}
	return a, nil
}

// AppendMessage appends a reply (VER REP RSV BND.ADDR BND.PORT), or, for a
// test playing the client, a request of the same shape.
func AppendMessage(b []byte, code byte, a socksbind.Addr) []byte {
	return appendAddr(append(b, Version, code, 0), a)
}

// AppendReply appends a reply with [AppendMessage].
func AppendReply(b []byte, rep socksbind.Reply, bnd socksbind.Addr) []byte {
	return AppendMessage(b, byte(rep), bnd)
}

// appendAddr appends ATYP, the address and the port: an IPv4 address
// (an IPv4-mapped one included) as ATYP 1, no address as 0.0.0.0, a name
// longer than 255 bytes cut there (no server of these tests makes one).
func appendAddr(b []byte, a socksbind.Addr) []byte {
	ip := a.IP.Unmap()
	switch {
	case a.Name != "":
		name := a.Name[:min(len(a.Name), 255)]
		b = append(append(b, domain, byte(len(name))), name...)
	case ip.Is6():
		b = append(append(b, ipv6), ip.AsSlice()...)
	case ip.Is4():
		b = append(append(b, ipv4), ip.AsSlice()...)
	default:
		b = append(b, ipv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, a.Port)
}

// AppendUDPHeader appends the header of an RFC 1928 datagram: RSV 0, FRAG
// 0, the address and the port.
func AppendUDPHeader(b []byte, a socksbind.Addr) []byte {
	return appendAddr(append(b, 0, 0, 0), a)
}

// ParseUDPHeader parses the header of a datagram and returns its address,
// an IPv4-mapped one unmapped, and its data. A datagram with RSV or FRAG not 0 is malformed, as is one
// whose domain name is not a host name: the server drops them all.
func ParseUDPHeader(p []byte) (socksbind.Addr, []byte, error) {
	if len(p) < 3 || p[0] != 0 || p[1] != 0 || p[2] != 0 {
		return socksbind.Addr{}, nil, malformed("datagram header")
	}
	r := bytes.NewReader(p[3:])
	a, err := readAddr(r)
	if err != nil {
		return socksbind.Addr{}, nil, malformed("datagram header: %v", err)
	}
	if a.Name != "" && !wire.ValidName(a.Name) {
		return socksbind.Addr{}, nil, malformed("datagram name")
	}
	a.IP = a.IP.Unmap()
	return a, p[len(p)-r.Len():], nil
}

// AppendTunHeader appends the header of a UDP-TUN frame of n bytes of data,
// as GOST writes it: the length in RSV, FRAG 0xFF, the address and the
// port. n must be 1 to [MaxTunData].
func AppendTunHeader(b []byte, n int, a socksbind.Addr) ([]byte, error) {
	if n < 1 || n > MaxTunData {
		return b, fmt.Errorf("UDP-TUN frame of %d bytes: want 1 to %d", n, MaxTunData)
	}
	b = append(binary.BigEndian.AppendUint16(b, uint16(n)), tunFrag)
	return appendAddr(b, a), nil
}

// ReadTunFrame reads one UDP-TUN frame into buf, which must hold
// [MaxTunData] bytes, and returns its address, an IPv4-mapped one
// unmapped, and its data, a prefix of buf. The end of r between two frames is io.EOF.
func ReadTunFrame(r *bufio.Reader, buf []byte) (socksbind.Addr, []byte, error) {
	head, err := readN(r, 3, 0)
	if err != nil {
		return socksbind.Addr{}, nil, err
	}
	n := int(binary.BigEndian.Uint16(head))
	if head[2] != tunFrag || n == 0 {
		return socksbind.Addr{}, nil, malformed("UDP-TUN frame")
	}
	a, err := readAddr(r)
	if err == nil && a.Name != "" && !wire.ValidName(a.Name) {
		return socksbind.Addr{}, nil, malformed("UDP-TUN frame name")
	}
	if err == nil {
		_, err = io.ReadFull(r, buf[:n])
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return socksbind.Addr{}, nil, err
	}
	a.IP = a.IP.Unmap()
	return a, buf[:n], nil
}
