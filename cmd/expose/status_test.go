package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/promtest"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

var statusLine = regexp.MustCompile(`^level=INFO msg="status served" addr=(\S+) `)

// runAll runs the program's tunnels and status server as main does, with
// args, and returns the log and the address of the status server. The
// test's cleanup stops them.
func runAll(t *testing.T, args ...string) (logLines, string) {
	t.Helper()
	cfg, err := parseArgs(args, io.Discard)
	require.NoError(t, err)
	logs := newLogLines()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, testLogger(logs)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(testTimeout):
			t.Errorf("run did not return; the log:\n%s", logs.String())
		}
		if t.Failed() {
			t.Logf("the log:\n%s", logs.String())
		}
	})
	return logs, logs.next(t, statusLine)[1]
}

// getReady returns the status code and body of /ready.
func getReady(t *testing.T, addr string) (int, string) {
	t.Helper()
	return testkit.Get(t, "http://"+addr+"/ready", testTimeout)
}

// pollReady polls /ready until it answers code, and returns the body.
func pollReady(t *testing.T, addr string, code int) string {
	t.Helper()
	return testkit.PollGet(t, "http://"+addr+"/ready", code, testTimeout)
}

// TestStatus runs three tunnels: one serves, one's service is down, and
// one's port is held at the proxy until the test frees it. /ready says 503
// until the third is armed, then 200; /metrics counts what the test sent.
func TestStatus(t *testing.T) {
	leakcheck.Check(t)
	srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Multiplex = true })
	echo := testkit.Echo(t, "tcp").Addr().String()
	down := refusedAddr(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	heldListen := fmt.Sprintf(":%d", port)

	logs, status := runAll(t, "-proxy", srv.URL, "-status", "127.0.0.1:0",
		"-tunnel", ":0="+echo, "-tunnel", ":0="+down, "-tunnel", heldListen+"="+echo)
	addrs := make(map[string]string)
	for range 2 {
		m := logs.next(t, reachableLine)
		addrs[m[1]] = m[2]
	}
	logs.next(t, regexp.MustCompile(`^level=WARN msg="proxy trouble" listen=`+heldListen+` .*asked for port `+fmt.Sprint(port)))

	code, body := getReady(t, status)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, ":0="+echo+" ready\n")
	assert.Contains(t, body, ":0="+down+" ready\n")
	assert.Contains(t, body, heldListen+"="+echo+" not ready\n")

	// The first tunnel serves meanwhile; the second's service refuses.
	msg := payload(3000)
	got, err := roundTrip(addrs[echo], msg)
	require.NoError(t, err)
	assert.Equal(t, msg, got)
	got, err = roundTrip(addrs[down], msg)
	assert.NoError(t, err, "the peer reads EOF")
	assert.Empty(t, got)

	// Freed, the port is taken and /ready answers 200.
	require.NoError(t, held.Close())
	m := logs.next(t, reachableLine)
	assert.Equal(t, "127.0.0.1"+heldListen, m[2])
	assert.Regexp(t, ` retries=\d+ after=\S+$`, logs.lineOf(t, m[0]), "the line says how many retries it took")
	body = pollReady(t, status, http.StatusOK)
	assert.Equal(t, 3, strings.Count(body, " ready\n"))
	small := payload(10)
	got, err = roundTrip(m[2], small)
	require.NoError(t, err)
	assert.Equal(t, small, got)
	for range 3 {
		logs.nextConn(t)
	}

	metrics, err := promtest.Scrape("http://" + status + "/metrics")
	require.NoError(t, err)
	value := func(name, listen, target string, more ...string) float64 {
		t.Helper()
		v, ok := metrics.Value(name, append([]string{"listen", listen, "target", target}, more...)...)
		require.True(t, ok, "%s{listen=%q,target=%q,%v}", name, listen, target, more)
		return v
	}
	for _, tt := range []struct {
		listen, target  string
		total, up, down float64
		refusals, ready float64
		retriesAtLeast  float64
	}{
		{":0", echo, 1, 3000, 3000, 0, 1, 0},
		{":0", down, 1, 0, 0, 1, 1, 0},
		{heldListen, echo, 1, 10, 10, 0, 1, 1},
	} {
		assert.Equal(t, tt.total, value("expose_connections_total", tt.listen, tt.target), "total")
		assert.Equal(t, 0.0, value("expose_connections_open", tt.listen, tt.target), "open")
		assert.Equal(t, tt.up, value("expose_relayed_bytes_total", tt.listen, tt.target, "direction", "up"), "up")
		assert.Equal(t, tt.down, value("expose_relayed_bytes_total", tt.listen, tt.target, "direction", "down"), "down")
		assert.Equal(t, tt.refusals, value("expose_service_refusals_total", tt.listen, tt.target), "refusals")
		assert.Equal(t, tt.ready, value("expose_tunnel_ready", tt.listen, tt.target), "ready")
		assert.GreaterOrEqual(t, value("expose_proxy_retries_total", tt.listen, tt.target), tt.retriesAtLeast, "retries")
		assert.Equal(t, 0.0, value("expose_reestablished_total", tt.listen, tt.target), "re-established")
	}
}

// TestSpoiledStream checks that a stream the proxy spoiled, which the
// multiplexed listener reports to Retrying with no wait, leaves the tunnel
// armed: it is logged, and /ready stays 200.
func TestSpoiledStream(t *testing.T) {
	leakcheck.Check(t)
	srv := testkit.Proxy(t, func(s *socks5test.Server) {
		s.Multiplex = true
		s.MultiplexNoHeader = true // the peer's bytes come where the reply should
	})
	echo := testkit.Echo(t, "tcp").Addr().String()
	logs, status := runAll(t, "-proxy", srv.URL, "-status", "127.0.0.1:0", "-tunnel", ":0="+echo)
	addr := logs.next(t, reachableLine)[2]
	pollReady(t, status, http.StatusOK)
	c := dialPeer(t, addr)
	_, err := c.Write([]byte("not a SOCKS reply"))
	require.NoError(t, err)
	logs.next(t, regexp.MustCompile(`^level=WARN msg="proxy trouble" .*MBIND stream reply`))
	code, body := getReady(t, status)
	assert.Equal(t, http.StatusOK, code, body)
	metrics, err := promtest.Scrape("http://" + status + "/metrics")
	require.NoError(t, err)
	v, ok := metrics.Value("expose_proxy_retries_total", "listen", ":0", "target", echo)
	require.True(t, ok)
	assert.Zero(t, v, "a lost peer is no retry")
}
