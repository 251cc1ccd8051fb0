package socksbind_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/socks5test"
)

// dialers returns socksbind's Dialer and x/net's, for the same proxy, so
// that each benchmark compares them in the same run.
func dialers(b *testing.B, addr string) map[string]proxy.ContextDialer {
	b.Helper()
	ours, err := socksbind.SOCKS5("tcp", addr, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	xnet, err := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
	if err != nil {
		b.Fatal(err)
	}
	return map[string]proxy.ContextDialer{"socksbind": ours, "xnet": xnet.(proxy.ContextDialer)}
}

// BenchmarkConnect is a whole CONNECT through socks5test: dial the proxy,
// handshake, the proxy dials the target, close. Allocations include the
// server's, which runs in the same process.
func BenchmarkConnect(b *testing.B) {
	srv := socks5test.NewServer()
	defer srv.Close()
	target, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, name := range []string{"socksbind", "xnet"} {
		d := dialers(b, srv.Addr())[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c, err := d.DialContext(context.Background(), "tcp", target.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkHandshake isolates the client: the proxy is a loop that answers
// with fixed bytes and allocates nothing per connection.
func BenchmarkHandshake(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		reply := []byte{5, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39}
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Greeting (3 bytes), then CONNECT to an IPv4 address (10).
			if _, err := io.ReadFull(c, buf[:3]); err == nil {
				c.Write([]byte{5, 0})
				if _, err := io.ReadFull(c, buf[:10]); err == nil {
					c.Write(reply)
				}
			}
			c.Close()
		}
	}()
	for _, name := range []string{"socksbind", "xnet"} {
		d := dialers(b, ln.Addr().String())[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:9")
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkAccept measures a BIND listener over socks5test in its Dante
// mode: accept-ns is the time from a peer's connect to Accept returning,
// rearm-ns the time from Accept returning to the next BIND waiting (when a
// peer of a Dante proxy would be refused).
func BenchmarkAccept(b *testing.B) {
	for _, mode := range []socks5test.BindMode{socks5test.BindDante, socks5test.BindReuse} {
		b.Run(mode.String(), func(b *testing.B) {
			srv := socks5test.NewUnstartedServer()
			srv.BindMode = mode
			srv.Start()
			defer srv.Close()
			d, _ := socksbind.SOCKS5("tcp", srv.Addr(), nil, nil)
			armed := make(chan time.Time, 1)
			lc := socksbind.ListenConfig{Dialer: d, Armed: func(net.Addr) { armed <- time.Now() }}
			ln, err := lc.Listen(context.Background(), "tcp", ":0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			var acceptNs, rearmNs time.Duration
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				peer, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				accepted := time.Now()
				acceptNs += accepted.Sub(start)
				rearmNs += (<-armed).Sub(accepted)
				peer.Close()
				c.Close()
			}
			b.ReportMetric(float64(acceptNs.Nanoseconds())/float64(b.N), "accept-ns")
			b.ReportMetric(float64(rearmNs.Nanoseconds())/float64(b.N), "rearm-ns")
		})
	}
}
