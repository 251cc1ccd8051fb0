//go:build !linux

package socks5test_test

import "syscall"

// ownListener cannot tell here; requireReleased relies on its dial alone.
func ownListener(uint16) (listening, ok bool) { return false, false }

// noReuseAddr leaves the socket as it is.
func noReuseAddr(_, _ string, _ syscall.RawConn) error { return nil }
