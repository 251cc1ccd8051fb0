//go:build !unix

package socks5test

import "syscall"

// noReuseAddr leaves the socket as it is where SO_REUSEADDR does not have
// its Unix meaning.
func noReuseAddr(_, _ string, _ syscall.RawConn) error { return nil }
