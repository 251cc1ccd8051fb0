//go:build !linux

package socks5test_test

// ownListener cannot tell here; requireReleased relies on its dial alone.
func ownListener(uint16) (listening, ok bool) { return false, false }
