package integration

// Benchmarks of cmd/expose against GOST's own remote port forwarding client
// (gost -L rtcp://... -F socks5://...), both through the same GOST server,
// both publishing the same HTTP service, in the same run. The tunnel's own
// process is measured: its CPU time (user and system, from /proc) and its
// resident memory; the HTTP service and the clients run in the test binary,
// GOST's server in its own process, and neither is counted.
//
//	SOCKSBIND_INTEGRATION=require go test -run '^$' -bench ExposeVsRTCP -benchtime 3s ./integration/

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/testkit"
)

// benchTunnel is a tunnel process under benchmark: where peers reach the
// service through it, and its pid.
type benchTunnel struct {
	name string
	addr string // at the GOST server
	pid  int
}

// benchBulkSize is the body of a bulk download: /bulk answers with it.
const benchBulkSize = 64 << 20

// startBenchService starts the HTTP service behind both tunnels: / answers
// a short text, /bulk benchBulkSize bytes.
func startBenchService(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	bulk := bytes.Repeat([]byte("0123456789abcdef"), benchBulkSize/16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bulk" {
			w.Header().Set("Content-Length", strconv.Itoa(len(bulk)))
			w.Write(bulk)
			return
		}
		io.WriteString(w, "hello from the service\n")
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	b.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// startBenchTunnels starts GOST, the service, expose and GOST's rtcp client,
// and returns the two tunnels.
func startBenchTunnels(b *testing.B) []benchTunnel {
	b.Helper()
	bin := buildExpose(b)
	gost := startGost(b, GostConfig{})
	svc := startBenchService(b)

	exposePort := freePort(b)
	p := startExpose(b, bin, nil, "-proxy", "socks5://"+gost.Addr, "-tunnel", fmt.Sprintf(":%d=%s", exposePort, svc), "-log", "json")
	p.next(b, regexp.MustCompile(`"msg":"reachable"`))
	b.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		p.wait(b)
	})

	// GOST's rtcp client, without the TLS it would otherwise negotiate with
	// a GOST server (notls): plain SOCKS5, as expose speaks.
	rtcpPort := freePort(b)
	path, err := exec.LookPath("gost")
	require.NoError(b, err)
	rtcp := &Server{
		Name:    "gost rtcp",
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(rtcpPort)),
		Port:    rtcpPort,
		logPath: filepath.Join(b.TempDir(), "rtcp.log"),
		exited:  make(chan struct{}),
	}
	require.NoError(b, rtcp.run(path, []string{"-L", fmt.Sprintf("rtcp://:%d/%s", rtcpPort, svc), "-F", "socks5://" + gost.Addr + "?notls=true"}))
	b.Cleanup(func() { rtcp.stop() })
	require.True(b, testkit.PollEvery(pollInterval, readyTimeout, func() bool { return ownsListener(gost.pid, rtcpPort) }),
		"gost rtcp did not bind; log:\n%s", rtcp.logText())
	return []benchTunnel{
		{"expose", net.JoinHostPort("127.0.0.1", strconv.Itoa(exposePort)), p.cmd.Process.Pid},
		{"rtcp", rtcp.Addr, rtcp.pid},
	}
}

// procCPU returns the CPU time (user and system) the process pid has used.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(b, err)
	// The fields after the command's closing parenthesis; utime and
	// stime are the 14th and 15th of the line, in clock ticks (100 Hz).
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	require.NoError(b, err)
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	require.NoError(b, err)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// procRSS returns the resident memory of the process pid, in bytes.
func procRSS(b *testing.B, pid int) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(b, err)
			return kib << 10
		}
	}
	require.FailNow(b, "no VmRSS")
	return 0
}

// BenchmarkExposeVsRTCP measures, for expose and for GOST's rtcp client
// through the same GOST:
//
//   - Requests: HTTP requests per second with c concurrent clients, on
//     kept-alive connections or one connection per request, and the
//     tunnel's CPU time per request;
//   - Bulk: 64 MiB downloads, and the tunnel's CPU time per GiB;
//   - Idle: the tunnel's resident memory per open connection, with 1,000
//     connections open, in processes started for it.
func BenchmarkExposeVsRTCP(b *testing.B) {
	tunnels := startBenchTunnels(b)
	for _, keepAlive := range []bool{true, false} {
		for _, c := range []int{1, 20, 200} {
			for _, tun := range tunnels {
				b.Run(fmt.Sprintf("Requests/keepalive=%v/c=%d/%s", keepAlive, c, tun.name), func(b *testing.B) {
					benchRequests(b, tun, c, keepAlive)
				})
			}
		}
	}
	for _, tun := range tunnels {
		b.Run("Bulk/"+tun.name, func(b *testing.B) { benchBulk(b, tun) })
	}
	for i, name := range []string{"expose", "rtcp"} {
		b.Run("Idle/"+name, func(b *testing.B) {
			// Processes of their own, which have served nothing yet.
			benchIdle(b, startBenchTunnels(b)[i])
		})
	}
}

func benchRequests(b *testing.B, tun benchTunnel, c int, keepAlive bool) {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: c, MaxConnsPerHost: c}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: testTimeout}
	url := "http://" + tun.addr + "/"
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		return err
	}
	require.NoError(b, get(), "warm-up request")

	var next sync.Mutex
	left := b.N
	errs := make(chan error, c)
	cpu0 := procCPU(b, tun.pid)
	b.ResetTimer()
	start := time.Now()
	for range c {
		go func() {
			for {
				next.Lock()
				if left == 0 {
					next.Unlock()
					errs <- nil
					return
				}
				left--
				next.Unlock()
				if err := get(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var failed error
	for range c {
		if err := <-errs; err != nil && failed == nil {
			failed = err
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	require.NoError(b, failed)
	cpu := procCPU(b, tun.pid) - cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
}

func benchBulk(b *testing.B, tun benchTunnel) {
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	cpu0 := procCPU(b, tun.pid)
	b.SetBytes(benchBulkSize)
	b.ResetTimer()
	for range b.N {
		resp, err := client.Get("http://" + tun.addr + "/bulk")
		require.NoError(b, err)
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.NoError(b, err)
		require.Equal(b, int64(benchBulkSize), n)
	}
	b.StopTimer()
	cpu := procCPU(b, tun.pid) - cpu0
	gib := float64(b.N) * benchBulkSize / (1 << 30)
	b.ReportMetric(cpu.Seconds()/gib, "cpu-s/GiB")
}

// benchIdleConns is how many connections Idle holds open.
const benchIdleConns = 1000

// The resident memory a process has taken is not all given back when the
// connections close: the first iteration's figure, from a process that has
// served nothing before, is reported.
func benchIdle(b *testing.B, tun benchTunnel) {
	var perConn float64
	for i := range b.N {
		rss0 := procRSS(b, tun.pid)
		conns := make([]net.Conn, 0, benchIdleConns)
		for range benchIdleConns {
			c, err := net.DialTimeout("tcp", tun.addr, testTimeout)
			require.NoError(b, err)
			conns = append(conns, c)
		}
		// One request on each: the tunnel has the connection to the
		// service open once the answer is back.
		for _, c := range conns {
			require.NoError(b, c.SetDeadline(time.Now().Add(testTimeout)))
			_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: service\r\n\r\n")
			require.NoError(b, err)
		}
		for _, c := range conns {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(b, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if i == 0 {
			perConn = float64(procRSS(b, tun.pid)-rss0) / benchIdleConns / 1024
		}
		for _, c := range conns {
			c.Close()
		}
	}
	b.ReportMetric(perConn, "KiB/conn")
}
