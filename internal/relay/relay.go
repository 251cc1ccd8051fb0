// Package relay copies between two connections the way a proxy does, for
// the in-process test servers.
package relay

import (
	"io"
	"net"
	"sync"
)

// Run copies data both ways between a and b until both directions are done,
// the second direction on a goroutine of wg. An EOF on one side is passed on
// as a half-close of the other where it supports one; an error in either
// direction closes both.
func Run(wg *sync.WaitGroup, a, b net.Conn) {
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		pipe(b, a)
	})
	pipe(a, b)
	<-done
}

func pipe(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		src.Close()
		dst.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}
