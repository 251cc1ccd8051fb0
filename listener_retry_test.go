package socksbind_test

// Tests of the listener's own retries: trouble that may pass never reaches
// Accept, permanent trouble does, and Close ends everything at once.

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/internal/wire"
	"github.com/socksbind/socksbind/socks5test"
)

// retryLog collects what Retrying is told, without ever blocking the
// listener.
type retryLog struct {
	mu    sync.Mutex
	errs  []error
	waits []time.Duration
}

func (r *retryLog) hook(err error, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
	r.waits = append(r.waits, wait)
}

func (r *retryLog) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs)
}

func (r *retryLog) snapshot() ([]error, []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...), append([]time.Duration(nil), r.waits...)
}

// refuseBinds answers the BIND requests whose number (from 1) refuse
// reports true for with rep.
func refuseBinds(rep socksbind.Reply, refuse func(n int) bool) func(*socks5test.Server) {
	var n atomic.Int32
	return func(s *socks5test.Server) {
		s.Rules = []socks5test.Rule{func(req *socks5test.Request) socksbind.Reply {
			if req.Command == socksbind.CmdBind && refuse(int(n.Add(1))) {
				return rep
			}
			return socksbind.ReplySucceeded
		}}
	}
}

// serveOne has a peer connect and checks that Accept returns it.
func serveOne(t *testing.T, ln *socksbind.Listener, accepted <-chan testkit.Accepted) {
	t.Helper()
	acceptedPeer(t, accepted, dialPeer(t, ln.Addr()))
}

// armedHook returns an Armed callback and the channel it reports to; the
// callback never blocks the listener.
func armedHook() (chan net.Addr, func(net.Addr)) {
	ch := make(chan net.Addr, 100)
	return ch, func(a net.Addr) {
		select {
		case ch <- a:
		default:
		}
	}
}

// waitArmed waits until the listener reports a BIND armed.
func waitArmed(t *testing.T, armed <-chan net.Addr) net.Addr {
	t.Helper()
	select {
	case a := <-armed:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not re-arm")
		return nil
	}
}

// A proxy that accepts the re-arm's connection and never answers: the
// listener gives up on it after the handshake timeout, tries again, and
// serves; Accept sees none of it.
func TestRearmSilentProxy(t *testing.T) {
	srv := newProxy(t, stallRequests(func(n int) bool { return n == 2 }))
	var log retryLog
	d := newDialer(t, srv)
	d.HandshakeTimeout = 100 * time.Millisecond
	armed, hook := armedHook()
	ln := listen(t, srv, socksbind.ListenConfig{Dialer: d, Retrying: log.hook, Armed: hook}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln)

	accepted := testkit.AcceptAsync(ln)
	waitArmed(t, armed)
	assert.Equal(t, 3, bindCount(srv))
	serveOne(t, ln, accepted)
	errs, _ := log.snapshot()
	require.Len(t, errs, 1)
	var ne net.Error
	require.ErrorAs(t, errs[0], &ne)
	assert.True(t, ne.Timeout(), "%v", errs[0])
	assert.ErrorIs(t, errs[0], os.ErrDeadlineExceeded)
	assert.Contains(t, errs[0].Error(), "100ms")
}

// Close returns at once while a re-arm waits on a silent proxy.
func TestCloseDuringSilentRearm(t *testing.T) {
	stalled := make(chan struct{})
	var once sync.Once
	srv := newProxy(t, stallRequests(func(n int) bool {
		if n == 2 {
			once.Do(func() { close(stalled) })
			return true
		}
		return false
	}))
	ln := listen(t, srv, socksbind.ListenConfig{}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln)
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	<-stalled
	start := time.Now()
	require.NoError(t, ln.Close())
	assert.Less(t, time.Since(start), time.Second, "Close waited for the silent proxy")
	assert.ErrorIs(t, <-errc, net.ErrClosed)
}

// Re-arms answered with a failure that may pass are retried with a growing
// wait, and the listener serves again afterwards; Accept never fails.
func TestRearmTransientReplies(t *testing.T) {
	for _, rep := range []socksbind.Reply{
		socksbind.ReplyGeneralFailure, socksbind.ReplyNetworkUnreachable,
		socksbind.ReplyHostUnreachable, socksbind.ReplyTTLExpired,
	} {
		t.Run(rep.String(), func(t *testing.T) {
			srv := newProxy(t, refuseBinds(rep, func(n int) bool { return n >= 2 && n <= 4 }))
			var log retryLog
			armed, hook := armedHook()
			ln := listen(t, srv, socksbind.ListenConfig{Retrying: log.hook, Armed: hook}, ":0")
			dialPeer(t, ln.Addr())
			accept(t, ln)
			accepted := testkit.AcceptAsync(ln)
			waitArmed(t, armed)
			assert.Equal(t, 5, bindCount(srv))
			serveOne(t, ln, accepted)
			errs, waits := log.snapshot()
			require.Len(t, errs, 3)
			for _, err := range errs {
				var re *socksbind.ReplyError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, rep, re.Reply)
			}
			assert.Equal(t, []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}, waits)
		})
	}
}

// A re-arm refused by policy ends the listener: a connection it already
// holds is still handed over, then every Accept returns the refusal as a
// permanent error.
func TestRearmRefusedByPolicy(t *testing.T) {
	for _, tt := range []struct {
		rep  socksbind.Reply
		want error
	}{
		{socksbind.ReplyNotAllowed, socksbind.ErrNotAllowed},
		{socksbind.ReplyCommandNotSupported, socksbind.ErrCommandNotSupported},
		{socksbind.ReplyAddressTypeNotSupported, socksbind.ErrAddressNotSupported},
	} {
		t.Run(tt.rep.String(), func(t *testing.T) {
			srv := newProxy(t, refuseBinds(tt.rep, func(n int) bool { return n >= 2 }))
			var log retryLog
			ln := listen(t, srv, socksbind.ListenConfig{Retrying: log.hook}, ":0")
			peer := dialPeer(t, ln.Addr())
			_, err := peer.Write([]byte("held"))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return bindCount(srv) == 2 }, 10*time.Second, time.Millisecond)

			c := accept(t, ln) // held while the listener failed
			buf := make([]byte, 4)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			assert.Equal(t, "held", string(buf))
			for range 2 {
				_, err = ln.Accept()
				assert.ErrorIs(t, err, tt.want)
				var ne net.Error
				require.ErrorAs(t, err, &ne)
				assert.False(t, ne.Temporary()) //nolint:staticcheck
				var op *net.OpError
				require.ErrorAs(t, err, &op)
				assert.Equal(t, "accept", op.Op)
			}
			assert.Zero(t, log.len(), "a refusal is not retried")
		})
	}
}

// RetryLimit turns trouble that lasts into a permanent error.
func TestRetryLimit(t *testing.T) {
	srv := newProxy(t, refuseBinds(socksbind.ReplyNetworkUnreachable, func(n int) bool { return n >= 2 }))
	var log retryLog
	ln := listen(t, srv, socksbind.ListenConfig{RetryLimit: 100 * time.Millisecond, Retrying: log.hook}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := ln.AcceptContext(ctx)
	assert.ErrorIs(t, err, socksbind.ErrNetworkUnreachable)
	assert.ErrorIs(t, err, syscall.ENETUNREACH)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.False(t, ne.Temporary()) //nolint:staticcheck
	assert.NotZero(t, log.len())
	_, waits := log.snapshot()
	var total time.Duration
	for _, w := range waits {
		total += w
	}
	assert.LessOrEqual(t, total, 100*time.Millisecond, "the waits stay within the limit")
}

// A proxy stopped and started again on the same address: the listener
// serves again, and Accept returns no error in between.
func TestProxyRestart(t *testing.T) {
	leakcheck.Check(t)
	srv := socks5test.NewServer()
	t.Cleanup(srv.Close)
	addr := srv.Addr()
	var log retryLog
	d := newDialer(t, srv)
	ln := listen(t, srv, socksbind.ListenConfig{Dialer: d, Retrying: log.hook}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln)
	require.Eventually(t, func() bool { return srv.ActiveBinds() == 1 }, 10*time.Second, time.Millisecond)

	accepted := testkit.AcceptAsync(ln)
	srv.Close()
	require.Eventually(t, func() bool { return log.len() >= 2 }, 10*time.Second, time.Millisecond,
		"the listener did not notice the proxy had gone")

	restarted := socks5test.NewUnstartedServer()
	var err error
	require.Eventually(t, func() bool {
		restarted.Listener, err = net.Listen("tcp", addr)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the proxy's port: %v", err)
	restarted.Start()
	t.Cleanup(restarted.Close)
	require.Eventually(t, func() bool { return restarted.ActiveBinds() == 1 }, 10*time.Second, time.Millisecond)
	serveOne(t, ln, accepted)
	errs, _ := log.snapshot()
	assert.ErrorIs(t, errs[len(errs)-1], syscall.ECONNREFUSED, "the proxy was unreachable")
}

// A connection that arrives while no Accept waits is held, with every byte,
// and the listener re-arms meanwhile.
func TestBacklogHeld(t *testing.T) {
	srv := newProxy(t, nil)
	armed := make(chan net.Addr, 1)
	ln := listen(t, srv, socksbind.ListenConfig{Armed: func(a net.Addr) {
		select {
		case armed <- a:
		default:
		}
	}}, ":0")
	peer := dialPeer(t, ln.Addr())
	_, err := peer.Write([]byte("early bytes"))
	require.NoError(t, err)
	var next net.Addr
	select {
	case next = <-armed:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not re-arm while holding a connection")
	}
	c := accept(t, ln)
	assert.Equal(t, peer.LocalAddr().String(), c.RemoteAddr().String())
	buf := make([]byte, len("early bytes"))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "early bytes", string(buf))

	peer2 := dialPeer(t, next)
	c2 := accept(t, ln)
	assert.Equal(t, peer2.LocalAddr().String(), c2.RemoteAddr().String())
}

// Close closes a connection that was held for an Accept that never came.
func TestCloseClosesHeld(t *testing.T) {
	srv := newProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{}, ":0")
	peer := dialPeer(t, ln.Addr())
	require.Eventually(t, func() bool { return bindCount(srv) == 2 }, 10*time.Second, time.Millisecond)
	require.NoError(t, ln.Close())
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := io.ReadAll(peer)
	assert.NoError(t, err, "the held connection was closed: the peer reads EOF")
	_, err = ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
}

// Retrying may call Close, and no callback runs once Close has returned.
func TestRetryingCallsClose(t *testing.T) {
	srv := newProxy(t, refuseBinds(socksbind.ReplyGeneralFailure, func(n int) bool { return n >= 2 }))
	var ln *socksbind.Listener
	var calls atomic.Int32
	closed := make(chan struct{})
	ln = listen(t, srv, socksbind.ListenConfig{Retrying: func(error, time.Duration) {
		if calls.Add(1) == 3 {
			ln.Close()
			close(closed)
		}
	}}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close called from Retrying never returned")
	}
	_, err := ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	n := calls.Load()
	time.Sleep(50 * time.Millisecond) // room for a wrong callback
	assert.Equal(t, n, calls.Load(), "Retrying was called after Close")
}

// Callbacks never run after Close returns, whatever moment Close comes.
func TestNoCallbackAfterClose(t *testing.T) {
	for i := range 20 {
		srv := newProxy(t, refuseBinds(socksbind.ReplyGeneralFailure, func(n int) bool { return n%2 == 0 }))
		var closedAt atomic.Bool
		var late atomic.Int32
		hook := func() {
			if closedAt.Load() {
				late.Add(1)
			}
		}
		ln := listen(t, srv, socksbind.ListenConfig{
			Armed:    func(net.Addr) { hook() },
			Retrying: func(error, time.Duration) { hook() },
		}, ":0")
		dialPeer(t, ln.Addr())
		accept(t, ln)
		time.Sleep(time.Duration(i) * time.Millisecond)
		ln.Close()
		closedAt.Store(true)
		time.Sleep(10 * time.Millisecond)
		assert.Zero(t, late.Load(), "round %d: a callback ran after Close returned", i)
	}
}

// With Once, a failed second reply is returned from Accept, permanently.
func TestOnceReply2Failure(t *testing.T) {
	t.Run("peer turned away", func(t *testing.T) {
		srv := newProxy(t, nil)
		ln := listen(t, srv, socksbind.ListenConfig{Once: true}, "127.0.0.2:0")
		wrong := dialPeer(t, ln.Addr())
		_, err := ln.Accept()
		assert.ErrorIs(t, err, socksbind.ErrNotAllowed)
		var re *socksbind.ReplyError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, wrong.LocalAddr().String(), re.Addr.String())
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.False(t, ne.Temporary()) //nolint:staticcheck
		_, err = ln.Accept()
		assert.ErrorIs(t, err, socksbind.ErrNotAllowed)
	})
	t.Run("reply cut short", func(t *testing.T) {
		srv := newProxy(t, func(s *socks5test.Server) {
			s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
				if stage != socks5test.StageBindReply {
					return false
				}
				c.Write([]byte{5, 0, 0})
				return true
			}
		})
		ln := listen(t, srv, socksbind.ListenConfig{Once: true}, ":0")
		dialPeer(t, ln.Addr())
		_, err := ln.Accept()
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		assert.Equal(t, wire.StageBindReply2, wire.StageOf(err))
	})
}
