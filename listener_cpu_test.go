//go:build unix

package socksbind_test

import (
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
)

// A hand-written Accept loop that retries every error at once does not spin
// while the proxy cannot give the port back: the listener waits on its own
// and Accept does not return. The process's CPU time over the measured
// period (the in-process proxy's included) must stay under 5% of a core.
func TestAcceptLoopDoesNotSpin(t *testing.T) {
	srv := newProxy(t, nil) // Dante: the held connection keeps the port
	port := freePort(t)
	var log retryLog
	ln := listen(t, srv, socksbind.ListenConfig{Retrying: log.hook}, ":"+strconv.Itoa(port))
	dialPeer(t, ln.Addr())
	accept(t, ln) // held open: every re-arm gets another port

	var errs atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				errs.Add(1)
				continue
			}
			c.Close()
		}
	}()
	require.Eventually(t, func() bool { return log.len() > 0 }, 10*time.Second, time.Millisecond)
	const period = 1500 * time.Millisecond
	before, start := cpuTime(t), time.Now()
	time.Sleep(period)
	used, elapsed := cpuTime(t)-before, time.Since(start)
	ln.Close()
	<-done
	share := float64(used) / float64(elapsed)
	t.Logf("CPU %v in %v (%.2f%% of a core), %d retries reported, %d Accept errors", used, elapsed, 100*share, log.len(), errs.Load())
	assert.Less(t, share, 0.05)
	assert.Zero(t, errs.Load(), "Accept returned errors")
	for _, err := range func() []error { e, _ := log.snapshot(); return e }() {
		assert.ErrorIs(t, err, socksbind.ErrAddressInUse)
	}
}

// cpuTime is the user and system time this process has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
