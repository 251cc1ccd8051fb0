//go:build unix

package hostile

import (
	"net"
	"strconv"
	"syscall"
)

// RefusedAddr returns an address of 127.0.0.1 where every connection is
// refused, and a function that releases it. Until then the port is held by
// a socket that is bound but does not listen, so that no other socket, of
// this process or another, takes it: a port that was merely free a moment
// ago may by then be another test's listener, or the local port of some
// outgoing connection.
func RefusedAddr() (addr string, release func(), err error) {
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return "", nil, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return "", nil, err
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return "", nil, err
	}
	port := sa.(*syscall.SockaddrInet4).Port
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), func() { syscall.Close(fd) }, nil
}
