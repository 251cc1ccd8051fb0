package socksbind_test

// Regression tests for races between Accept, Close, SetDeadline, re-arming
// and Armed. Some give a wrong implementation a moment to misbehave with a
// short sleep; none relies on a sleep for a correct one to pass.

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/wire"
	"github.com/socksbind/socksbind/socks5test"
)

func bindCount(srv *socks5test.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Command == socksbind.CmdBind {
			n++
		}
	}
	return n
}

// Close while Accept re-arms after a failed reply 2 reports ErrClosed, not
// the reply's error.
func TestCloseDuringRearmAfterFailedReply2(t *testing.T) {
	srv := newProxy(t, stallRequests(func(n int) bool { return n == 2 }))
	ln := listen(t, srv, socksbind.ListenConfig{}, "127.0.0.2:0")
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	dialPeer(t, ln.Addr()) // from 127.0.0.1: refused by the filter
	require.Eventually(t, func() bool { return bindCount(srv) == 2 }, 5*time.Second, time.Millisecond)
	ln.Close()
	assert.ErrorIs(t, <-errc, net.ErrClosed)
}

// A reply 2 of code 6 keeps its code, and the listener re-arms.
func TestTTLExpiredReply2(t *testing.T) {
	var first atomic.Bool
	srv := newProxy(t, func(s *socks5test.Server) {
		s.PeerRules = []socks5test.PeerRule{func(*socks5test.Request, net.Addr) wire.Reply {
			if first.CompareAndSwap(false, true) {
				return wire.ReplyTTLExpired
			}
			return wire.ReplySucceeded
		}}
	})
	armed := make(chan net.Addr, 1)
	ln := listen(t, srv, socksbind.ListenConfig{Armed: func(a net.Addr) { armed <- a }}, ":0")
	dialPeer(t, ln.Addr())
	_, err := ln.Accept()
	assert.ErrorIs(t, err, socksbind.ErrTTLExpired)
	assert.NotErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Temporary(), "the listener re-armed") //nolint:staticcheck
	peer := dialPeer(t, ln.Addr())
	c := accept(t, ln)
	assert.Equal(t, peer.LocalAddr().String(), c.RemoteAddr().String())
}

// A deadline set while Accept re-arms on its own goroutine ends the wait.
func TestSetDeadlineDuringRearmInAccept(t *testing.T) {
	stalled := make(chan struct{})
	var once sync.Once
	srv := newProxy(t, stallRequests(func(n int) bool {
		if n == 3 {
			once.Do(func() { close(stalled) })
			return true
		}
		return false
	}))
	ln := listen(t, srv, socksbind.ListenConfig{}, ":"+strconv.Itoa(freePort(t)))
	dialPeer(t, ln.Addr())
	accept(t, ln)
	_, err := ln.Accept() // the re-arm got another port
	require.ErrorIs(t, err, socksbind.ErrAddressInUse)
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }() // re-arms here: BIND 3 stalls
	<-stalled
	require.NoError(t, ln.SetDeadline(time.Now().Add(10*time.Millisecond)))
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	case <-time.After(5 * time.Second):
		t.Fatal("Accept ignored a deadline set while it re-armed")
	}
}

// The listener never has two BINDs in flight: an Accept that takes a BIND
// while the previous re-arm's goroutine is still in Armed must not lose
// track of the re-arm it starts.
func TestRearmNeverDoubles(t *testing.T) {
	var reqs atomic.Int32
	srv := newProxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, req *socks5test.Request) bool {
			if stage == socks5test.StageRequest && req.Command == socksbind.CmdBind && reqs.Add(1) == 3 {
				time.Sleep(300 * time.Millisecond) // the second re-arm is slow
			}
			return false
		}
	})
	armedEntered := make(chan struct{})
	releaseArmed := make(chan struct{})
	var n atomic.Int32
	ln := listen(t, srv, socksbind.ListenConfig{Armed: func(net.Addr) {
		if n.Add(1) == 1 {
			close(armedEntered)
			<-releaseArmed // a slow callback
		}
	}}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln) // the re-arm goroutine sends BIND 2
	<-armedEntered
	got := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			got <- c
		}
	}()
	dialPeer(t, ln.Addr())
	c2 := <-got // BIND 3 is now in flight, slowly
	defer c2.Close()
	close(releaseArmed)
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	time.Sleep(100 * time.Millisecond) // room for a wrong fourth BIND
	assert.Equal(t, 3, bindCount(srv), "a BIND was sent while another was in flight")
	armedAddr := ln.Addr()
	require.Eventually(t, func() bool { return srv.ActiveBinds() == 1 }, 5*time.Second, time.Millisecond)
	ln.Close()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	require.Eventually(t, func() bool { return srv.ActiveBinds() == 0 }, 5*time.Second, time.Millisecond,
		"a BIND at %v outlived Close", armedAddr)
}

// Armed may call Close.
func TestArmedCallsClose(t *testing.T) {
	srv := newProxy(t, nil)
	var ln *socksbind.Listener
	ready := make(chan struct{})
	closed := make(chan struct{})
	ln = listen(t, srv, socksbind.ListenConfig{Armed: func(net.Addr) { <-ready; ln.Close(); close(closed) }}, ":0")
	close(ready)
	dialPeer(t, ln.Addr())
	accept(t, ln)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close called from Armed never returned")
	}
	_, err := ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
}

// No deadline of the listener is left on an accepted connection.
func TestNoDeadlineLeftOnAccepted(t *testing.T) {
	srv := newProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{}, ":0")
	deadline := time.Now().Add(200 * time.Millisecond)
	require.NoError(t, ln.SetDeadline(deadline))
	peer := dialPeer(t, ln.Addr())
	c := accept(t, ln)
	time.Sleep(time.Until(deadline) + 20*time.Millisecond)
	_, err := peer.Write([]byte("x"))
	require.NoError(t, err)
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	assert.NoError(t, err)
	_, err = c.Write([]byte("y"))
	assert.NoError(t, err)
}

// A reply 2 cut by a deadline in its middle resumes where it stopped, with
// the data behind it intact.
func TestResumeReply2(t *testing.T) {
	cont := make(chan struct{})
	wrote := make(chan struct{})
	srv := newProxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
			if stage != socks5test.StageBindReply {
				return false
			}
			msg := wire.AppendReply(nil, wire.ReplySucceeded, wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 9})
			c.Write(msg[:5])
			close(wrote)
			<-cont
			c.Write(append(msg[5:], "early data"...))
			return true
		}
	})
	ln := listen(t, srv, socksbind.ListenConfig{Once: true}, ":0")
	dialPeer(t, ln.Addr())
	<-wrote
	require.NoError(t, ln.SetDeadline(time.Now().Add(50*time.Millisecond)))
	_, err := ln.Accept()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.NoError(t, ln.SetDeadline(time.Time{}))
	close(cont)
	c := accept(t, ln)
	assert.Equal(t, "127.0.0.1:9", c.RemoteAddr().String())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "early data", string(got))
}

// Close racing a successful reply 2: Accept returns a live connection or
// ErrClosed, never a connection Close already closed.
func TestCloseRacesAccept(t *testing.T) {
	srv := newProxy(t, nil)
	for i := range 200 {
		lc := socksbind.ListenConfig{Dialer: newDialer(t, srv), Once: true}
		ln, err := lc.Listen(context.Background(), "tcp", ":0")
		require.NoError(t, err)
		type result struct {
			c   net.Conn
			err error
		}
		rc := make(chan result, 1)
		go func() { c, err := ln.Accept(); rc <- result{c, err} }()
		p, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		p.Write([]byte("hi"))
		time.Sleep(time.Duration(i%20) * 20 * time.Microsecond)
		ln.Close()
		r := <-rc
		if r.err == nil {
			b := make([]byte, 2)
			_, err := io.ReadFull(r.c, b)
			assert.NoError(t, err, "round %d: Accept returned a closed connection", i)
			r.c.Close()
		} else {
			assert.ErrorIs(t, r.err, net.ErrClosed)
		}
		p.Close()
	}
}
