package proxyext

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpproxy"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
)

// FromEnvironment returns the dialer the environment asks for; it is
// FromEnvironmentUsing(nil). See [FromEnvironmentUsing].
func FromEnvironment() (proxy.Dialer, error) {
	return FromEnvironmentUsing(nil)
}

// FromEnvironmentUsing returns a dialer that follows ALL_PROXY and NO_PROXY
// (or all_proxy and no_proxy; the upper case spelling wins when both are
// set) as they are at the time of the call, with forward as the direct
// connection: the proxy is reached through it, and so are targets that
// NO_PROXY exempts. A nil forward means [proxy.Direct].
//
// The result always implements [proxy.ContextDialer]. When ALL_PROXY is
// unset or empty it is forward (made a ContextDialer if it was not one).
// Otherwise ALL_PROXY must be a URL that [FromURL] accepts, or
// FromEnvironmentUsing returns an error; the result then checks each
// target against NO_PROXY, and implements [ListenDialer] when the proxy can
// listen (socks5 and socks5h). Its String method returns the proxy URL,
// redacted.
//
// NO_PROXY matching is that of golang.org/x/net/http/httpproxy, so
// "localhost" and loopback addresses always bypass the proxy. Listening is
// never subject to NO_PROXY.
func FromEnvironmentUsing(forward proxy.Dialer) (proxy.Dialer, error) {
	env, err := readEnvironment(forward)
	if err != nil {
		return nil, err
	}
	return env.dialer, nil
}

// Listen returns a listener whose connections arrive through the proxy of
// ALL_PROXY, read at the time of the call, with the SOCKS5 BIND command:
// a [*socksbind.Listener], from the [ListenDialer] of [FromEnvironment].
// address is then as for [socksbind.ListenConfig.Listen]: its host, if
// any, is the peer to expect, and its port the port to ask the proxy for.
//
// When no proxy is configured, Listen listens on this host instead, as
// [net.ListenConfig.Listen] does with the same arguments; where its host
// would mean something else to the proxy, give an empty one (":0",
// ":8080") so that the program behaves the same either way.
//
// ctx bounds the BIND handshake (or the local listen) and has no effect on
// the listener once Listen returns. When the proxy cannot listen (an http
// or https proxy), the error matches [socksbind.ErrCommandNotSupported].
// An ALL_PROXY that is not a valid URL is an error. Errors are
// *net.OpError.
func Listen(ctx context.Context, network, address string) (net.Listener, error) {
	return listen(ctx, network, address, true)
}

// ListenProxy is [Listen] without the local fallback: when no proxy is
// configured, it fails with an error matching [socksbind.ErrNoProxy].
func ListenProxy(ctx context.Context, network, address string) (net.Listener, error) {
	return listen(ctx, network, address, false)
}

func listen(ctx context.Context, network, address string, fallback bool) (net.Listener, error) {
	env, err := configuredProxy(network, address, fallback)
	if err != nil {
		return nil, err
	}
	if env == nil {
		var lc net.ListenConfig
		return lc.Listen(ctx, network, address)
	}
	ld, ok := env.dialer.(ListenDialer)
	if !ok {
		return nil, env.cannot(network, address, "listen")
	}
	return ld.Listen(ctx, network, address)
}

// configuredProxy reads ALL_PROXY for Listen or ListenPacket: the environment
// when a proxy is configured; nil when none is and fallback lets the
// caller work locally; an error otherwise.
func configuredProxy(network, address string, fallback bool) (*environment, error) {
	env, err := readEnvironment(nil)
	switch {
	case err != nil:
		return nil, &net.OpError{Op: "listen", Net: network, Addr: netutil.TextAddr(address), Err: err}
	case env.proxy != nil:
		return env, nil
	case fallback:
		return nil, nil
	}
	return nil, &net.OpError{Op: "listen", Net: network, Addr: netutil.TextAddr(address), Err: fmt.Errorf("proxyext: ALL_PROXY is not set: %w", socksbind.ErrNoProxy)}
}

// cannot is the error of a proxy that cannot do what (listen, relay UDP).
func (env *environment) cannot(network, address, what string) error {
	return &net.OpError{Op: "listen", Net: network, Source: env.proxyAddr(), Addr: netutil.TextAddr(address),
		Err: fmt.Errorf("proxyext: %s=%s cannot %s: %w", env.name, Redact(env.proxy), what, socksbind.ErrCommandNotSupported)}
}

// environment is what ALL_PROXY and NO_PROXY say.
type environment struct {
	name   string   // the variable ALL_PROXY came from
	proxy  *url.URL // nil when none is set
	dialer proxy.Dialer
}

func (e *environment) proxyAddr() net.Addr {
	if e.proxy == nil {
		return nil
	}
	return netutil.TextAddr(e.proxy.Host)
}

// firstSet returns the first of names that is set and not empty, and its
// value.
func firstSet(getenv func(string) string, names ...string) (string, string) {
	for _, n := range names {
		if v := getenv(n); v != "" {
			return n, v
		}
	}
	return names[0], ""
}

func readEnvironment(forward proxy.Dialer) (*environment, error) {
	return readEnvironmentFrom(os.Getenv, forward)
}

// readEnvironmentFrom is readEnvironment with getenv in place of
// os.Getenv.
func readEnvironmentFrom(getenv func(string) string, forward proxy.Dialer) (*environment, error) {
	direct := asContextDialer(forward)
	name, raw := firstSet(getenv, "ALL_PROXY", "all_proxy")
	if raw == "" {
		return &environment{name: name, dialer: direct}, nil
	}
	if err := checkText(raw); err != nil {
		return nil, &configError{env: name, url: redactText(raw), err: err}
	}
	if !strings.Contains(raw, "://") {
		// The curl habit of host:port alone. curl would take it for an
		// http proxy; a SOCKS library does not guess, whatever the
		// host looks like (a name, an IP, a bracketed IPv6 address).
		return nil, &configError{env: name, url: redactText(raw), err: fmt.Errorf(
			"not a proxy URL: want scheme://host[:port], such as socks5h://%s", redactText(raw))}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, parseError(name, raw, err)
	}
	if u.Scheme == "" || (u.Host == "" && u.Opaque != "") {
		return nil, &configError{env: name, url: redactText(raw), err: errors.New("not a proxy URL: want scheme://host[:port], such as socks5h://127.0.0.1:1080")}
	}
	d, err := FromURL(u, forward)
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			ce.env = name
		}
		return nil, err
	}
	_, noProxy := firstSet(getenv, "NO_PROXY", "no_proxy")
	// httpproxy decides; the proxy URL it is given only stands for "use
	// the proxy", since it does not know every scheme.
	cfg := httpproxy.Config{HTTPSProxy: "http://proxy.invalid", NoProxy: noProxy}
	ed := &envDialer{
		name:     name,
		url:      Redact(u),
		proxy:    asContextDialer(d),
		direct:   direct,
		proxyFor: cfg.ProxyFunc(),
	}
	env := &environment{name: name, proxy: u, dialer: ed}
	if ld, ok := d.(ListenDialer); ok {
		env.dialer = &envListenDialer{envDialer: ed, ld: ld}
	}
	return env, nil
}

// parseError reports a value of name that is not a URL, without its
// password.
func parseError(name, raw string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		inner := ue.Err
		var ee url.EscapeError
		if errors.As(inner, &ee) {
			// It quotes the escape, which may be part of a password.
			inner = errors.New("invalid URL escape")
		}
		err = inner
	}
	return &configError{env: name, url: redactText(raw), secret: passwordText(raw), err: fmt.Errorf("invalid proxy URL: %w", err)}
}

// redactText redacts a URL that does not parse: everything between the
// scheme and the last "@" is replaced by the user name and "xxxxx".
func redactText(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + 3
	}
	at := strings.LastIndex(raw[start:], "@")
	if at < 0 {
		return raw
	}
	userinfo := raw[start : start+at]
	user, _, hasPass := strings.Cut(userinfo, ":")
	if !hasPass {
		return raw
	}
	return raw[:start] + user + ":xxxxx" + raw[start+at:]
}

// passwordText is the password part of a URL that does not parse, as
// redactText finds it, or "".
func passwordText(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + 3
	}
	at := strings.LastIndex(raw[start:], "@")
	if at < 0 {
		return ""
	}
	_, pass, _ := strings.Cut(raw[start:start+at], ":")
	return pass
}

// envDialer is the dialer of an environment with a proxy.
type envDialer struct {
	name     string // the variable the proxy came from
	url      string // redacted
	proxy    dialer
	direct   dialer
	proxyFor func(*url.URL) (*url.URL, error)
}

// String returns the proxy's URL, redacted.
func (e *envDialer) String() string { return e.url }

// Format prints String for every verb.
func (e *envDialer) Format(f fmt.State, verb rune) { formatAs(f, verb, e.url) }

// Dial connects to address, through the proxy unless NO_PROXY exempts it.
func (e *envDialer) Dial(network, address string) (net.Conn, error) {
	return e.DialContext(context.Background(), network, address)
}

// DialContext connects to address, through the proxy unless NO_PROXY
// exempts it.
func (e *envDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if e.useProxy(address) {
		c, err := e.proxy.DialContext(ctx, network, address)
		return c, e.via(err)
	}
	return e.direct.DialContext(ctx, network, address)
}

// useProxy asks httpproxy whether an https request to address would go
// through the proxy. An address that does not parse goes to the proxy's
// dialer, which reports it.
func (e *envDialer) useProxy(address string) bool {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return true
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		if p, err := net.LookupPort("tcp", port); err == nil {
			port = strconv.Itoa(p)
		}
	}
	p, err := e.proxyFor(&url.URL{Scheme: "https", Host: net.JoinHostPort(host, port)})
	return err != nil || p != nil
}

// envListenDialer is an envDialer whose proxy can listen.
type envListenDialer struct {
	*envDialer
	ld ListenDialer
}

// Listen asks the proxy to listen. NO_PROXY does not apply.
func (e *envListenDialer) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	ln, err := e.ld.Listen(ctx, network, address)
	return ln, e.via(err)
}

// via says, in an error of the proxy, which variable named it.
func (e *envDialer) via(err error) error {
	var op *net.OpError
	if !errors.As(err, &op) {
		return err
	}
	if v, ok := op.Err.(*viaError); ok {
		v.env = e.name
		return err
	}
	op.Err = &viaError{env: e.name, url: e.url, err: op.Err}
	return err
}
