package srvbase_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/srvbase"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/internal/tracker"
)

const testTimeout = 30 * time.Second

// server is the least a server built on a Base holds: its listener, wait
// group and connections. Its handler dials upstream, tracks that
// connection too, reads it on a goroutine of wg, and reads the client; the
// client and upstream send nothing, so both reads return only when Close
// closes the connections.
type server struct {
	base  srvbase.Base
	ln    net.Listener
	ctx   context.Context
	wg    sync.WaitGroup
	conns tracker.Set

	upstream string
	serving  chan struct{} // a handler has both connections tracked
	returned chan struct{} // one for each handler or goroutine returned
	closes   chan struct{} // one for each call of onClose
}

func newServer(upstream string) *server {
	s := &server{
		ln:       srvbase.Listen("srvbasetest"),
		upstream: upstream,
		serving:  make(chan struct{}, 1),
		returned: make(chan struct{}, 2),
		closes:   make(chan struct{}, 2),
	}
	s.ctx = s.base.Init("srvbasetest", &s.wg, &s.conns, func() { s.closes <- struct{}{} })
	return s
}

func (s *server) handle(c net.Conn) {
	defer func() { s.returned <- struct{}{} }()
	defer s.conns.Release(c)
	var d net.Dialer
	out, err := d.DialContext(s.ctx, "tcp", s.upstream)
	if err != nil || !s.conns.Track(out) {
		return
	}
	defer s.conns.Release(out)
	s.wg.Go(func() {
		defer func() { s.returned <- struct{}{} }()
		out.Read(make([]byte, 1))
	})
	s.serving <- struct{}{}
	c.Read(make([]byte, 1))
}

// connect starts s, connects a client and waits until a handler serves it.
func connect(t *testing.T, s *server) net.Conn {
	t.Helper()
	s.base.Start(s.ln, s.handle)
	c, err := net.Dial("tcp", s.ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	select {
	case <-s.serving:
	case <-time.After(testTimeout):
		t.Fatal("the connection was never served")
	}
	return c
}

// closeWithin calls Close and fails the test if it does not return in time.
func closeWithin(t *testing.T, s *server) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.base.Close(s.ln)
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("Close did not return")
	}
}

func TestListen(t *testing.T) {
	ln := srvbase.Listen("srvbasetest")
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	assert.Equal(t, "127.0.0.1", addr.IP.String())
	assert.NotZero(t, addr.Port)
}

func TestCloseClosesConnectionsAndWaits(t *testing.T) {
	leakcheck.Check(t)
	echo := testkit.Echo(t, "tcp")
	s := newServer(echo.Addr().String())
	c := connect(t, s)

	closeWithin(t, s)
	// The handler and the goroutine it started were blocked reading the
	// two tracked connections: Close closed both and waited for both.
	assert.Equal(t, 2, len(s.returned))
	assert.Equal(t, 1, len(s.closes))
	assert.ErrorIs(t, s.ctx.Err(), context.Canceled)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(testTimeout)))
	_, err := c.Read(make([]byte, 1))
	assert.Error(t, err)
	assert.False(t, testkit.IsTimeout(err), "the client's connection was not closed")
	_, err = net.Dial("tcp", s.ln.Addr().String())
	assert.Error(t, err, "the listener was closed")
}

func TestCloseTwice(t *testing.T) {
	leakcheck.Check(t)
	echo := testkit.Echo(t, "tcp")
	s := newServer(echo.Addr().String())
	connect(t, s)

	// Every concurrent Close returns only once the shutdown is complete.
	var wg sync.WaitGroup
	returned := make(chan int, 4)
	for range 4 {
		wg.Go(func() {
			s.base.Close(s.ln)
			returned <- len(s.returned)
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("Close did not return")
	}
	close(returned)
	for n := range returned {
		assert.Equal(t, 2, n, "a Close returned before the goroutines did")
	}
	closeWithin(t, s)
	assert.Equal(t, 1, len(s.closes), "onClose ran once")
	assert.PanicsWithValue(t, "srvbasetest: Server already closed", func() { s.base.Start(s.ln, s.handle) })
}

func TestCloseBeforeStart(t *testing.T) {
	leakcheck.Check(t)
	s := newServer("127.0.0.1:1")
	closeWithin(t, s)
	assert.Equal(t, 1, len(s.closes))
	assert.ErrorIs(t, s.ctx.Err(), context.Canceled)
	_, err := s.ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	assert.PanicsWithValue(t, "srvbasetest: Server already closed", func() { s.base.Start(s.ln, s.handle) })
	closeWithin(t, s)
	assert.Equal(t, 1, len(s.closes))
}

func TestStartTwicePanics(t *testing.T) {
	leakcheck.Check(t)
	s := newServer("127.0.0.1:1")
	s.base.Start(s.ln, s.handle)
	assert.PanicsWithValue(t, "srvbasetest: Server already started", func() { s.base.Start(s.ln, s.handle) })
	closeWithin(t, s)
}
