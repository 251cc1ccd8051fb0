//go:build unix

package integration

// cmd/expose with what an operator adds: the PROXY protocol to nginx, several
// tunnels in one process, /ready and /metrics, and a proxy that restarts.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/promtest"
	"github.com/socksbind/socksbind/internal/testkit"
)

// startNginx starts nginx on a free loopback port, expecting the PROXY
// protocol (v1 or v2) on every connection and logging the addresses it
// carries to the returned access log, one line per request:
// "client=IP:PORT server=IP:PORT conn=IP uri=URI". Its answer to any
// request is "client IP:PORT".
func startNginx(t *testing.T) (s *Server, accessLog string) {
	t.Helper()
	requireTools(t, "nginx")
	dir := t.TempDir()
	tmpl := parseTemplate(t, "nginx.conf.tmpl")
	s = start(t, "nginx", readiness{}, func(attempt int) (int, []string) {
		port := freePort(t)
		conf := filepath.Join(dir, fmt.Sprintf("nginx-%d.conf", attempt))
		writeTemplate(t, tmpl, conf, struct {
			Dir  string
			Port int
		}{dir, port})
		return port, []string{"-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf, "-g", "daemon off;"}
	})
	return s, filepath.Join(dir, "access.log")
}

// accessLines polls the access log until it has n lines, and returns them.
func accessLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	logged := testkit.PollEvery(pollInterval, testTimeout, func() bool {
		b, err := os.ReadFile(path)
		if !errors.Is(err, os.ErrNotExist) {
			require.NoError(t, err)
		}
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		return len(b) > 0 && len(lines) >= n
	})
	require.True(t, logged, "nginx logged %d lines of %d", len(lines), n)
	return lines
}

// startGostOn starts GOST like startGost, on the given port: to restart it
// where it was.
func startGostOn(t *testing.T, cfg GostConfig, port int) *Server {
	t.Helper()
	requireTools(t, "gost")
	return start(t, "gost", readiness{socks: true}, func(int) (int, []string) {
		return port, []string{"-L", gostURL(cfg, port)}
	})
}

// kill ends the server with SIGKILL, sent to its pid, as a crash would, and
// waits until it and its processes are gone.
func (s *Server) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, syscall.Kill(s.pid, syscall.SIGKILL))
	<-s.exited
	require.True(t, waitGroupGone(s.pid, stopTimeout), "%s: processes left", s.Name)
}

// peerGET sends an HTTP/1.0 request for uri as a peer from the loopback IP
// src, to where the program said last that the service is reachable, and
// returns the answer's body and the peer's address. It tries again while
// the proxy refuses the connection or ends it before answering: a standard
// BIND between two connections (see exchangeCurrent).
func (p *exposeProc) peerGET(t *testing.T, src, uri string) (body, peer, addr string) {
	t.Helper()
	var err error
	answered := testkit.PollEvery(pollInterval, testTimeout, func() bool {
		addr = p.current()
		d := net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		var c net.Conn
		if c, err = d.Dial("tcp", addr); err == nil {
			var resp []byte
			require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
			if _, err = fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: service\r\n\r\n", uri); err == nil {
				resp, err = io.ReadAll(c)
			}
			peer = c.LocalAddr().String()
			c.Close()
			if err == nil && len(resp) > 0 {
				head, b, ok := strings.Cut(string(resp), "\r\n\r\n")
				require.True(t, ok, "an HTTP answer: %q", resp)
				require.True(t, strings.HasPrefix(head, "HTTP/1.1 200 "), "%q", head)
				body = b
				return true
			}
			if err != nil && !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
				require.NoError(t, err, "GET through %s", addr)
			}
		} else {
			require.ErrorIs(t, err, syscall.ECONNREFUSED, "dial %s", addr)
		}
		return false
	})
	require.True(t, answered, "%s: no answer for %v: %v", addr, testTimeout, err)
	return body, peer, addr
}

// statusAddr returns the address the program serves /ready and /metrics on.
func (p *exposeProc) statusAddr(t *testing.T) string {
	t.Helper()
	return p.next(t, exposeStatus)[1]
}

// startExposeStatus starts the program built at bin through GOST at gost,
// serving /ready and /metrics on 127.0.0.1:0 and one -tunnel for each of
// tunnels, and returns it and its status address.
func startExposeStatus(t *testing.T, bin string, gost *Server, tunnels ...string) (*exposeProc, string) {
	t.Helper()
	args := []string{"-proxy", "socks5://" + gost.Addr, "-status", "127.0.0.1:0"}
	for _, tunnel := range tunnels {
		args = append(args, "-tunnel", tunnel)
	}
	p := startExpose(t, bin, nil, args...)
	return p, p.statusAddr(t)
}

// stop ends the program with SIGTERM and checks that it exits with status 0.
func (p *exposeProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, p.wait(t), "exit status")
}

// getReady returns the status code and body of the program's /ready.
func getReady(t *testing.T, status string) (int, string) {
	t.Helper()
	return testkit.Get(t, "http://"+status+"/ready", testTimeout)
}

// pollReady polls /ready until it answers code, and returns the body.
func pollReady(t *testing.T, status string, code int) string {
	t.Helper()
	return testkit.PollGet(t, "http://"+status+"/ready", code, testTimeout)
}

// metricValue returns a metric of the program's tunnel listen=target.
func metricValue(t *testing.T, m promtest.Metrics, name, listen, target string, more ...string) float64 {
	t.Helper()
	v, ok := m.Value(name, append([]string{"listen", listen, "target", target}, more...)...)
	require.True(t, ok, "%s{listen=%q,target=%q %v}", name, listen, target, more)
	return v
}

// TestExposeProxyProtocol puts nginx, with proxy_protocol on, behind the
// program: the client address nginx logs is the real peer's (127.0.0.2,
// where the program itself connects from 127.0.0.1), and the server address
// the one the peer connected to at the proxy, for both versions of the
// header, through GOST's MBIND and Dante's BIND.
func TestExposeProxyProtocol(t *testing.T) {
	t.Parallel()
	bin := buildExpose(t)
	for _, proxy := range []string{"GOST", "Dante"} {
		for _, version := range []string{"v1", "v2"} {
			t.Run(proxy+"/"+version, func(t *testing.T) {
				t.Parallel()
				var server *Server
				if proxy == "GOST" {
					server = startGost(t, GostConfig{})
				} else {
					server = startDante(t, DanteConfig{})
				}
				nginx, accessLog := startNginx(t)
				p := startExpose(t, bin, nil, "-proxy", "socks5://"+server.Addr, "-proxy-protocol", version,
					"-tunnel", ":0="+nginx.Addr)
				p.next(t, exposeReachable)

				const requests = 3
				type sent struct{ peer, addr string }
				var want []sent
				for i := range requests {
					body, peer, addr := p.peerGET(t, "127.0.0.2", fmt.Sprintf("/%d", i))
					assert.Equal(t, "client "+peer+"\n", body, "nginx's answer names the peer")
					want = append(want, sent{peer, addr})
				}
				lines := accessLines(t, accessLog, requests)
				require.Len(t, lines, requests, "one line per request:\n%s", strings.Join(lines, "\n"))
				for i, line := range lines {
					assert.Equal(t, fmt.Sprintf("client=%s server=%s conn=127.0.0.1 uri=/%d", want[i].peer, want[i].addr, i), line)
				}
				p.stop(t)
			})
		}
	}
}

// TestExposeTunnels runs two tunnels through GOST, one of whose services is
// down: the other serves concurrent peers all the same, and /metrics,
// parsed as Prometheus parses it, counts what the test sent.
func TestExposeTunnels(t *testing.T) {
	t.Parallel()
	bin := buildExpose(t)
	gost := startGost(t, GostConfig{})
	echo := testkit.Echo(t, "tcp4").Addr().String()
	down := net.JoinHostPort("127.0.0.1", strconv.Itoa(refusedPort(t)))
	p, status := startExposeStatus(t, bin, gost, ":0="+down, ":0="+echo)
	addrs := make(map[string]string)
	for range 2 {
		m := p.next(t, exposeReachable)
		addrs[m[2]] = m[3]
	}
	body := pollReady(t, status, http.StatusOK)
	assert.Equal(t, ":0="+down+" ready\n:0="+echo+" ready\n", body, "armed: the service is not the proxy's concern")

	// The tunnel whose service is down takes each peer and closes it.
	const refused = 3
	for range refused {
		c := exposePeer(t, addrs[down])
		b, err := io.ReadAll(c)
		assert.NoError(t, err, "the peer reads EOF")
		assert.Empty(t, b)
		m := p.next(t, exposeConn)
		assert.Equal(t, down, m[1])
		assert.Contains(t, m[5], "service unreachable")
	}

	// The other serves concurrent peers meanwhile.
	const peers = 20
	var firstByte sync.WaitGroup
	firstByte.Add(peers)
	errs := make(chan error, peers)
	total := 0
	for i := range peers {
		size := 1 + i*5000
		total += size
		go func() { errs <- concurrentPeer(addrs[echo], size, &firstByte) }()
	}
	for range peers {
		assert.NoError(t, <-errs)
	}
	for range peers {
		up, down := p.nextConn(t)
		assert.Equal(t, up, down)
	}

	m, err := promtest.Scrape("http://" + status + "/metrics")
	require.NoError(t, err)
	for _, tt := range []struct {
		target          string
		total, refusals float64
		bytes           float64
	}{
		{down, refused, refused, 0},
		{echo, peers, 0, float64(total)},
	} {
		assert.Equal(t, tt.total, metricValue(t, m, "expose_connections_total", ":0", tt.target), tt.target)
		assert.Equal(t, 0.0, metricValue(t, m, "expose_connections_open", ":0", tt.target), tt.target)
		assert.Equal(t, tt.refusals, metricValue(t, m, "expose_service_refusals_total", ":0", tt.target), tt.target)
		assert.Equal(t, tt.bytes, metricValue(t, m, "expose_relayed_bytes_total", ":0", tt.target, "direction", "up"), tt.target)
		assert.Equal(t, tt.bytes, metricValue(t, m, "expose_relayed_bytes_total", ":0", tt.target, "direction", "down"), tt.target)
		assert.Equal(t, 1.0, metricValue(t, m, "expose_tunnel_ready", ":0", tt.target), tt.target)
		assert.Equal(t, 0.0, metricValue(t, m, "expose_proxy_retries_total", ":0", tt.target), tt.target)
		assert.Equal(t, 0.0, metricValue(t, m, "expose_reestablished_total", ":0", tt.target), tt.target)
	}
	p.stop(t)
}

// TestExposeReadyPortHeld runs two tunnels through GOST with fixed ports,
// one of which the test holds: GOST refuses it, the tunnel retries, and
// /ready answers 503 while the other tunnel serves; once the port is free
// the tunnel is armed and /ready answers 200.
func TestExposeReadyPortHeld(t *testing.T) {
	t.Parallel()
	bin := buildExpose(t)
	gost := startGost(t, GostConfig{})
	echo := testkit.Echo(t, "tcp4").Addr().String()
	free := fmt.Sprintf(":%d", freePort(t))
	held, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))))
	require.NoError(t, err)
	defer held.Close()
	heldListen := fmt.Sprintf(":%d", held.Addr().(*net.TCPAddr).Port)

	p, status := startExposeStatus(t, bin, gost, free+"="+echo, heldListen+"="+echo)
	m := p.next(t, exposeReachable)
	require.Equal(t, free, m[1], "the free port is armed")
	p.next(t, exposeLine("WARN", "proxy trouble"))
	code, body := getReady(t, status)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, free+"="+echo+" ready\n"+heldListen+"="+echo+" not ready\n", body)

	c := exposePeer(t, "127.0.0.1"+free)
	assert.Equal(t, "served while the other waits", exchange(t, c, "served while the other waits"))

	require.NoError(t, held.Close())
	m = p.next(t, exposeReachable)
	assert.Equal(t, heldListen, m[1])
	assert.Equal(t, "127.0.0.1"+heldListen, m[3])
	pollReady(t, status, http.StatusOK)
	c2 := exposePeer(t, "127.0.0.1"+heldListen)
	assert.Equal(t, "and now this one", exchange(t, c2, "and now this one"))
	assert.Equal(t, "still", exchange(t, c, "still"))

	metrics, err := promtest.Scrape("http://" + status + "/metrics")
	require.NoError(t, err)
	assert.Greater(t, metricValue(t, metrics, "expose_proxy_retries_total", heldListen, echo), 0.0)
	assert.Equal(t, 0.0, metricValue(t, metrics, "expose_proxy_retries_total", free, echo))
	assert.Equal(t, 1.0, metricValue(t, metrics, "expose_connections_open", free, echo))
	require.NoError(t, c.Close())
	require.NoError(t, c2.Close())
	p.stop(t)
}

// TestExposeGostRestart kills GOST under the program (SIGKILL to its pid)
// and starts it again on the same port: /ready answers 503 while GOST is
// down and the program keeps running; once GOST is back, the tunnel is
// armed again at the same address, /ready answers 200, a peer is served,
// and /metrics counts one re-established session.
func TestExposeGostRestart(t *testing.T) {
	t.Parallel()
	bin := buildExpose(t)
	gost := startGost(t, GostConfig{})
	echo := testkit.Echo(t, "tcp4").Addr().String()
	listen := fmt.Sprintf(":%d", freePort(t))
	p, status := startExposeStatus(t, bin, gost, listen+"="+echo)
	addr := p.next(t, exposeReachable)[3]
	pollReady(t, status, http.StatusOK)
	c := exposePeer(t, addr)
	assert.Equal(t, "before", exchange(t, c, "before"))
	require.NoError(t, c.Close())
	p.nextConn(t)

	gost.kill(t)
	body := pollReady(t, status, http.StatusServiceUnavailable)
	assert.Equal(t, listen+"="+echo+" not ready\n", body)
	select {
	case <-p.exited:
		require.FailNow(t, "expose exited when GOST went down", "exit status %d", p.code)
	default:
	}

	startGostOn(t, GostConfig{}, gost.Port)
	pollReady(t, status, http.StatusOK)
	c = exposePeer(t, addr)
	assert.Equal(t, "after", exchange(t, c, "after"))
	require.NoError(t, c.Close())
	p.nextConn(t)

	metrics, err := promtest.Scrape("http://" + status + "/metrics")
	require.NoError(t, err)
	assert.Equal(t, 1.0, metricValue(t, metrics, "expose_reestablished_total", listen, echo))
	assert.Equal(t, 2.0, metricValue(t, metrics, "expose_connections_total", listen, echo))
	p.stop(t)
	assert.Zero(t, p.out.Count(exposeLine("ERROR", "tunnel failed")))
}
