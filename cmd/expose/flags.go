package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/proxyext"
)

const usage = `Usage: expose -tunnel LISTEN=TO [-tunnel LISTEN=TO ...] [-proxy URL] [flags]
       expose -to HOST:PORT [-listen :PORT] [-proxy URL] [flags]

Publish TCP services of this host through a remote SOCKS5 proxy, as ssh -R
does through an SSH server: the proxy listens (SOCKS5 BIND) and every
connection that reaches it is relayed to the service. Each -tunnel is its
own listener at the proxy: LISTEN is the port the proxy listens on (:8080,
or :0 for any), TO the service (127.0.0.1:3000). -listen and -to give one
tunnel.

A proxy with GOST's multiplexed BIND takes any number of connections at one
address. Any other SOCKS5 proxy (Dante) takes one connection per BIND, and
expose asks again after each: with port 0 the proxy may then pick another
port, and expose logs the new address; a fixed port is unavailable while a
connection holds it, and on Dante for about a minute after the service closed
a connection first (TIME_WAIT), and expose waits until it is free again.

A tunnel whose port the proxy cannot give (taken, refused) or whose proxy is
unreachable keeps retrying with backoff while the others serve. Trouble that
expose waits out is logged when it starts and then at most every 30 seconds.
A refusal that retrying cannot mend (the proxy's rules, the credentials, a
proxy without multiplexed BIND under -mux on) ends expose.

With -proxy-protocol, each connection to the service starts with a PROXY
protocol header (HAProxy's, v1 text or v2 binary) naming the peer and the
address it connected to at the proxy; the service must expect it (nginx:
listen ... proxy_protocol).

With -status ADDR, expose serves over HTTP at ADDR: /ready answers 200 while
every tunnel is armed at the proxy (a peer can connect), 503 otherwise;
/metrics gives connections, bytes, refusals by the service, retries and
re-established sessions per tunnel, in Prometheus text format.

Each connection is logged when it ends: the peer, the bytes from the peer to
the service (up) and back (down), and how long it lasted.

SIGINT or SIGTERM stops taking connections and waits up to -grace for the
open ones; a second signal ends expose at once. Exit status: 0 after a
signal, 1 when a tunnel fails for good, 2 for a usage error.

Flags:
`

const example = `
Examples:
  expose -proxy socks5://proxy.example:1080 -tunnel :8080=127.0.0.1:3000
  ALL_PROXY=socks5h://user:pass@proxy.example expose -tunnel :2222=127.0.0.1:22
  expose -proxy 'socks5://proxy.example?bind=on' -tunnel :80=127.0.0.1:8080 -tunnel :443=127.0.0.1:8443
  expose -proxy socks5://proxy.example -proxy-protocol v2 -status 127.0.0.1:9100 -tunnel :80=127.0.0.1:8080
`

// config is what the command line asks for.
type config struct {
	dialer        *socksbind.Dialer
	proxy         string // the proxy's URL, redacted
	tunnels       []tunnelSpec
	mux           socksbind.Multiplex
	advertise     netip.Addr
	proxyProtocol proxyProtocol
	status        string // the address of /ready and /metrics, or ""
	logJSON       bool
	retryLimit    time.Duration
	dialTimeout   time.Duration
	grace         time.Duration
}

// tunnelSpec is one tunnel of the command line.
type tunnelSpec struct {
	network string // "tcp", "tcp4" or "tcp6"
	listen  string // the BIND address: ":PORT"
	port    int    // its port; 0 follows the proxy
	target  string // the service, HOST:PORT
}

// tunnelFlags collects the repeated -tunnel flag.
type tunnelFlags []string

func (f *tunnelFlags) String() string { return strings.Join(*f, " ") }

func (f *tunnelFlags) Set(s string) error {
	*f = append(*f, s)
	return nil
}

// parseArgs reads the command line and, without -proxy, the environment as
// proxyext does: an error is a usage error, and never shows a password.
// With -h it writes the usage to out and returns flag.ErrHelp.
func parseArgs(args []string, out io.Writer) (config, error) {
	fs := flag.NewFlagSet("expose", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usage)
		fs.PrintDefaults()
		fmt.Fprint(out, example)
	}
	var tunnels tunnelFlags
	fs.Var(&tunnels, "tunnel", "a tunnel, `LISTEN=TO`: the port at the proxy and the service, such as :8080=127.0.0.1:3000 (repeat for more)")
	proxyURL := fs.String("proxy", "", "SOCKS5 proxy `URL`: socks5://[USER:PASS@]HOST[:PORT], or socks5h:// (default: $ALL_PROXY)")
	listen := fs.String("listen", "", "`:PORT` for the proxy to listen on, with -to; :0 (the default) takes the port the proxy picks")
	to := fs.String("to", "", "the service to publish, `HOST:PORT`, such as 127.0.0.1:3000: one tunnel, in place of -tunnel")
	var mux socksbind.Multiplex
	fs.TextVar(&mux, "mux", socksbind.MultiplexAuto, "`mode` of listening: auto (multiplexed BIND when the proxy has it), on or off;\nwithout -mux, the proxy URL's bind=on or bind=auto, if any, else auto")
	advertise := fs.String("advertise", "", "`IP` to print in place of the one the proxy reports (a proxy behind NAT)")
	proxyProto := fs.String("proxy-protocol", "", "`version` of the PROXY protocol header sent to the service first: v1 or v2 (default: none)")
	statusAddr := fs.String("status", "", "`ADDR` to serve /ready and /metrics on, such as 127.0.0.1:9100 (default: none)")
	logFormat := fs.String("log", "text", "log `format`: text or json")
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
	if cfg.tunnels, err = parseTunnels(tunnels, *listen, *to); err != nil {
		return cfg, err
	}
	if *advertise != "" {
		if cfg.advertise, err = netip.ParseAddr(*advertise); err != nil {
			return cfg, fmt.Errorf("-advertise %q: not an IP address", *advertise)
		}
	}
	if cfg.proxyProtocol, err = parseProxyProtocol(*proxyProto); err != nil {
		return cfg, err
	}
	if *statusAddr != "" {
		if _, _, err := net.SplitHostPort(*statusAddr); err != nil {
			return cfg, fmt.Errorf("-status %q: want HOST:PORT, such as 127.0.0.1:9100", *statusAddr)
		}
		cfg.status = *statusAddr
	}
	switch *logFormat {
	case "text":
	case "json":
		cfg.logJSON = true
	default:
		return cfg, fmt.Errorf("-log %q: want text or json", *logFormat)
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

	lc, shown, err := proxyFrom(*proxyURL)
	if err != nil {
		return cfg, err
	}
	cfg.dialer, cfg.proxy = lc.Dialer, shown
	muxGiven := false
	fs.Visit(func(f *flag.Flag) { muxGiven = muxGiven || f.Name == "mux" })
	switch {
	case !muxGiven && lc.Multiplex == socksbind.MultiplexOff:
		// A URL without bind= (or with bind=off, which proxyext does
		// not tell apart) leaves the choice to expose.
		cfg.mux = socksbind.MultiplexAuto
	case !muxGiven:
		cfg.mux = lc.Multiplex
	case lc.Multiplex != socksbind.MultiplexOff && lc.Multiplex != mux:
		return cfg, fmt.Errorf("-mux %v contradicts bind=%v in the proxy URL: give one of them", mux, lc.Multiplex)
	default:
		cfg.mux = mux
	}
	return cfg, nil
}

// parseTunnels reads the -tunnel flags, or -listen and -to.
func parseTunnels(flags []string, listen, to string) ([]tunnelSpec, error) {
	switch {
	case len(flags) > 0 && (listen != "" || to != ""):
		return nil, errors.New("give either -tunnel LISTEN=TO (repeated) or -listen and -to, not both")
	case len(flags) == 0 && to == "":
		return nil, errors.New("no service to publish: give -tunnel LISTEN=TO, such as -tunnel :8080=127.0.0.1:3000")
	case len(flags) == 0:
		if listen == "" {
			listen = ":0"
		}
		spec, err := parseTunnel("-listen", listen, "-to", to)
		return []tunnelSpec{spec}, err
	}
	var specs []tunnelSpec
	seen := make(map[string]bool)
	ports := make(map[int]bool)
	for _, f := range flags {
		l, t, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("-tunnel %q: want LISTEN=TO, such as :8080=127.0.0.1:3000", f)
		}
		spec, err := parseTunnel("-tunnel "+f+": LISTEN", l, "TO", t)
		if err != nil {
			return nil, err
		}
		key := spec.listen + "=" + spec.target
		switch {
		case seen[key]:
			return nil, fmt.Errorf("-tunnel %s given twice", key)
		case spec.port != 0 && ports[spec.port]:
			return nil, fmt.Errorf("-tunnel %s: port %d is asked for by another tunnel", f, spec.port)
		}
		seen[key], ports[spec.port] = true, spec.port != 0
		specs = append(specs, spec)
	}
	return specs, nil
}

// parseTunnel reads a tunnel's listen address and service, naming them
// as listenName and toName in errors.
func parseTunnel(listenName, listen, toName, to string) (tunnelSpec, error) {
	var spec tunnelSpec
	var err error
	if spec.network, spec.listen, spec.port, err = parseListen(listenName, listen); err != nil {
		return spec, err
	}
	spec.target, err = parseTarget(toName, to)
	return spec, err
}

// badFlags is an error of the flag package, which has printed it with the
// usage.
type badFlags struct{ error }

// parseListen reads -listen: a port, with no host or an unspecified one
// that picks the family. A host would mean different things to different
// proxies (the expected peer to Dante, the address to listen on to GOST).
func parseListen(name, s string) (network, address string, port int, err error) {
	if _, err := parsePort(s); err == nil {
		s = ":" + s // a port alone
	}
	host, p, err := net.SplitHostPort(s)
	if err == nil {
		port, err = parsePort(p)
	}
	if err != nil {
		return "", "", 0, fmt.Errorf("%s %q: want :PORT, such as :8080 (:0 for any port)", name, s)
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
	return "", "", 0, fmt.Errorf("%s %q: give the port alone, :%d (the proxy decides where it listens)", name, s, port)
}

// parseTarget reads -to: HOST:PORT with a port from 1 to 65535.
func parseTarget(name, s string) (string, error) {
	host, p, err := net.SplitHostPort(s)
	if err == nil {
		var port int
		port, err = parsePort(p)
		if err == nil && port == 0 {
			err = errors.New("port 0")
		}
	}
	if err != nil {
		return "", fmt.Errorf("%s %q: want HOST:PORT, such as 127.0.0.1:3000", name, s)
	}
	return net.JoinHostPort(host, p), nil
}

func parsePort(s string) (int, error) {
	port, err := strconv.ParseUint(s, 10, 16)
	return int(port), err
}

// proxyFrom returns the listen settings that the -proxy URL raw, or
// ALL_PROXY when raw is empty, describes (see [proxyext.ListenConfig]), and
// the proxy's URL, redacted.
func proxyFrom(raw string) (socksbind.ListenConfig, string, error) {
	const want = "socks5://HOST:PORT or socks5h://HOST:PORT"
	var (
		d     proxy.Dialer
		label string
		err   error
	)
	if raw != "" {
		u, perr := url.Parse(raw)
		if perr != nil || u.Host == "" {
			// The text may hold a password: it is not repeated.
			return socksbind.ListenConfig{}, "", fmt.Errorf("-proxy is not a proxy URL: want %s", want)
		}
		label = "-proxy " + proxyext.Redact(u)
		d, err = proxyext.FromURL(u, nil)
	} else {
		d, err = proxyext.FromEnvironment()
		label = fmt.Sprintf("%v (from ALL_PROXY)", d)
	}
	if err != nil {
		return socksbind.ListenConfig{}, "", err // proxyext names the URL redacted
	}
	if d == proxy.Direct { // FromEnvironment without ALL_PROXY
		return socksbind.ListenConfig{}, "", fmt.Errorf("no proxy: give -proxy %s, or set ALL_PROXY", want)
	}
	lc, ok := proxyext.ListenConfig(d)
	if !ok {
		return socksbind.ListenConfig{}, "", fmt.Errorf("%s cannot listen: expose needs a SOCKS5 proxy, %s", label, want)
	}
	return lc, fmt.Sprint(d), nil
}

// explain turns a failure of the listener into a line for the operator,
// with a hint where the cause is clear.
func explain(err error, cfg config, spec tunnelSpec) string {
	msg := err.Error()
	switch {
	case cfg.mux == socksbind.MultiplexOn && errors.Is(err, socksbind.ErrCommandNotSupported):
		msg += " (the proxy has no multiplexed BIND: use -mux auto or -mux off)"
	case errors.Is(err, socksbind.ErrNotAllowed):
		msg += " (the proxy's rules forbid BIND for this client)"
	case errors.Is(err, socksbind.ErrAddressInUse):
		msg += fmt.Sprintf(" (port %d is taken at the proxy: ask for another port, or :0 for any)", spec.port)
	case errors.Is(err, socksbind.ErrAuthRejected):
		msg += " (check the user name and password in the proxy URL)"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		msg += " (the proxy closed the connection: it may have restarted)"
	}
	return msg
}
