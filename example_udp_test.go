package socksbind_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/socks5test"
)

// Datagrams through the proxy: WriteTo any destination, ReadFrom any
// source, with UDP ASSOCIATE.
func ExampleDialer_ListenPacket() {
	proxy := socks5test.NewUnstartedServer() // stands in for Dante or GOST
	proxy.UDP = true
	proxy.Start()
	defer proxy.Close()
	echo := udpEcho() // a UDP echo server on 127.0.0.1
	defer echo.Close()

	d := &socksbind.Dialer{ProxyAddress: proxy.Addr()}
	pc, err := d.ListenPacket(context.Background(), "udp", "")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := pc.WriteTo([]byte("ping"), echo.LocalAddr()); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s from the echo server: %t\n", buf[:n], from.String() == echo.LocalAddr().String())
	// Output: ping from the echo server: true
}

// DNS through the proxy: the Go resolver over a UDP conn of DialContext.
// With UDPTunnel the queries travel inside the TCP connection to GOST.
func ExampleDialer_DialContext_resolver() {
	d := &socksbind.Dialer{ProxyAddress: "127.0.0.1:1080", UDP: socksbind.UDPAuto}
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, "192.0.2.53:53") // a DNS server the proxy reaches
		},
	}
	_ = r // r.LookupNetIP(ctx, "ip", "example.com") asks through the proxy
}

// udpEcho starts a UDP echo server on loopback.
func udpEcho() *net.UDPConn {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return c
}
