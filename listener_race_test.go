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
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/testkit"
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

// A reply 2 of code 6 keeps its code in what Retrying is told, Accept does
// not see it, and the listener re-arms.
func TestTTLExpiredReply2(t *testing.T) {
	var first atomic.Bool
	srv := newProxy(t, func(s *socks5test.Server) {
		s.PeerRules = []socks5test.PeerRule{func(*socks5test.Request, net.Addr) socksbind.Reply {
			if first.CompareAndSwap(false, true) {
				return socksbind.ReplyTTLExpired
			}
			return socksbind.ReplySucceeded
		}}
	})
	retried := make(chan error, 10)
	armed, hook := armedHook()
	ln := listen(t, srv, socksbind.ListenConfig{Armed: hook, Retrying: func(err error, _ time.Duration) {
		select {
		case retried <- err:
		default: // a hook must never block the listener
		}
	}}, ":0")
	accepted := testkit.AcceptAsync(ln)
	dialPeer(t, ln.Addr())
	var err error
	select {
	case err = <-retried:
	case <-time.After(10 * time.Second):
		t.Fatal("the failed reply 2 was not reported")
	}
	assert.ErrorIs(t, err, socksbind.ErrTTLExpired)
	assert.NotErrorIs(t, err, os.ErrDeadlineExceeded)
	acceptedPeer(t, accepted, dialPeer(t, waitArmed(t, armed)))
}

// The listener never has two BINDs in flight, even when Armed is slow and
// peers come back to back.
func TestRearmNeverDoubles(t *testing.T) {
	srv := newProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{Armed: func(net.Addr) { time.Sleep(20 * time.Millisecond) }}, ":0")
	for i := range 5 {
		armed := ln.Addr()
		accepted := testkit.AcceptAsync(ln)
		acceptedPeer(t, accepted, dialPeer(t, armed)).Close()
		require.Eventually(t, func() bool { return bindCount(srv) == i+2 && ln.Addr().String() != armed.String() },
			10*time.Second, time.Millisecond, "no re-arm after connection %d", i)
		assert.Equal(t, 1, srv.ActiveBinds(), "after connection %d", i)
	}
	assert.Equal(t, 6, bindCount(srv), "one BIND per connection and the one waiting")
}

// Armed may call Close.
func TestArmedCallsClose(t *testing.T) {
	srv := newProxy(t, nil)
	var ln *socksbind.Listener
	ready := make(chan struct{})
	closed := make(chan struct{})
	ln = listen(t, srv, socksbind.ListenConfig{Armed: func(net.Addr) { <-ready; ln.Close(); close(closed) }}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln) // before Armed closes the listener, which would close a held connection
	close(ready)
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
			msg := srvwire.AppendReply(nil, socksbind.ReplySucceeded, socksbind.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 9})
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
