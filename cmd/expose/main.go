// Command expose publishes a TCP service of this host through a remote
// SOCKS5 proxy, as ssh -R does through an SSH server: the proxy listens with
// the BIND command, and every connection that reaches it is relayed to the
// service.
//
//	go run ./examples/expose -proxy socks5://proxy.example:1080 -listen :8080 -to 127.0.0.1:3000
//	ALL_PROXY=socks5h://proxy.example go run ./examples/expose -to 127.0.0.1:3000
//	go run ./examples/expose -h
//
// With a proxy that has GOST's multiplexed BIND, every peer reaches one
// address, concurrently. Any other SOCKS5 proxy (Dante) carries one
// connection per BIND: expose asks again after each, and with -listen :0 the
// proxy may pick another port each time, which expose prints.
//
// The logic is in tunnel.go, tested against the in-process server of
// socks5test; the integration tests run the program against Dante and GOST.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/proxyext"
)

const usage = `Usage: expose -to HOST:PORT [-proxy URL] [-listen :PORT] [flags]

Publish a TCP service of this host through a remote SOCKS5 proxy, as ssh -R
does through an SSH server: the proxy listens (SOCKS5 BIND) and every
connection that reaches it is relayed to the service.

A proxy with GOST's multiplexed BIND takes any number of connections at one
address. Any other SOCKS5 proxy (Dante) takes one connection per BIND, and
expose asks again after each: with -listen :0 the proxy may then pick another
port, and expose prints the new address; a fixed port is unavailable while a
connection holds it, and on Dante for about a minute after the service closed
a connection first (TIME_WAIT), and expose waits until it is free again.

Each connection is logged when it ends: the peer, the bytes from the peer to
the service (up) and back (down), and how long it lasted. Trouble with the
proxy that expose waits out is logged when it starts and then at most every
30 seconds, not at every retry.

SIGINT or SIGTERM stops taking connections and waits up to -grace for the
open ones; a second signal ends expose at once. Exit status: 0 after a
signal, 1 when the proxy fails, 2 for a usage error.

Flags:
`

const example = `
Examples:
  expose -proxy socks5://proxy.example:1080 -listen :8080 -to 127.0.0.1:3000
  ALL_PROXY=socks5h://user:pass@proxy.example expose -to 127.0.0.1:22
  expose -proxy 'socks5://proxy.example?bind=mux' -to 127.0.0.1:3000
`

func main() {
	cfg, err := parseArgs(os.Args[1:], os.Stderr, os.Getenv)
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
	t := newTunnel(cfg, log.New(os.Stderr, "expose: ", 0))
	if err := t.run(ctx); err != nil {
		t.log.Print(explain(err, cfg))
		os.Exit(1)
	}
}

// config is what the command line asks for.
type config struct {
	dialer      *socksbind.Dialer
	proxy       string // the proxy's URL, redacted
	network     string // "tcp", "tcp4" or "tcp6"
	listen      string // the BIND address: ":PORT"
	port        int    // its port; 0 follows the proxy
	target      string // the service, HOST:PORT
	mux         socksbind.Multiplex
	advertise   netip.Addr
	retryLimit  time.Duration
	dialTimeout time.Duration
	grace       time.Duration
}

// parseArgs reads the command line and the environment (through getenv):
// an error is a usage error, and never shows a password. With -h it
// writes the usage to out and returns flag.ErrHelp.
func parseArgs(args []string, out io.Writer, getenv func(string) string) (config, error) {
	fs := flag.NewFlagSet("expose", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usage)
		fs.PrintDefaults()
		fmt.Fprint(out, example)
	}
	proxyURL := fs.String("proxy", "", "SOCKS5 proxy `URL`: socks5://[USER:PASS@]HOST[:PORT], or socks5h:// (default: $ALL_PROXY)")
	listen := fs.String("listen", ":0", "`:PORT` for the proxy to listen on; :0 takes the port the proxy picks")
	to := fs.String("to", "", "the service to publish (required): `HOST:PORT`, such as 127.0.0.1:3000")
	mux := fs.String("mux", "", "`mode` of listening: auto (multiplexed BIND when the proxy has it), on or off\n(default: the proxy URL's bind=mux or bind=auto, else auto)")
	advertise := fs.String("advertise", "", "`IP` to print in place of the one the proxy reports (a proxy behind NAT)")
	retryLimit := fs.Duration("retry-limit", 0, "give up once the proxy has failed for this long (0: never)")
	dialTimeout := fs.Duration("dial-timeout", 5*time.Second, "bound of each connection to the service")
	grace := fs.Duration("grace", 5*time.Second, "how long open connections may go on after SIGINT or SIGTERM")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, badFlags{err} // the flag package has printed it
	}
	var cfg config
	var err error
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: flags only", fs.Arg(0))
	}
	if cfg.network, cfg.listen, cfg.port, err = parseListen(*listen); err != nil {
		return cfg, err
	}
	if *to == "" {
		return cfg, errors.New("-to is required: the service to publish, such as -to 127.0.0.1:3000")
	}
	if cfg.target, err = parseTarget(*to); err != nil {
		return cfg, err
	}
	var flagMux socksbind.Multiplex
	if *mux != "" {
		if flagMux, err = parseMux(*mux); err != nil {
			return cfg, err
		}
	}
	if *advertise != "" {
		if cfg.advertise, err = netip.ParseAddr(*advertise); err != nil {
			return cfg, fmt.Errorf("-advertise %q: not an IP address", *advertise)
		}
	}
	switch {
	case *retryLimit < 0:
		return cfg, errors.New("-retry-limit must not be negative")
	case *dialTimeout <= 0:
		return cfg, errors.New("-dial-timeout must be positive")
	case *grace < 0:
		return cfg, errors.New("-grace must not be negative")
	}
	cfg.retryLimit, cfg.dialTimeout, cfg.grace = *retryLimit, *dialTimeout, *grace

	var urlMux *socksbind.Multiplex
	cfg.dialer, cfg.proxy, urlMux, err = proxyFrom(*proxyURL, getenv)
	if err != nil {
		return cfg, err
	}
	switch {
	case *mux != "" && urlMux != nil && *urlMux != flagMux:
		return cfg, fmt.Errorf("-mux %s contradicts bind=%s in the proxy URL: give one of them", *mux, bindValue(*urlMux))
	case *mux != "":
		cfg.mux = flagMux
	case urlMux != nil:
		cfg.mux = *urlMux
	default:
		cfg.mux = socksbind.MultiplexAuto
	}
	return cfg, nil
}

// badFlags is an error of the flag package, which has printed it with the
// usage.
type badFlags struct{ error }

// parseListen reads -listen: a port, with no host or an unspecified one
// that picks the family. A host would mean different things to different
// proxies (the expected peer to Dante, the address to listen on to GOST).
func parseListen(s string) (network, address string, port int, err error) {
	host, p, err := net.SplitHostPort(s)
	if err == nil {
		port, err = parsePort(p)
	}
	if err != nil {
		return "", "", 0, fmt.Errorf("-listen %q: want :PORT, such as :8080 (:0 for any port)", s)
	}
	address = ":" + strconv.Itoa(port)
	switch host {
	case "":
		return "tcp", address, port, nil
	case "0.0.0.0":
		return "tcp4", address, port, nil
	case "::":
		return "tcp6", address, port, nil
	}
	return "", "", 0, fmt.Errorf("-listen %q: give the port alone, :%d (the proxy decides where it listens)", s, port)
}

// parseTarget reads -to: HOST:PORT with a port from 1 to 65535.
func parseTarget(s string) (string, error) {
	host, p, err := net.SplitHostPort(s)
	if err == nil {
		var port int
		port, err = parsePort(p)
		if err == nil && port == 0 {
			err = errors.New("port 0")
		}
	}
	if err != nil {
		return "", fmt.Errorf("-to %q: want HOST:PORT, such as 127.0.0.1:3000", s)
	}
	return net.JoinHostPort(host, p), nil
}

func parsePort(s string) (int, error) {
	port, err := strconv.ParseUint(s, 10, 16)
	return int(port), err
}

func parseMux(s string) (socksbind.Multiplex, error) {
	switch s {
	case "auto":
		return socksbind.MultiplexAuto, nil
	case "on":
		return socksbind.MultiplexOn, nil
	case "off":
		return socksbind.MultiplexOff, nil
	}
	return 0, fmt.Errorf("-mux %q: want auto, on or off", s)
}

// bindValue returns the bind= query value that selects m.
func bindValue(m socksbind.Multiplex) string {
	if m == socksbind.MultiplexOn {
		return "mux"
	}
	return m.String()
}

// proxyFrom returns the SOCKS5 dialer of the -proxy URL raw, or of ALL_PROXY
// when raw is empty, the URL redacted, and the listening mode its bind
// query parameter selects (nil when it has none).
func proxyFrom(raw string, getenv func(string) string) (*socksbind.Dialer, string, *socksbind.Multiplex, error) {
	const want = "socks5://HOST:PORT or socks5h://HOST:PORT"
	name := "-proxy"
	if raw == "" {
		// The rules of proxyext.FromEnvironment: the upper case spelling
		// wins when both are set. NO_PROXY does not apply to listening.
		for _, env := range []string{"ALL_PROXY", "all_proxy"} {
			if raw = getenv(env); raw != "" {
				name = env
				break
			}
		}
	}
	if raw == "" {
		return nil, "", nil, fmt.Errorf("no proxy: give -proxy %s, or set ALL_PROXY", want)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		// The text may hold a password: it is not repeated.
		return nil, "", nil, fmt.Errorf("%s is not a proxy URL: want %s", name, want)
	}
	shown := proxyext.Redact(u)
	label := "-proxy " + shown
	if name != "-proxy" {
		label = name + "=" + shown
	}
	switch strings.ToLower(u.Scheme) {
	case "socks5", "socks5h":
	case "http", "https":
		return nil, "", nil, fmt.Errorf("%s is an HTTP proxy, which cannot listen: expose needs a SOCKS5 proxy, %s", label, want)
	default:
		return nil, "", nil, fmt.Errorf("%s: scheme %q is not SOCKS5: want %s", label, u.Scheme, want)
	}
	d, err := proxyext.FromURL(u, nil)
	if err != nil {
		return nil, "", nil, err // proxyext names the URL redacted
	}
	sd, ok := proxyext.SOCKS5Dialer(d)
	if !ok {
		return nil, "", nil, fmt.Errorf("%s: not a SOCKS5 proxy", label)
	}
	// proxyext has checked the bind parameter, but keeps the mode it
	// selects to itself: it is read again here.
	var mux *socksbind.Multiplex
	switch u.Query().Get("bind") {
	case "mux":
		m := socksbind.MultiplexOn
		mux = &m
	case "auto":
		m := socksbind.MultiplexAuto
		mux = &m
	}
	return sd, shown, mux, nil
}

// explain turns a failure of the listener into a line for the operator,
// with a hint where the cause is clear.
func explain(err error, cfg config) string {
	msg := err.Error()
	switch {
	case cfg.mux == socksbind.MultiplexOn && errors.Is(err, socksbind.ErrCommandNotSupported):
		msg += " (the proxy has no multiplexed BIND: use -mux auto or -mux off)"
	case errors.Is(err, socksbind.ErrNotAllowed):
		msg += " (the proxy's rules forbid BIND for this client)"
	case errors.Is(err, socksbind.ErrAddressInUse):
		msg += fmt.Sprintf(" (port %d is taken at the proxy: another -listen port, or :0 for any)", cfg.port)
	case errors.Is(err, socksbind.ErrAuthRejected):
		msg += " (check the user name and password in the proxy URL)"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		msg += " (the proxy closed the connection: it may have restarted)"
	}
	return msg
}
