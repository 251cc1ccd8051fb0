// Package goid tells goroutines apart, for the one question a lock cannot
// answer: "is the caller the goroutine I would wait for?" It reads the id
// from the header of runtime.Stack, as golang.org/x/net/http2's gotrack.go
// does. That costs about a microsecond: call it where a lifetime is decided
// (a Close, a goroutine's start), never per I/O.
package goid

import (
	"bytes"
	"runtime"
	"strconv"
)

// Current returns the id of the calling goroutine.
func Current() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		b = b[:i]
	}
	id, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		panic("goid: cannot parse goroutine id from " + strconv.Quote(string(buf[:])))
	}
	return id
}
