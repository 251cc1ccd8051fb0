package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// tunnelStats is what a tunnel counts for /ready and /metrics. Every field
// is updated on its own, atomically: a scrape may see a connection counted
// in total and not yet in open.
type tunnelStats struct {
	listen, target string // the labels: the -tunnel flag's two halves

	ready atomic.Bool // armed at the proxy: a peer can connect now

	open      atomic.Int64  // connections being relayed
	total     atomic.Uint64 // connections accepted
	up, down  atomic.Uint64 // bytes from peers to the service, and back
	refusals  atomic.Uint64 // connections the service refused (or did not answer in time)
	retries   atomic.Uint64 // retries of trouble at the proxy
	rearmed   atomic.Uint64 // times armed again after trouble
	inTrouble atomic.Bool   // retrying since last armed; owned by the hooks
}

func (s *tunnelStats) addUp(n int64)   { s.up.Add(uint64(n)) }
func (s *tunnelStats) addDown(n int64) { s.down.Add(uint64(n)) }

// listening records that the tunnel's first BIND is armed at the proxy:
// the retries before it re-established nothing.
func (s *tunnelStats) listening() {
	s.inTrouble.Store(false)
	s.ready.Store(true)
}

// armed records that the tunnel is armed at the proxy again.
func (s *tunnelStats) armed() {
	if s.inTrouble.Swap(false) {
		s.rearmed.Add(1)
	}
	s.ready.Store(true)
}

// retrying records a retry of trouble at the proxy.
func (s *tunnelStats) retrying() {
	s.ready.Store(false)
	s.inTrouble.Store(true)
	s.retries.Add(1)
}

// status serves /ready and /metrics for the tunnels of one process.
type status struct {
	tunnels  []*tunnelStats
	stopping atomic.Bool // the process is stopping: not ready
}

func (st *status) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", st.ready)
	mux.HandleFunc("GET /metrics", st.metrics)
	return mux
}

// ready answers 200 while every tunnel is armed at the proxy, and 503
// otherwise (or while stopping), with one line per tunnel.
func (st *status) ready(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	all := !st.stopping.Load()
	if !all {
		b.WriteString("stopping\n")
	}
	for _, s := range st.tunnels {
		state := "ready"
		if !s.ready.Load() {
			state, all = "not ready", false
		}
		fmt.Fprintf(&b, "%s=%s %s\n", s.listen, s.target, state)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !all {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, b.String())
}

// metricDesc is one metric family of /metrics.
type metricDesc struct {
	name, kind, help string
	label            string // an extra label name, or ""
	values           func(s *tunnelStats) []labelled
}

// labelled is a value of a metric, with the value of its extra label.
type labelled struct {
	label string
	value float64
}

func one(v float64) []labelled { return []labelled{{value: v}} }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var metricDescs = []metricDesc{
	{"expose_tunnel_ready", "gauge", "Whether the tunnel is armed at the proxy (1) or not (0).", "",
		func(s *tunnelStats) []labelled { return one(b2f(s.ready.Load())) }},
	{"expose_connections_open", "gauge", "Connections being relayed to the service.", "",
		func(s *tunnelStats) []labelled { return one(float64(s.open.Load())) }},
	{"expose_connections_total", "counter", "Connections accepted at the proxy.", "",
		func(s *tunnelStats) []labelled { return one(float64(s.total.Load())) }},
	{"expose_relayed_bytes_total", "counter", "Bytes relayed: up from peers to the service, down back to them.", "direction",
		func(s *tunnelStats) []labelled {
			return []labelled{{"up", float64(s.up.Load())}, {"down", float64(s.down.Load())}}
		}},
	{"expose_service_refusals_total", "counter", "Connections closed because the service refused them or did not answer.", "",
		func(s *tunnelStats) []labelled { return one(float64(s.refusals.Load())) }},
	{"expose_proxy_retries_total", "counter", "Retries after trouble at the proxy (port unavailable, proxy unreachable, session lost).", "",
		func(s *tunnelStats) []labelled { return one(float64(s.retries.Load())) }},
	{"expose_reestablished_total", "counter", "Times the tunnel was armed at the proxy again after trouble, a lost session re-established included.", "",
		func(s *tunnelStats) []labelled { return one(float64(s.rearmed.Load())) }},
}

// metrics writes the Prometheus text exposition format, version 0.0.4.
func (st *status) metrics(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	for _, d := range metricDescs {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", d.name, d.help, d.name, d.kind)
		for _, s := range st.tunnels {
			for _, v := range d.values(s) {
				fmt.Fprintf(&b, `%s{listen="%s",target="%s"`, d.name, escapeLabel(s.listen), escapeLabel(s.target))
				if d.label != "" {
					fmt.Fprintf(&b, `,%s="%s"`, d.label, escapeLabel(v.label))
				}
				fmt.Fprintf(&b, "} %v\n", v.value)
			}
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	io.WriteString(w, b.String())
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// serveStatus serves st on ln, and returns the function that stops it and
// waits for it.
func serveStatus(ln net.Listener, st *status, logger *slog.Logger) (stop func()) {
	srv := &http.Server{
		Handler:           st.handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("status server failed", "err", err.Error())
		}
	}()
	return func() {
		srv.Close()
		<-done
	}
}
