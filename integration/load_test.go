package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/testkit"
)

// loadParallel bounds how many handshakes with Dante run at once: Dante
// starts with few negotiation children and forks more as load comes, so a
// burst of thousands only queues in its backlog.
const loadParallel = 32

// forEach runs f(i) for i in [0, n), at most loadParallel at a time, and
// returns the errors by index.
func forEach(n int, f func(i int) error) []error {
	errs := make([]error, n)
	sem := make(chan struct{}, loadParallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	return errs
}

// requireNoErrors fails the test with the first few errors.
func requireNoErrors(t *testing.T, what string, errs []error) {
	t.Helper()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("#%d: %v", i, err))
		}
	}
	if len(failed) > 5 {
		failed = append(failed[:5], "...")
	}
	require.Empty(t, failed, "%s: %d of %d failed", what, countErrors(errs), len(errs))
}

func countErrors(errs []error) int {
	n := 0
	for _, err := range errs {
		if err != nil {
			n++
		}
	}
	return n
}

// TestLoadBindDante has 200 BIND listeners waiting on Dante at once, then
// a peer for each, each exchanging its own message both ways; the
// listeners re-arm under load, and Close ends all of it with nothing left.
func TestLoadBindDante(t *testing.T) {
	const listeners = 200
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{})
	d := newDialer(t, dante.Addr, nil, nil)

	began := time.Now()
	var rearmed atomic.Int32
	lns := make([]*socksbind.Listener, listeners)
	t.Cleanup(func() {
		for _, ln := range lns {
			if ln != nil {
				ln.Close()
			}
		}
	})
	requireNoErrors(t, "Listen", forEach(listeners, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		lc := socksbind.ListenConfig{Dialer: d, Armed: func(net.Addr) { rearmed.Add(1) }}
		ln, err := lc.Listen(ctx, "tcp", ":0")
		lns[i] = ln
		return err
	}))
	ports := make(map[int]int)
	for i, ln := range lns {
		ports[ln.Addr().(*net.TCPAddr).Port] = i
	}
	require.Len(t, ports, listeners, "every waiting BIND has a port of its own")
	t.Logf("%d BINDs waiting after %v", listeners, time.Since(began).Round(time.Millisecond))

	requireNoErrors(t, "accept", forEach(listeners, func(i int) error {
		ln := lns[i]
		peer, err := net.DialTimeout("tcp", ln.Addr().String(), testTimeout)
		if err != nil {
			return err
		}
		defer peer.Close()
		ch := testkit.AcceptAsync(ln)
		var r testkit.Accepted
		select {
		case r = <-ch:
		case <-time.After(testTimeout):
			ln.Close()
			r = <-ch
		}
		if r.Err != nil {
			return r.Err
		}
		defer r.Conn.Close()
		if got, want := netutil.AddrPort(r.Conn.RemoteAddr()), netutil.AddrPort(peer.LocalAddr()); got != want {
			return fmt.Errorf("accepted %v, the peer is %v", got, want)
		}
		if err := echoBack(peer, r.Conn, fmt.Sprintf("listener %d to its peer", i)); err != nil {
			return err
		}
		if err := echoBack(r.Conn, peer, fmt.Sprintf("peer of listener %d", i)); err != nil {
			return err
		}
		// The peer resets, so that no TIME_WAIT is left on the port
		// Dante bound (see lingerClose); Dante then closes the relay.
		if err := lingerClose(peer); err != nil {
			return err
		}
		if n, err := r.Conn.Read(make([]byte, 1)); n != 0 || err == nil {
			return fmt.Errorf("read %d bytes, %v after the peer left", n, err)
		}
		return nil
	}))
	t.Logf("%d connections accepted and checked after %v", listeners, time.Since(began).Round(time.Millisecond))

	// Each listener re-armed after its connection: a new BIND waits.
	require.True(t, testkit.Poll(testTimeout, func() bool { return rearmed.Load() >= listeners }),
		"%d of %d listeners re-armed", rearmed.Load(), listeners)
	assert.EqualValues(t, listeners, rearmed.Load())
	for _, ln := range lns {
		require.NoError(t, ln.Close())
		_, err := ln.Accept()
		assert.ErrorIs(t, err, net.ErrClosed)
	}
}

// echoBack writes msg on from and checks that to reads exactly msg.
func echoBack(from, to net.Conn, msg string) error {
	deadline := time.Now().Add(testTimeout)
	from.SetDeadline(deadline)
	to.SetDeadline(deadline)
	if _, err := from.Write([]byte(msg)); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	n := 0
	for n < len(got) {
		m, err := to.Read(got[n:])
		n += m
		if err != nil {
			return fmt.Errorf("after %q: %w", got[:n], err)
		}
	}
	if string(got) != msg {
		return fmt.Errorf("read %q, want %q", got, msg)
	}
	return nil
}

// lingerClose closes c with a reset instead of a FIN. Every closed
// connection leaves a TIME_WAIT, for a minute, on the side that closed first;
// one on a port that Dante bound itself (a BIND's port, the source port of a
// CONNECT) keeps Dante from binding that port again, and a few thousand of
// them exhaust the ephemeral range, after which Dante answers BIND and
// CONNECT with reply 3 (network unreachable). The load tests therefore
// close so that those TIME_WAITs stay on listening ports.
func lingerClose(c net.Conn) error {
	if err := c.(*net.TCPConn).SetLinger(0); err != nil {
		return err
	}
	return c.Close()
}

// startLineEcho starts a target that reads one line, echoes it and closes
// first (see lingerClose).
func startLineEcho(t testing.TB) *target {
	return startTarget(t, "127.0.0.1:0", func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			_, _ = io.WriteString(c, line)
		}
	})
}

// TestLoadConnectDante opens 1,000 CONNECTs through Dante, all open at once,
// then checks that each carries its own message to the target and back, and
// the target's close back.
func TestLoadConnectDante(t *testing.T) {
	const conns = 1000
	leakcheck.Check(t)
	echo := startLineEcho(t)
	dante := startDante(t, DanteConfig{})
	d := newDialer(t, dante.Addr, nil, nil)

	began := time.Now()
	cs := make([]net.Conn, conns)
	t.Cleanup(func() {
		for _, c := range cs {
			if c != nil {
				c.Close()
			}
		}
	})
	requireNoErrors(t, "CONNECT", forEach(conns, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", echo.addr.String())
		cs[i] = c
		return err
	}))
	t.Logf("%d CONNECTs open after %v", conns, time.Since(began).Round(time.Millisecond))

	requireNoErrors(t, "echo", forEach(conns, func(i int) error {
		c := cs[i]
		msg := fmt.Sprintf("connection %d of %d\n", i, conns)
		if err := echoBack(c, c, msg); err != nil {
			return err
		}
		// The target closes after its answer; Dante passes that on.
		if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %d bytes, %v after the answer", n, err)
		}
		return c.Close()
	}))
	t.Logf("%d echoes checked after %v", conns, time.Since(began).Round(time.Millisecond))
	assert.Len(t, echo.peers, conns, "the target saw every connection")
}
