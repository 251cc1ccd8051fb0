//go:build unix

package socks5test

import "syscall"

// noReuseAddr is a net.ListenConfig.Control that clears SO_REUSEADDR, which
// Go sets on every listening socket, so that a BIND socket sees a port held
// by an open or TIME_WAIT connection as in use, as Dante's does.
func noReuseAddr(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 0)
	}); cerr != nil {
		return cerr
	}
	return err
}
