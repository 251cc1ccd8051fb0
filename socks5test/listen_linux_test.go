package socks5test_test

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ownListener reports whether a socket of the test process listens on port
// p. It asks each socket of the process for its address, which is quick
// where /proc/net/tcp, listing every socket of the machine, may take long.
func ownListener(p uint16) (listening, ok bool) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false, false
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// Other goroutines open and close descriptors meanwhile: a
		// number read here may name another file by now, which is
		// harmless for a check that looks for a listener on p.
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		var port int
		switch sa := sa.(type) {
		case *syscall.SockaddrInet4:
			port = sa.Port
		case *syscall.SockaddrInet6:
			port = sa.Port
		default:
			continue
		}
		if port != int(p) {
			continue
		}
		if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err == nil && v == 1 {
			return true, true
		}
	}
	return false, true
}
