// Package tracker keeps the connections of the in-process test servers, so
// that their Close can close every one and wait for their goroutines.
package tracker

import (
	"io"
	"net"
	"sync"
)

// A Set holds the connections a server has open. The zero value is ready.
type Set struct {
	mu     sync.Mutex
	closed bool
	m      map[io.Closer]struct{}
}

// Track registers c to be closed by Close. It reports false, having closed
// c, when the set is already closed.
func (s *Set) Track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.m == nil {
		s.m = make(map[io.Closer]struct{})
	}
	s.m[c] = struct{}{}
	return true
}

// Release closes c and forgets it.
func (s *Set) Release(c io.Closer) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
	c.Close()
}

// Close closes every tracked connection; Track refuses any later one.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		c.Close()
	}
	clear(s.m)
}

// Serve accepts connections from ln until it fails (Close closed it),
// tracks each in s and hands it to handle on a goroutine of wg.
func Serve(ln net.Listener, s *Set, wg *sync.WaitGroup, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !s.Track(c) {
			return
		}
		wg.Go(func() { handle(c) })
	}
}
