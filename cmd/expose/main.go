// Command expose publishes TCP services of this host through a remote
// SOCKS5 proxy, as ssh -R does through an SSH server: the proxy listens
// with the BIND command, and every connection that reaches it is relayed to
// the service.
//
//	go install github.com/socksbind/socksbind/cmd/expose@latest
//	expose -proxy socks5://proxy.example:1080 -tunnel :8080=127.0.0.1:3000
//	expose -proxy 'socks5://proxy.example?bind=on' -tunnel :80=127.0.0.1:8080 -tunnel :2222=127.0.0.1:22
//	expose -proxy socks5://proxy.example -proxy-protocol v2 -status 127.0.0.1:9100 -tunnel :80=127.0.0.1:8080
//	expose -h
//
// With a proxy that has GOST's multiplexed BIND, every peer reaches one
// address, concurrently. Any other SOCKS5 proxy (Dante) carries one
// connection per BIND: expose asks again after each, and with port 0 the
// proxy may pick another port each time, which expose logs.
//
// The files: flags.go reads the command line, tunnel.go runs one tunnel,
// relay.go copies the bytes, proxyproto.go writes the PROXY protocol
// header, status.go serves /ready and /metrics. The tests run the tunnels
// against the in-process server of socks5test; the integration tests run
// the program against Dante and GOST, with nginx behind it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := parseArgs(os.Args[1:], os.Stderr)
	var bad badFlags
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &bad):
		os.Exit(2) // the flag package has said why
	case err != nil:
		fmt.Fprintf(os.Stderr, "expose: %v (expose -h for help)\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the program at once
	}()
	logger := newLogger(os.Stderr, cfg.logJSON)
	if err := run(ctx, cfg, logger); err != nil {
		var te *tunnelError
		if !errors.As(err, &te) {
			logger.Error(err.Error()) // run has logged a tunnel's failure
		}
		os.Exit(1)
	}
}

// newLogger returns the program's logger: slog's text format, or JSON.
func newLogger(w io.Writer, json bool) *slog.Logger {
	if json {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// tunnelError is the failure of one tunnel, which ends the program.
type tunnelError struct {
	spec tunnelSpec
	err  error
}

func (e *tunnelError) Error() string {
	return e.spec.listen + "=" + e.spec.target + ": " + e.err.Error()
}
func (e *tunnelError) Unwrap() error { return e.err }

// run runs every tunnel of cfg, and the status server when cfg asks for
// one, until ctx ends; it then stops them all and returns nil. When a
// tunnel fails for good, it logs why, stops the others and returns that
// failure, a *tunnelError.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	tunnels := make([]*tunnel, len(cfg.tunnels))
	st := &status{}
	for i, spec := range cfg.tunnels {
		tunnels[i] = newTunnel(cfg, spec, logger)
		st.tunnels = append(st.tunnels, tunnels[i].stats)
	}
	if cfg.status != "" {
		ln, err := net.Listen("tcp", cfg.status)
		if err != nil {
			return fmt.Errorf("-status: %w", err)
		}
		stopStatus := serveStatus(ln, st, logger)
		defer stopStatus()
		logger.Info("status served", "addr", ln.Addr().String(), "ready", "/ready", "metrics", "/metrics")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(tunnels))
	for _, t := range tunnels {
		go func() {
			if err := t.run(ctx); err != nil {
				t.log.Error("tunnel failed", "err", explain(err, cfg, t.spec))
				errs <- &tunnelError{spec: t.spec, err: err}
				return
			}
			errs <- nil
		}()
	}
	var first error
	for range tunnels {
		err := <-errs
		if first == nil && err != nil {
			first = err
		}
		st.stopping.Store(true)
		cancel() // one tunnel has ended: every other one stops
	}
	return first
}
