//go:build unix

package netutil

import "syscall"

// NoReuseAddr is a net.ListenConfig.Control that clears SO_REUSEADDR, which
// Go sets on every listening socket, so that a socket sees a port held by an
// open or TIME_WAIT connection as in use, as Dante's BIND socket does.
func NoReuseAddr(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 0)
	}); cerr != nil {
		return cerr
	}
	return err
}
