package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
)

// countingDialer reaches the proxy directly and counts the reads of the
// connections it made.
type countingDialer struct{ reads atomic.Int64 }

func (d *countingDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, reads: &d.reads}, nil
}

type countingConn struct {
	net.Conn
	reads *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(b)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMBINDServe measures what an MBIND listener costs per request
// served to 20 concurrent clients through GOST (new connection each, and
// keep-alive): requests per second, this process's CPU per request
// (clients, http.Server and listener: the listener's share is the
// difference between two builds), and reads of the control connection per
// request:
//
//	SOCKSBIND_INTEGRATION=require go test -run '^$' -bench MBINDServe -benchtime 4000x -count 5 ./integration/
func BenchmarkMBINDServe(b *testing.B) {
	gost := startGost(b, GostConfig{})
	for _, keepAlive := range []bool{false, true} {
		b.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(b *testing.B) {
			var cd countingDialer
			d := newDialer(b, gost.Addr, nil, &cd)
			ln := listen(b, d, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
			serveHTTP(b, ln)
			const clients = 20
			tr := &http.Transport{Proxy: nil, DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: clients}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: testTimeout}
			url := "http://" + ln.Addr().String() + "/"
			reads0, cpu0, start := cd.reads.Load(), cpuTime(), time.Now()
			var n atomic.Int64
			var wg sync.WaitGroup
			var failed atomic.Value
			for range clients {
				wg.Go(func() {
					for n.Add(1) <= int64(b.N) {
						resp, err := client.Get(url)
						if err != nil {
							failed.Store(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
			wg.Wait()
			elapsed, cpu, reads := time.Since(start), cpuTime()-cpu0, cd.reads.Load()-reads0
			if err, _ := failed.Load().(error); err != nil {
				require.NoError(b, err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
			b.ReportMetric(float64(reads)/float64(b.N), "reads/req")
		})
	}
}
