//go:build unix

package main

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkRelay moves bytes from a peer to a service through relay, with
// the kernel's splice (both ends TCP, as for standard BIND) and through the
// buffer pool (an end that is not a *net.TCPConn), and reports the CPU time
// of the whole process per GiB relayed: the sender and the receiver, the
// same in both, are counted too.
//
//	go test -run '^$' -bench Relay -benchtime 2s -count 6 ./cmd/expose/
func BenchmarkRelay(b *testing.B) {
	for _, tt := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"Splice", func(c net.Conn) net.Conn { return c }},
		{"Pooled", func(c net.Conn) net.Conn { return plainConn{c} }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			const chunk = 1 << 20
			peer, peerFar := tcpPair(b)
			svc, svcFar := tcpPair(b)
			for _, c := range []net.Conn{peer, peerFar, svc, svcFar} {
				require.NoError(b, c.SetDeadline(time.Time{}))
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				relay(tt.wrap(peer), svc, nil, nil)
			}()
			received := make(chan int64, 1)
			go func() {
				n, _ := io.Copy(io.Discard, svcFar)
				received <- n
			}()
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				_, err := peerFar.Write(buf)
				require.NoError(b, err)
			}
			require.NoError(b, peerFar.CloseWrite())
			require.Equal(b, int64(b.N)*chunk, <-received)
			b.StopTimer()
			cpu := cpuTime(b) - cpu0
			b.ReportMetric(cpu.Seconds()/(float64(b.N)*chunk/(1<<30)), "cpu-s/GiB")
			svcFar.Close()
			<-done
		})
	}
}

// plainConn hides every method of a connection but net.Conn's.
type plainConn struct{ net.Conn }

// cpuTime returns the CPU time (user and system) of the process.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
