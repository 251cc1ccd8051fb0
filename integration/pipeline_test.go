package integration

// Pipelined handshakes (greeting, authentication and request in one write)
// against Dante and GOST, which answer them, and microsocks, which cannot;
// and round-trip benchmarks through a relay that adds 10 ms each way.

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/latency"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
)

// pipelinedDialer is a Dialer for addr that pipelines.
func pipelinedDialer(t testing.TB, addr string, auth *proxy.Auth) *socksbind.Dialer {
	t.Helper()
	d := newDialer(t, addr, auth, nil)
	d.Pipeline = true
	return d
}

// checkPipelined runs CONNECT and a BIND listener through d.
func checkPipelined(t *testing.T, d *socksbind.Dialer) {
	t.Helper()
	echo := testkit.Echo(t, "tcp4")
	c, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	_, err = c.Write([]byte("pipelined"))
	require.NoError(t, err)
	buf := make([]byte, 9)
	_, err = c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "pipelined", string(buf))

	armed := make(chan net.Addr, 8)
	ln := listen(t, d, socksbind.ListenConfig{Armed: func(a net.Addr) { armed <- a }}, ":0")
	addr := ln.Addr()
	for range 3 { // the first BIND and two pipelined re-arms
		pending := testkit.AcceptAsync(ln)
		peer := dialPeer(t, "127.0.0.1", addr)
		conn, err := awaitAccept(t, pending)
		require.NoError(t, err)
		bothWays(t, conn, peer)
		addr = waitArmed(t, armed)
	}
}

func TestPipelineDante(t *testing.T) {
	leakcheck.Check(t)
	t.Run("NoAuth", func(t *testing.T) {
		dante := startDante(t, DanteConfig{})
		checkPipelined(t, pipelinedDialer(t, dante.Addr, nil))
	})
	t.Run("Username", func(t *testing.T) {
		dante := startDante(t, DanteConfig{Username: true})
		checkPipelined(t, pipelinedDialer(t, dante.Addr, &proxy.Auth{User: TestUser, Password: TestPassword}))
		d := pipelinedDialer(t, dante.Addr, &proxy.Auth{User: TestUser, Password: "wrong"})
		_, err := d.DialContext(testContext(t), "tcp", "127.0.0.1:9")
		assert.ErrorIs(t, err, socksbind.ErrAuthRejected)
	})
}

func TestPipelineGost(t *testing.T) {
	leakcheck.Check(t)
	t.Run("NoAuth", func(t *testing.T) {
		gost := startGost(t, GostConfig{})
		checkPipelined(t, pipelinedDialer(t, gost.Addr, nil))
	})
	t.Run("Username", func(t *testing.T) {
		gost := startGost(t, GostConfig{User: "alice", Password: "s3cret"})
		checkPipelined(t, pipelinedDialer(t, gost.Addr, &proxy.Auth{User: "alice", Password: "s3cret"}))
		d := pipelinedDialer(t, gost.Addr, &proxy.Auth{User: "alice", Password: "wrong"})
		_, err := d.DialContext(testContext(t), "tcp", "127.0.0.1:9")
		assert.ErrorIs(t, err, socksbind.ErrAuthRejected)
	})
}

// microsocks drops what follows the greeting and waits: a pipelined
// handshake ends with the handshake timeout, or the caller's earlier
// deadline, and an error that says why.
func TestPipelineMicrosocks(t *testing.T) {
	leakcheck.Check(t)
	ms := startMicrosocks(t, "", "")
	t.Run("handshake timeout", func(t *testing.T) {
		d := pipelinedDialer(t, ms.Addr, nil)
		d.HandshakeTimeout = time.Second
		start := time.Now()
		_, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:9")
		took := time.Since(start)
		require.Error(t, err)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.True(t, ne.Timeout())
		assert.Contains(t, err.Error(), "Pipeline")
		assert.Less(t, took, 5*time.Second, "no hang beyond the handshake timeout")
		t.Logf("%v after %v", err, took.Round(time.Millisecond))
	})
	t.Run("caller's deadline", func(t *testing.T) {
		d := pipelinedDialer(t, ms.Addr, nil) // the default handshake timeout, 30 s
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := d.DialContext(ctx, "tcp", "127.0.0.1:9")
		took := time.Since(start)
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.True(t, ne.Timeout())
		assert.Contains(t, err.Error(), "Pipeline")
		assert.Less(t, took, 5*time.Second, "no hang beyond the caller's deadline")
		t.Logf("%v after %v", err, took.Round(time.Millisecond))
	})
}

// opaqueNoAuth is "no authentication" as a method the library does not
// know, and so never pipelines: a listener using it re-arms waiting for
// each answer, as listeners did before re-arms were pipelined.
type opaqueNoAuth struct{}

func (opaqueNoAuth) Method() socksbind.AuthMethod                      { return socksbind.AuthNone }
func (opaqueNoAuth) Authenticate(context.Context, io.ReadWriter) error { return nil }

// BenchmarkRTTReal counts round trips of handshakes with Dante and GOST
// behind a relay that adds 10 ms each way, for x/net and socksbind (plain
// and pipelined) in one run:
//
//	SOCKSBIND_INTEGRATION=require go test -run '^$' -bench RTTReal -benchtime 15x ./integration/
func BenchmarkRTTReal(b *testing.B) {
	echo := testkit.Echo(b, "tcp4")
	gostAuth := &proxy.Auth{User: "alice", Password: "s3cret"}
	servers := []struct {
		name  string
		start func(b *testing.B, auth bool) (string, *proxy.Auth)
	}{
		{"dante", func(b *testing.B, auth bool) (string, *proxy.Auth) {
			if auth {
				return startDante(b, DanteConfig{Username: true}).Addr, &proxy.Auth{User: TestUser, Password: TestPassword}
			}
			return startDante(b, DanteConfig{}).Addr, nil
		}},
		{"gost", func(b *testing.B, auth bool) (string, *proxy.Auth) {
			if auth {
				return startGost(b, GostConfig{User: gostAuth.User, Password: gostAuth.Password}).Addr, gostAuth
			}
			return startGost(b, GostConfig{}).Addr, nil
		}},
	}
	for _, srv := range servers {
		for _, auth := range []bool{false, true} {
			addr, creds := srv.start(b, auth)
			relay, err := latency.New(addr, 10*time.Millisecond)
			require.NoError(b, err)
			b.Cleanup(func() { relay.Close() })
			mode := "noauth"
			if auth {
				mode = "userpass"
			}
			xnet, err := proxy.SOCKS5("tcp", relay.Addr(), creds, proxy.Direct)
			require.NoError(b, err)
			plain := newDialer(b, relay.Addr(), creds, nil)
			piped := pipelinedDialer(b, relay.Addr(), creds)
			for _, c := range []struct {
				name string
				d    proxy.ContextDialer
			}{{"xnet", xnet.(proxy.ContextDialer)}, {"socksbind", plain}, {"socksbind-pipelined", piped}} {
				b.Run(srv.name+"/connect/"+mode+"/"+c.name, func(b *testing.B) {
					var total time.Duration
					for b.Loop() {
						start := time.Now()
						conn, err := c.d.DialContext(context.Background(), "tcp", echo.Addr().String())
						total += time.Since(start)
						require.NoError(b, err)
						conn.Close()
					}
					b.ReportMetric(float64(total)/float64(b.N)/float64(relay.RTT()), "RTT/op")
				})
			}
			if auth {
				continue
			}
			eachAnswer := newDialer(b, relay.Addr(), creds, nil)
			eachAnswer.Auth = []socksbind.Authenticator{opaqueNoAuth{}}
			for _, d := range []*socksbind.Dialer{eachAnswer, plain, piped} {
				name := "socksbind"
				switch {
				case d == eachAnswer:
					name += "-each-answer"
				case d.Pipeline:
					name += "-pipelined"
				}
				b.Run(srv.name+"/listen/"+name, func(b *testing.B) {
					var total time.Duration
					for b.Loop() {
						start := time.Now()
						ln, err := d.Listen(context.Background(), "tcp", ":0")
						total += time.Since(start)
						require.NoError(b, err)
						ln.Close()
					}
					b.ReportMetric(float64(total)/float64(b.N)/float64(relay.RTT()), "RTT/op")
				})
				b.Run(srv.name+"/accept/"+name, func(b *testing.B) {
					armed := make(chan time.Time, 1)
					ln := listen(b, d, socksbind.ListenConfig{Armed: func(net.Addr) { armed <- time.Now() }}, ":0")
					var accept, window time.Duration
					for b.Loop() {
						start := time.Now()
						peer, err := net.Dial("tcp", ln.Addr().String())
						require.NoError(b, err)
						c, err := ln.Accept()
						require.NoError(b, err)
						accept += time.Since(start)
						window += (<-armed).Sub(start)
						peer.Close()
						c.Close()
					}
					rtt := float64(relay.RTT())
					b.ReportMetric(float64(accept)/float64(b.N)/rtt, "accept-RTT/op")
					b.ReportMetric(float64(window)/float64(b.N)/rtt, "rearm-RTT/op")
				})
			}
		}
	}
}
