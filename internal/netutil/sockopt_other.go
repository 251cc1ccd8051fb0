//go:build !unix

package netutil

import "syscall"

// NoReuseAddr leaves the socket as it is where SO_REUSEADDR does not have
// its Unix meaning.
func NoReuseAddr(_, _ string, _ syscall.RawConn) error { return nil }
