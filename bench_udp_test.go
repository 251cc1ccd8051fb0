package socksbind_test

// UDP benchmarks through socks5test, each next to a direct *net.UDPConn in
// the same run:
//
//	go test -run '^$' -bench UDP -benchtime 20000x .
//
// The same through Dante and GOST: BenchmarkUDPReal in ./integration.

import (
	"context"
	"net"
	"testing"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/udptest"
	"github.com/socksbind/socksbind/socks5test"
)

// benchPacketConn opens a PacketConn through a socks5test server with UDP.
func benchPacketConn(b *testing.B, mode socksbind.UDPMode) net.PacketConn {
	b.Helper()
	srv := socks5test.NewUnstartedServer()
	srv.UDP, srv.UDPTun = true, true
	srv.Start()
	b.Cleanup(srv.Close)
	d := &socksbind.Dialer{ProxyAddress: srv.Addr(), UDP: mode}
	pc, err := d.ListenPacket(context.Background(), "udp", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	return pc
}

// BenchmarkUDPRoundTrip: round trips of 1,000-byte datagrams, one in
// flight, through socks5test, against a direct socket (x-direct).
func BenchmarkUDPRoundTrip(b *testing.B) {
	for _, mode := range []socksbind.UDPMode{socksbind.UDPAssociate, socksbind.UDPTunnel} {
		b.Run(mode.String(), func(b *testing.B) {
			echo := udptest.Echo(b, "udp4", "127.0.0.1:0")
			udptest.CompareRoundTrips(b, benchPacketConn(b, mode), echo, 1000, nil)
		})
	}
}

// BenchmarkUDPAllocs: allocations of one WriteTo and one ReadFrom, on a
// direct *net.UDPConn and through the proxy.
func BenchmarkUDPAllocs(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		echo := udptest.Echo(b, "udp4", "127.0.0.1:0")
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		udptest.Allocs(b, c, echo)
	})
	for _, mode := range []socksbind.UDPMode{socksbind.UDPAssociate, socksbind.UDPTunnel} {
		b.Run(mode.String(), func(b *testing.B) {
			echo := udptest.Echo(b, "udp4", "127.0.0.1:0")
			udptest.Allocs(b, benchPacketConn(b, mode), echo)
		})
	}
	b.Run("associate-AddrPort", func(b *testing.B) {
		echo := udptest.Echo(b, "udp4", "127.0.0.1:0")
		pc := benchPacketConn(b, socksbind.UDPAssociate).(*socksbind.PacketConn)
		msg, buf := make([]byte, 1000), make([]byte, 65536)
		b.ReportAllocs()
		for range b.N {
			if _, err := pc.WriteToUDPAddrPort(msg, echo); err != nil {
				b.Fatal(err)
			}
			if _, _, err := pc.ReadFromUDPAddrPort(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
