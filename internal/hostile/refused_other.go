//go:build !unix

package hostile

import "net"

// RefusedAddr returns an address of 127.0.0.1 where connections are
// refused, and a function that releases it. Here it is only a port that
// was free a moment ago.
func RefusedAddr() (addr string, release func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr = ln.Addr().String()
	ln.Close()
	return addr, func() {}, nil
}
