// Package udptest holds the UDP echo server that the tests of the module
// share.
package udptest

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// Echo starts a UDP echo server on address of network ("udp", "udp4",
// "udp6"), which sends every datagram back to its source, and returns its
// address. It stops at t's cleanup.
func Echo(t testing.TB, network, address string) netip.AddrPort {
	t.Helper()
	ua, err := net.ResolveUDPAddr(network, address)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP(network, ua)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	running := make(chan struct{})
	wg.Go(func() {
		close(running)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	// A leak check tells this goroutine from a leaked one once it runs
	// this package's code.
	<-running
	t.Cleanup(func() {
		c.Close()
		wg.Wait()
	})
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// CompareRoundTrips runs b.N round trips of a datagram of size bytes to
// the echo server at echo through pc, each next to one through a direct
// *net.UDPConn, so that both see the same load, and reports the round trips
// per second of each ("rt/s", "direct-rt/s") and their ratio ("x-direct":
// 1 is as fast as a direct socket). When raw is not nil, a round trip
// through it follows each pair, and "raw-rt/s" and "x-raw" report it: raw
// is the least a client can do through the same proxy, so that x-raw shows
// what the client under test adds. ns/op is the time of all the round
// trips of an op. A datagram lost on the way fails the benchmark after 5 s.
func CompareRoundTrips(b *testing.B, pc net.PacketConn, echo netip.AddrPort, size int, raw net.PacketConn) {
	b.Helper()
	direct, err := net.ListenUDP("udp", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	to := net.UDPAddrFromAddrPort(echo)
	msg := make([]byte, size)
	buf := make([]byte, 65536)
	roundTrip := func(c net.PacketConn) time.Duration {
		start := time.Now()
		c.SetReadDeadline(start.Add(5 * time.Second))
		if _, err := c.WriteTo(msg, to); err != nil {
			b.Fatal(err)
		}
		if n, _, err := c.ReadFrom(buf); err != nil || n != size {
			b.Fatalf("echo of %d bytes: %d, %v", size, n, err)
		}
		return time.Since(start)
	}
	var through, straight, minimal time.Duration
	b.SetBytes(int64(2 * size))
	b.ResetTimer()
	for range b.N {
		through += roundTrip(pc)
		straight += roundTrip(direct)
		if raw != nil {
			minimal += roundTrip(raw)
		}
	}
	b.ReportMetric(float64(b.N)/through.Seconds(), "rt/s")
	b.ReportMetric(float64(b.N)/straight.Seconds(), "direct-rt/s")
	b.ReportMetric(straight.Seconds()/through.Seconds(), "x-direct")
	if raw != nil {
		b.ReportMetric(float64(b.N)/minimal.Seconds(), "raw-rt/s")
		b.ReportMetric(minimal.Seconds()/through.Seconds(), "x-raw")
	}
}

// Allocs runs b.N round trips of a 1,000-byte datagram to echo through pc
// with WriteTo and ReadFrom, reporting allocations: what one WriteTo and
// one ReadFrom cost together.
func Allocs(b *testing.B, pc net.PacketConn, echo netip.AddrPort) {
	b.Helper()
	to := net.UDPAddrFromAddrPort(echo)
	msg := make([]byte, 1000)
	buf := make([]byte, 65536)
	pc.SetReadDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := pc.WriteTo(msg, to); err != nil {
			b.Fatal(err)
		}
		if _, _, err := pc.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
}
