package socksbind

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/socksbind/socksbind/internal/wire"
)

// This file holds the datagram header of RFC 1928 section 7, and the frame
// of GOST's UDP-TUN, which reuses that header on a TCP connection.

// tunFrag is the FRAG byte of every UDP-TUN frame.
const tunFrag = 0xFF

// maxUDPHeader is the length of the longest datagram header: RSV, FRAG,
// ATYP, a domain name of 255 bytes and a port.
const maxUDPHeader = 2 + 1 + 1 + 1 + 255 + 2

// maxTunData is the most data one UDP-TUN frame carries: its length
// travels in the 16-bit RSV field.
const maxTunData = 0xFFFF

// The ways a datagram header can be wrong, for [parseUDPHeader]. Each
// wraps errMalformed; they are made once, so that dropping a datagram
// costs no allocation.
var (
	errUDPShort    = fmt.Errorf("%w: datagram header cut short", errMalformed)
	errUDPReserved = fmt.Errorf("%w: datagram RSV not zero", errMalformed)
	errUDPFragment = fmt.Errorf("%w: fragmented datagram (FRAG not zero)", errMalformed)
	errUDPAddrType = fmt.Errorf("%w: unknown address type in datagram header", errMalformed)
	errUDPName     = fmt.Errorf("%w: invalid domain name in datagram header", errMalformed)
	errTunFrame    = fmt.Errorf("%w: UDP-TUN frame", errMalformed)
)

// appendUDPHeader appends the header of an RFC 1928 datagram: RSV 0, FRAG
// 0, the address and the port. The data follows it.
func appendUDPHeader(b []byte, dst Addr) ([]byte, error) {
	return appendAddr(append(b, 0, 0, 0), dst)
}

// appendTunHeader appends the header of a UDP-TUN frame as GOST writes it
// (go-gost/x internal/util/socks, gosocks5's UDPDatagram): the data length
// big-endian in RSV, FRAG 0xFF, the address and the port. n must be 1 to
// [maxTunData]: GOST reads a frame of length 0 as "the rest of the
// stream".
func appendTunHeader(b []byte, n int, dst Addr) ([]byte, error) {
	if n < 1 || n > maxTunData {
		return b, fmt.Errorf("UDP-TUN frame of %d bytes: want 1 to %d", n, maxTunData)
	}
	return appendAddr(append(b, byte(n>>8), byte(n), tunFrag), dst)
}

// parseUDPHeader parses the header of an RFC 1928 datagram in p and
// returns its address and the header's length, the data being p[n:]. RSV
// must be 0 and FRAG 0 (the library does not reassemble fragments, which
// RFC 1928 makes optional). A domain name must pass [wire.ValidName]; only
// a domain name costs an allocation.
func parseUDPHeader(p []byte) (a Addr, n int, err error) {
	if len(p) < 4 {
		return Addr{}, 0, errUDPShort
	}
	if p[0] != 0 || p[1] != 0 {
		return Addr{}, 0, errUDPReserved
	}
	if p[2] != 0 {
		return Addr{}, 0, errUDPFragment
	}
	return parseAddrAt(p, 3)
}

// parseAddrAt parses ATYP, the address and the port at p[i:], returning
// the offset just past the port.
func parseAddrAt(p []byte, i int) (a Addr, n int, err error) {
	switch p[i] {
	case atypIPv4:
		if len(p) < i+1+4+2 {
			return Addr{}, 0, errUDPShort
		}
		a.IP = netip.AddrFrom4([4]byte(p[i+1 : i+5]))
		i += 5
	case atypIPv6:
		if len(p) < i+1+16+2 {
			return Addr{}, 0, errUDPShort
		}
		a.IP = netip.AddrFrom16([16]byte(p[i+1 : i+17])).Unmap()
		i += 17
	case atypDomain:
		if len(p) < i+2 {
			return Addr{}, 0, errUDPShort
		}
		l := int(p[i+1])
		if len(p) < i+2+l+2 {
			return Addr{}, 0, errUDPShort
		}
		name := p[i+2 : i+2+l]
		for _, c := range name {
			if !wire.NameByte(c) {
				return Addr{}, 0, errUDPName
			}
		}
		if l == 0 {
			return Addr{}, 0, errUDPName
		}
		a.Name = string(name)
		i += 2 + l
	default:
		return Addr{}, 0, errUDPAddrType
	}
	a.Port = uint16(p[i])<<8 | uint16(p[i+1])
	return a, i + 2, nil
}

// readTunFrame reads one UDP-TUN frame from r into buf, which must hold
// [maxTunData] bytes, and returns the address and the data, a prefix of
// buf. A frame whose FRAG is not 0xFF or whose length is 0 is malformed:
// the stream cannot be read on after it. An EOF before the first byte is
// io.EOF; within a frame, io.ErrUnexpectedEOF.
func readTunFrame(r *bufio.Reader, buf []byte) (Addr, []byte, error) {
	head, err := r.Peek(4)
	if err != nil {
		if len(head) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Addr{}, nil, err
	}
	n := int(head[0])<<8 | int(head[1])
	if head[2] != tunFrag || n == 0 {
		return Addr{}, nil, errTunFrame
	}
	var alen int
	switch head[3] {
	case atypIPv4:
		alen = 4 + 2
	case atypIPv6:
		alen = 16 + 2
	case atypDomain:
		h, err := r.Peek(5)
		if err != nil {
			return Addr{}, nil, unexpected(err)
		}
		alen = 1 + int(h[4]) + 2
	default:
		return Addr{}, nil, errUDPAddrType
	}
	hdr, err := r.Peek(4 + alen)
	if err != nil {
		return Addr{}, nil, unexpected(err)
	}
	a, _, err := parseAddrAt(hdr, 3)
	if err != nil {
		return Addr{}, nil, err
	}
	r.Discard(len(hdr))
	data := buf[:n]
	if _, err := io.ReadFull(r, data); err != nil {
		return Addr{}, nil, unexpected(err)
	}
	return a, data, nil
}
