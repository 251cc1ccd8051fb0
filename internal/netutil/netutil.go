// Package netutil holds the small pieces of net plumbing that the
// packages of this module share.
package netutil

import (
	"errors"
	"net"
	"net/netip"
)

// TextAddr is an address known only as text (one that did not parse, or a
// host:port as the user gave it), for the fields of a *net.OpError.
type TextAddr string

// Network returns "tcp".
func (a TextAddr) Network() string { return "tcp" }

func (a TextAddr) String() string { return string(a) }

// CloseWrite shuts down the writing side of c when c can; otherwise it
// returns an *net.OpError with the addresses src and dst that wraps
// errors.ErrUnsupported.
func CloseWrite(c net.Conn, src, dst net.Addr) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close write", Net: "tcp", Source: src, Addr: dst, Err: errors.ErrUnsupported}
}

// CloseRead is CloseWrite for the reading side.
func CloseRead(c net.Conn, src, dst net.Addr) error {
	if cr, ok := c.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return &net.OpError{Op: "close read", Net: "tcp", Source: src, Addr: dst, Err: errors.ErrUnsupported}
}

// AddrPort returns the IP address, an IPv4 one unmapped, and the port of a,
// a *net.TCPAddr or an address whose text is "ip:port"; the zero AddrPort
// for anything else.
func AddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if t, ok := a.(*net.TCPAddr); ok {
		ap = t.AddrPort()
	} else {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// IsTimeout reports whether err, or an error it wraps, is a net.Error
// that is a timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
