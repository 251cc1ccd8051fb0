// Package udptest holds the UDP echo server that the tests of the module
// share.
package udptest

import (
	"net"
	"net/netip"
	"sync"
	"testing"
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
