package socks5test_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/socks5test"
)

// Testing UDP code against a lossy relay: the Datagram hook drops every
// other datagram on its way to the client.
func ExampleHooks_datagram() {
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		panic(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()

	var n atomic.Int64
	srv := socks5test.NewUnstartedServer()
	srv.UDP = true
	srv.Hooks.Datagram = func(pkt []byte) []socks5test.Datagram {
		if n.Add(1)%2 == 0 {
			return nil // dropped
		}
		return []socks5test.Datagram{{Bytes: pkt}}
	}
	srv.Start()
	defer srv.Close()

	d := &socksbind.Dialer{ProxyAddress: srv.Addr()}
	pc, err := d.ListenPacket(context.Background(), "udp", "")
	if err != nil {
		panic(err)
	}
	defer pc.Close()
	for _, msg := range []string{"one", "two", "three"} {
		pc.WriteTo([]byte(msg), echo.LocalAddr())
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			panic(err)
		}
		fmt.Println("echoed:", string(buf[:n]))
		if string(buf[:n]) == "three" {
			break
		}
	}
	// Output:
	// echoed: one
	// echoed: three
}
