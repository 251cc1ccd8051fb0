// Package srvbase is the scaffolding the in-process test servers share, as
// net/http/httptest would share it between two servers: a listener on a
// kernel-chosen port of 127.0.0.1, start-once and close-once bookkeeping,
// the serve loop, and a Close that closes the listener and every tracked
// connection and waits for every goroutine serving them.
//
// Each server keeps its own protocol code, and its own wait group and
// connection set, which that code uses for the goroutines and connections it
// adds; a [Base] serves and shuts down with them.
package srvbase

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/socksbind/socksbind/internal/tracker"
)

// Listen returns a listener on a kernel-chosen port of 127.0.0.1. Like
// httptest.NewUnstartedServer, it panics when it cannot listen; pkg names
// the server's package in the message.
func Listen(pkg string) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("%s: failed to listen on a port: %v", pkg, err))
	}
	return ln
}

// A state is where a [Base] is in its life. It only moves forward: a Base
// can be closed without ever serving.
type state int

const (
	idle state = iota
	serving
	closed
)

// A Base starts and shuts down one server. Call [Base.Init] before any other
// method.
type Base struct {
	pkg     string
	wg      *sync.WaitGroup
	conns   *tracker.Set
	cancel  context.CancelFunc
	onClose func()

	mu    sync.Mutex // guards state
	state state
}

// Init prepares b for a server of package pkg, named in panics. Every
// goroutine the server starts joins wg and every connection it has open is
// in conns, so that Close can close them and wait. onClose, when non-nil,
// is called once by the first Close, after the connections are closed, to
// close whatever else the server holds open; it must not call b's methods.
// Init returns the context that Close cancels, for the dials the server
// makes for its clients. A server calls Init once, before Start or Close.
func (b *Base) Init(pkg string, wg *sync.WaitGroup, conns *tracker.Set, onClose func()) context.Context {
	b.pkg, b.wg, b.conns, b.onClose = pkg, wg, conns, onClose
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	return ctx
}

// Start serves ln on a goroutine of wg until Close: it tracks every
// connection it accepts in conns and hands it to handle on a goroutine of
// its own, also of wg. handle must release the connection from conns when
// done with it. Start panics if b was already started or closed.
func (b *Base) Start(ln net.Listener, handle func(net.Conn)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case serving:
		panic(b.pkg + ": Server already started")
	case closed:
		panic(b.pkg + ": Server already closed")
	}
	b.state = serving
	b.wg.Go(func() { tracker.Serve(ln, b.conns, b.wg, handle) })
}

// Close shuts the server down: the first call closes ln, the server's
// current listener whether or not it was started, cancels the context of
// Init, closes every connection in conns and calls onClose. Every call then
// waits for every goroutine of wg to return. It is safe to call more than
// once and from several goroutines, but not from a goroutine of wg.
func (b *Base) Close(ln net.Listener) {
	b.mu.Lock()
	if b.state != closed {
		b.state = closed
		ln.Close()
		b.cancel()
		b.conns.Close()
		if b.onClose != nil {
			b.onClose()
		}
	}
	b.mu.Unlock()
	b.wg.Wait()
}
