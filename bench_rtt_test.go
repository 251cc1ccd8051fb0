package socksbind_test

// Round-trip benchmarks: socks5test behind a relay that adds 10 ms each way,
// reporting each handshake in round trips (RTT/op), for x/net and for
// socksbind with and without pipelining, in one run:
//
//	go test -run '^$' -bench RTT -benchtime 15x .

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/latency"
	"github.com/socksbind/socksbind/socks5test"
)

const rttOneWay = 10 * time.Millisecond

// rttProxy starts socks5test (with a user when auth) behind a latency relay.
func rttProxy(b *testing.B, auth bool) (*socks5test.Server, *latency.Relay) {
	b.Helper()
	srv := socks5test.NewUnstartedServer()
	if auth {
		srv.Users = map[string]string{"user": "password"}
	}
	srv.Start()
	b.Cleanup(srv.Close)
	relay, err := latency.New(srv.Addr(), rttOneWay)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { relay.Close() })
	return srv, relay
}

// sink accepts connections and holds them until the benchmark ends.
func sink(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { io.Copy(io.Discard, c); c.Close() })
		}
	})
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func reportRTT(b *testing.B, total time.Duration, rtt time.Duration) {
	b.ReportMetric(float64(total)/float64(b.N)/float64(rtt), "RTT/op")
}

// rttDialers are the clients compared: x/net's SOCKS5 and socksbind's,
// plain and pipelined.
func rttDialers(b *testing.B, addr string, auth *proxy.Auth) []struct {
	name string
	d    proxy.ContextDialer
} {
	b.Helper()
	xnet, err := proxy.SOCKS5("tcp", addr, auth, proxy.Direct)
	if err != nil {
		b.Fatal(err)
	}
	plain, err := socksbind.SOCKS5("tcp", addr, auth, nil)
	if err != nil {
		b.Fatal(err)
	}
	piped, _ := socksbind.SOCKS5("tcp", addr, auth, nil)
	piped.Pipeline = true
	return []struct {
		name string
		d    proxy.ContextDialer
	}{{"xnet", xnet.(proxy.ContextDialer)}, {"socksbind", plain}, {"socksbind-pipelined", piped}}
}

// BenchmarkRTTConnect is a whole CONNECT, without and with
// username/password authentication.
func BenchmarkRTTConnect(b *testing.B) {
	target := sink(b)
	for _, mode := range []struct {
		name string
		auth *proxy.Auth
	}{{"noauth", nil}, {"userpass", &proxy.Auth{User: "user", Password: "password"}}} {
		_, relay := rttProxy(b, mode.auth != nil)
		for _, c := range rttDialers(b, relay.Addr(), mode.auth) {
			b.Run(mode.name+"/"+c.name, func(b *testing.B) {
				var total time.Duration
				for b.Loop() {
					start := time.Now()
					conn, err := c.d.DialContext(context.Background(), "tcp", target)
					total += time.Since(start)
					if err != nil {
						b.Fatal(err)
					}
					conn.Close()
				}
				reportRTT(b, total, relay.RTT())
			})
		}
	}
}

// BenchmarkRTTListen is Listen: BIND to the first reply.
func BenchmarkRTTListen(b *testing.B) {
	_, relay := rttProxy(b, false)
	for _, pipelined := range []bool{false, true} {
		name := "socksbind"
		if pipelined {
			name += "-pipelined"
		}
		b.Run(name, func(b *testing.B) {
			d, _ := socksbind.SOCKS5("tcp", relay.Addr(), nil, nil)
			d.Pipeline = pipelined
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				ln, err := d.Listen(context.Background(), "tcp", ":0")
				total += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				ln.Close()
			}
			reportRTT(b, total, relay.RTT())
		})
	}
}

// BenchmarkRTTAccept measures, for each connection of a re-arming
// listener, peer→Accept (the peer connects until Accept returns it) and the
// re-arm window (the peer connects until the next BIND waits: the time in
// which a second peer would be refused).
//
// "each-answer" re-arms as a listener did before re-arms were pipelined:
// its method is one the library cannot pipeline, so every BIND waits for
// each answer.
func BenchmarkRTTAccept(b *testing.B) {
	_, relay := rttProxy(b, false)
	for _, mode := range []string{"socksbind-each-answer", "socksbind", "socksbind-pipelined"} {
		b.Run(mode, func(b *testing.B) {
			d, _ := socksbind.SOCKS5("tcp", relay.Addr(), nil, nil)
			d.Pipeline = mode == "socksbind-pipelined"
			if mode == "socksbind-each-answer" {
				d.Auth = []socksbind.Authenticator{opaqueNoAuth{}}
			}
			armed := make(chan time.Time, 1)
			lc := socksbind.ListenConfig{Dialer: d, Armed: func(net.Addr) { armed <- time.Now() }}
			ln, err := lc.Listen(context.Background(), "tcp", ":0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			var accept, window time.Duration
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
				accept += time.Since(start)
				window += (<-armed).Sub(start)
				peer.Close()
				c.Close()
			}
			b.ReportMetric(float64(accept)/float64(b.N)/float64(relay.RTT()), "accept-RTT/op")
			b.ReportMetric(float64(window)/float64(b.N)/float64(relay.RTT()), "rearm-RTT/op")
		})
	}
}

// opaqueNoAuth is "no authentication" as a method the library does not
// know, and so never pipelines.
type opaqueNoAuth struct{}

func (opaqueNoAuth) Method() socksbind.AuthMethod                      { return socksbind.AuthNone }
func (opaqueNoAuth) Authenticate(context.Context, io.ReadWriter) error { return nil }
