package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/testkit"
)

// startDanteOn starts danted as startDante does, on the given port.
func startDanteOn(t *testing.T, cfg DanteConfig, port int) *Server {
	t.Helper()
	requireTools(t, "danted")
	dir := t.TempDir()
	tmpl := parseTemplate(t, "danted.conf.tmpl")
	return start(t, "danted", readiness{socks: true}, func(attempt int) (int, []string) {
		conf := filepath.Join(dir, fmt.Sprintf("danted-%d.conf", attempt))
		writeTemplate(t, tmpl, conf, danteTemplateData{DanteConfig: cfg, Port: port, Root: os.Geteuid() == 0})
		return port, []string{"-f", conf, "-p", filepath.Join(dir, fmt.Sprintf("danted-%d.pid", attempt))}
	})
}

// lockedBuffer is a log destination that several goroutines may write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDanteRestart stops Dante under a listener that has served, and starts
// it again on the same port: the listener serves again, and Accept returns
// no error in between.
func TestDanteRestart(t *testing.T) {
	leakcheck.Check(t)
	first := startDante(t, DanteConfig{})
	d := newDialer(t, first.Addr, nil, nil)
	var retries sync.Map
	var nretries int
	var mu sync.Mutex
	armed := make(chan net.Addr, 8)
	ln := listen(t, d, socksbind.ListenConfig{
		Armed: func(a net.Addr) { armed <- a },
		Retrying: func(err error, wait time.Duration) {
			mu.Lock()
			nretries++
			mu.Unlock()
			retries.Store(err.Error(), wait)
		},
	}, ":0")
	peer := dialPeer(t, "127.0.0.1", ln.Addr())
	c := accept(t, ln)
	bothWays(t, c, peer)
	waitArmed(t, armed)

	pending := testkit.AcceptAsync(ln)
	require.NoError(t, first.stop())
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return nretries >= 2 }, testTimeout, time.Millisecond,
		"the listener did not notice that Dante had gone")
	select {
	case r := <-pending:
		require.FailNow(t, "Accept returned while Dante was down", "%v", r.Err)
	default:
	}

	startDanteOn(t, DanteConfig{}, first.Port)
	a := waitArmed(t, armed)
	peer2 := dialPeer(t, "127.0.0.1", a)
	c2, err := awaitAccept(t, pending)
	require.NoError(t, err, "Accept after the restart")
	assert.Equal(t, netutil.AddrPort(peer2.LocalAddr()), netutil.AddrPort(c2.RemoteAddr()))
	bothWays(t, c2, peer2)
	retries.Range(func(k, v any) bool {
		t.Logf("retried after %v: %v", v, k)
		return true
	})
}

// TestHTTPServeFixedPortDante serves HTTP with an unchanged http.Serve on a
// fixed-port listener behind Dante: 30 requests, each on a connection the
// client closes first (so that Dante's port is not left in TIME_WAIT).
// Dante cannot give the port back while a connection holds it; the
// listener waits that out itself, so http.Server logs no Accept error.
//
// Dante carries one connection per BIND, and between two BINDs nothing
// listens on the port: a client that comes then is refused. How long that
// lasts depends on when the last connection ends and on the listener's
// backoff (a re-arm that got another port waits 5 ms, then 10, 20, ... up
// to 1 s), so no gap between requests is safe on a loaded machine. Each
// request is sent once Armed has said that a BIND waits on the port, as a
// client of a Dante BIND listener must. Paced so, by the listener and not
// by the clock, it runs as the rest of the suite does, wherever danted is
// installed.
func TestHTTPServeFixedPortDante(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{})
	d := newDialer(t, dante.Addr, nil, nil)
	armed := make(chan net.Addr, 1)
	ln, _ := listenFixedPort(t, socksbind.ListenConfig{Dialer: d, Armed: func(a net.Addr) { armed <- a }}, socksbind.ErrAddressInUse)
	addr := ln.Addr().String()

	var errlog lockedBuffer
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s from %s", r.URL.Path, r.RemoteAddr)
		}),
		ErrorLog: log.New(&errlog, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	const requests = 30
	for i := range requests {
		if i > 0 {
			assert.Equal(t, addr, waitArmed(t, armed).String(), "re-armed at the same address")
		}
		tr := &http.Transport{Proxy: nil}
		client := &http.Client{Transport: tr, Timeout: testTimeout}
		resp, err := client.Get(fmt.Sprintf("http://%s/%d", addr, i))
		require.NoError(t, err, "request %d", i)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections() // the client closes first
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.True(t, strings.HasPrefix(string(body), fmt.Sprintf("/%d from 127.0.0.1:", i)), "request %d: %q", i, body)
		assert.Equal(t, addr, ln.Addr().String(), "the address never changes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx))
	assert.ErrorIs(t, <-served, http.ErrServerClosed)
	assert.NotContains(t, errlog.String(), "Accept error")
	assert.Empty(t, errlog.String(), "http.Server logged")
}
