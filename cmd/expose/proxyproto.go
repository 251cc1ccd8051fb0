package main

// The PROXY protocol header, versions 1 and 2, as HAProxy's specification
// defines it (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt):
// the first bytes a service behind a proxy reads on each connection, naming
// the client and the address the client connected to. expose only writes
// the header, for the TCP proxy case; the specification's sections are
// cited where the bytes come from.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// proxyProtocol is the version of the header expose writes, or none.
type proxyProtocol int

const (
	proxyProtocolNone proxyProtocol = iota
	proxyProtocolV1
	proxyProtocolV2
)

func (p proxyProtocol) String() string {
	switch p {
	case proxyProtocolV1:
		return "v1"
	case proxyProtocolV2:
		return "v2"
	}
	return "none"
}

func parseProxyProtocol(s string) (proxyProtocol, error) {
	switch s {
	case "", "none":
		return proxyProtocolNone, nil
	case "v1", "1":
		return proxyProtocolV1, nil
	case "v2", "2":
		return proxyProtocolV2, nil
	}
	return 0, fmt.Errorf("-proxy-protocol %q: want v1 or v2", s)
}

// v2Signature is the 12 bytes that start a version 2 header (section 2.2).
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// header returns the header of a connection from src (the client) to dst
// (the address it connected to). When either is not an IP address and
// port, the header says the addresses are unknown: "PROXY UNKNOWN" in
// version 1, the address family AF_UNSPEC in version 2, and the service
// then uses the connection's own addresses (section 2.1 and 2.2).
func (p proxyProtocol) header(src, dst net.Addr) []byte {
	s, sok := addrPort(src)
	d, dok := addrPort(dst)
	known := sok && dok
	if known && s.Addr().Is4() != d.Addr().Is4() {
		// Both addresses of a header are of one family: IPv4 as
		// IPv4-mapped IPv6 beside an IPv6 address.
		s = netip.AddrPortFrom(netip.AddrFrom16(s.Addr().As16()), s.Port())
		d = netip.AddrPortFrom(netip.AddrFrom16(d.Addr().As16()), d.Port())
	}
	switch p {
	case proxyProtocolV1:
		return headerV1(s, d, known)
	case proxyProtocolV2:
		return headerV2(s, d, known)
	}
	return nil
}

// headerV1 is the text header of section 2.1:
// "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".
func headerV1(src, dst netip.AddrPort, known bool) []byte {
	if !known {
		return []byte("PROXY UNKNOWN\r\n")
	}
	proto := "TCP6"
	if src.Addr().Is4() {
		proto = "TCP4"
	}
	b := make([]byte, 0, 108) // the longest header, section 2.1
	b = append(b, "PROXY "+proto+" "...)
	b = append(b, src.Addr().String()+" "+dst.Addr().String()+" "...)
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, "\r\n"...)
}

// headerV2 is the binary header of section 2.2: the signature, version 2
// with the command PROXY (0x21), the family and protocol (0x11 TCP over
// IPv4, 0x21 TCP over IPv6, 0x00 unspecified), the length of what follows,
// then the source and destination addresses and ports in network order.
func headerV2(src, dst netip.AddrPort, known bool) []byte {
	b := make([]byte, 0, 16+36)
	b = append(b, v2Signature...)
	b = append(b, 0x21)
	switch {
	case !known:
		return append(b, 0x00, 0, 0)
	case src.Addr().Is4():
		b = append(b, 0x11, 0, 12)
	default:
		b = append(b, 0x21, 0, 36)
	}
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// addrPort returns a's IP address (unmapped) and port, when it has them.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	if !ap.Addr().IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
}
