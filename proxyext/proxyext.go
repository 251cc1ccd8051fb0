package proxyext

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/dialctx"
)

// ListenDialer is a dialer that can also listen, with the SOCKS5 BIND
// command. What [FromURL] and [FromEnvironment] return implements it when
// the proxy is a SOCKS5 one; find it with a type assertion:
//
//	if ld, ok := d.(proxyext.ListenDialer); ok {
//		ln, err := ld.Listen(ctx, "tcp", ":0")
//		...
//	}
//
// Listen has the meaning of [socksbind.ListenConfig.Listen], and the
// listener is a [*socksbind.Listener].
type ListenDialer interface {
	proxy.Dialer
	proxy.ContextDialer
	Listen(ctx context.Context, network, address string) (net.Listener, error)
}

var (
	_ ListenDialer        = (*socksDialer)(nil)
	_ proxy.ContextDialer = (*httpDialer)(nil)
)

// FromURL returns a dialer that reaches targets through the proxy of u,
// itself reached through forward (nil meaning a direct connection). See the
// package documentation for the schemes. For socks5 and socks5h the result
// is a [ListenDialer]; for http and https it is a [proxy.ContextDialer]
// that tunnels with HTTP CONNECT. Other schemes are handed to
// [proxy.FromURL].
//
// Errors name the URL as [Redact] prints it.
func FromURL(u *url.URL, forward proxy.Dialer) (proxy.Dialer, error) {
	if u == nil {
		return nil, errors.New("proxyext: nil proxy URL")
	}
	if err := checkURL(u); err != nil {
		return nil, err
	}
	switch strings.ToLower(u.Scheme) {
	case "socks5", "socks5h":
		return newSOCKS(u, forward)
	case "http", "https":
		return newHTTP(u, forward)
	}
	if forward == nil {
		forward = proxy.Direct
	}
	d, err := proxy.FromURL(u, forward)
	if err != nil {
		if alt, ok := socks5Instead(u); ok {
			err = unsupportedError("SOCKS4 is not supported, only SOCKS5; if the proxy speaks SOCKS5 too, as most do, use " + alt)
		}
		return nil, urlError(u, err)
	}
	return d, nil
}

// unsupportedError says what is not supported, and matches
// [errors.ErrUnsupported].
type unsupportedError string

func (e unsupportedError) Error() string { return string(e) }
func (e unsupportedError) Unwrap() error { return errors.ErrUnsupported }

// socks5Instead returns, for a socks4 or socks4a URL, the SOCKS5 URL that
// resolves names where it did (redacted): socks5 for socks4, socks5h for
// socks4a.
func socks5Instead(u *url.URL) (string, bool) {
	alt := *u
	switch strings.ToLower(u.Scheme) {
	case "socks4":
		alt.Scheme = "socks5"
	case "socks4a":
		alt.Scheme = "socks5h"
	default:
		return "", false
	}
	return Redact(&alt), true
}

// Redact returns u as text with its password, if any, replaced by "xxxxx",
// as [url.URL.Redacted] does. An opaque URL that looks like
// "user:password@host" is redacted too. It returns "" for a nil u.
func Redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	if u.Opaque != "" {
		return redactText(u.String())
	}
	return u.Redacted()
}

// socksDialer is the dialer of socks5 and socks5h URLs.
type socksDialer struct {
	d   *socksbind.Dialer
	url string              // redacted
	mux socksbind.Multiplex // the bind query parameter
}

func newSOCKS(u *url.URL, forward proxy.Dialer) (proxy.Dialer, error) {
	addr, err := hostPort(u, "1080")
	if err != nil {
		return nil, urlError(u, err)
	}
	var auth *proxy.Auth
	if u.User != nil {
		pass, hasPass := u.User.Password()
		if u.User.Username() != "" || hasPass {
			auth = &proxy.Auth{User: u.User.Username(), Password: pass}
		}
	}
	d, err := socksbind.SOCKS5("tcp", addr, auth, forward)
	if err != nil {
		return nil, urlError(u, err)
	}
	d.ResolveLocally = strings.EqualFold(u.Scheme, "socks5")
	q, _ := url.ParseQuery(u.RawQuery)
	mux, err := bindMode(q)
	if err != nil {
		return nil, urlError(u, err)
	}
	if d.Pipeline, err = pipelineMode(q); err != nil {
		return nil, urlError(u, err)
	}
	if d.UDP, err = udpMode(q); err != nil {
		return nil, urlError(u, err)
	}
	return &socksDialer{d: d, url: Redact(u), mux: mux}, nil
}

// param returns the value of the query parameter name, and whether it was
// given; a parameter given more than once is an error.
func param(q url.Values, name string) (string, bool, error) {
	v, ok := q[name]
	switch {
	case !ok:
		return "", false, nil
	case len(v) > 1:
		return "", false, fmt.Errorf("%s given more than once", name)
	}
	return v[0], true, nil
}

// pipelineMode reads the pipeline query parameter of a SOCKS5 URL:
// pipeline=1 sets [socksbind.Dialer.Pipeline], pipeline=0 or no pipeline
// leaves it off.
func pipelineMode(q url.Values) (bool, error) {
	v, ok, err := param(q, "pipeline")
	switch {
	case err != nil:
		return false, err
	case !ok || v == "0":
		return false, nil
	case v == "1":
		return true, nil
	}
	return false, fmt.Errorf("invalid pipeline=%s: want pipeline=1 or pipeline=0", url.QueryEscape(v))
}

// bindMode reads the bind query parameter of a SOCKS5 URL, in the words
// of [socksbind.Multiplex.UnmarshalText]: absent or "off" for standard
// BIND, "on" (or "mux") for GOST's multiplexed BIND, "auto" for whichever
// the proxy has. Other query parameters are ignored, as they always were.
func bindMode(q url.Values) (socksbind.Multiplex, error) {
	v, ok, err := param(q, "bind")
	if err != nil || !ok {
		return socksbind.MultiplexOff, err
	}
	var m socksbind.Multiplex
	if err := m.UnmarshalText([]byte(v)); err != nil {
		return 0, fmt.Errorf("invalid bind=%s: want bind=on (or bind=mux), bind=auto, or bind=off (the default) for standard BIND", url.QueryEscape(v))
	}
	return m, nil
}

// Dial connects to address through the proxy.
func (s *socksDialer) Dial(network, address string) (net.Conn, error) {
	return s.DialContext(context.Background(), network, address)
}

// DialContext connects to address through the proxy; see
// [socksbind.Dialer.DialContext].
func (s *socksDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := s.d.DialContext(ctx, network, address)
	return c, via(s.url, err)
}

// Listen asks the proxy to listen; see [socksbind.ListenConfig.Listen]. The
// URL's bind parameter selects the command.
func (s *socksDialer) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	lc := s.listenConfig()
	l, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, via(s.url, err)
	}
	return l, nil
}

func (s *socksDialer) listenConfig() socksbind.ListenConfig {
	return socksbind.ListenConfig{Dialer: s.d, Multiplex: s.mux}
}

// String returns the proxy's URL, redacted.
func (s *socksDialer) String() string { return s.url }

// Format prints String for every verb.
func (s *socksDialer) Format(f fmt.State, verb rune) { formatAs(f, verb, s.url) }

// via says, in the Err of an *net.OpError from a proxy, which proxy URL
// (redacted) it came from.
func via(url string, err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		op.Err = &viaError{url: url, err: op.Err}
	}
	return err
}

// viaError is an error of the proxy of a URL, which may have come from an
// environment variable.
type viaError struct {
	env, url string // url is redacted; env is "" when not from the environment
	err      error
}

func (e *viaError) Error() string {
	if e.env != "" {
		return "via " + e.env + "=" + e.url + ": " + e.err.Error()
	}
	return "via " + e.url + ": " + e.err.Error()
}

func (e *viaError) Unwrap() error { return e.err }

// Timeout and Temporary pass those of the cause on, for
// [net.OpError.Timeout], which asks its Err directly.
func (e *viaError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}

func (e *viaError) Temporary() bool {
	var t interface{ Temporary() bool }
	return errors.As(e.err, &t) && t.Temporary()
}

// formatAs prints text for verb: quoted for %q, as it is for any other.
// The dialers and errors of this package hold credentials, so none lets
// the fmt package print its fields.
func formatAs(f fmt.State, verb rune, text string) {
	if verb == 'q' {
		text = strconv.Quote(text)
	}
	io.WriteString(f, text)
}

// checkURL rejects a proxy URL that was not read as its writer meant:
//
//   - an "@" outside the userinfo. A password holding an unescaped "/",
//     "?" or "#" ends the authority early, so that
//     "socks5h://user:4711/pw@host" parses as host "user", port 4711 and a
//     path. Such a URL names the wrong host (one that would be looked up
//     in DNS) and prints the password wherever the URL is printed.
//   - a host with more than one ":" outside brackets: an IPv6 address
//     without brackets, whose last group would be read as the port.
//   - brackets around something other than an IPv6 address.
//
// The error names the URL with everything before the last "@" but the user
// name replaced (see redactText), since the password's extent is unknown.
func checkURL(u *url.URL) error {
	for _, part := range []string{u.Opaque, u.Path, u.RawPath, u.RawQuery, u.Fragment, u.RawFragment} {
		if strings.Contains(part, "@") {
			return &configError{url: redactText(u.String()), err: errAtOutsideUserinfo}
		}
	}
	if err := checkHost(u.Host); err != nil {
		return urlError(u, err)
	}
	return nil
}

// checkText is checkURL for the text of a URL, before it is parsed: the
// parser's own errors would quote a misread password ("invalid port
// \":pw\" after host").
func checkText(raw string) error {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if strings.Contains(rest[end:], "@") {
		return errAtOutsideUserinfo
	}
	authority := rest[:end]
	return checkHost(authority[strings.LastIndex(authority, "@")+1:])
}

var errAtOutsideUserinfo = errors.New(`"@" after the host: percent-encode "/", "?", "#" and "@" in the user name and password (%2F, %3F, %23, %40)`)

// checkHost checks the host[:port] of a URL's authority.
func checkHost(hostport string) error {
	if host, ok := strings.CutPrefix(hostport, "["); ok {
		host, _, closed := strings.Cut(host, "]")
		if !closed {
			return nil // the URL parser says so
		}
		host, _, _ = strings.Cut(host, "%") // a zone
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() {
			return errors.New("brackets around something other than an IPv6 address")
		}
		return nil
	}
	if strings.Count(hostport, ":") > 1 {
		return errors.New("IPv6 address without brackets: write it as [2001:db8::1] or [2001:db8::1]:1080")
	}
	return nil
}

// hostPort returns the host and port of u, with def as the port when u has
// none.
func hostPort(u *url.URL, def string) (string, error) {
	host := u.Hostname()
	if host == "" {
		return "", errors.New("missing host")
	}
	if strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("invalid host %q", host)
		}
	}
	port := u.Port()
	if port == "" {
		port = def
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("invalid port %q", port)
	}
	return net.JoinHostPort(host, port), nil
}

// urlError reports err about the proxy URL u, without its password.
func urlError(u *url.URL, err error) error {
	return &configError{url: Redact(u), secret: password(u), err: err}
}

func password(u *url.URL) string {
	if u == nil {
		return ""
	}
	if u.Opaque != "" {
		return passwordText(u.String())
	}
	if u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

// configError is an error about a proxy URL. Its message names the URL
// redacted, and hides the password should err quote it.
type configError struct {
	env    string // the variable the URL came from, or ""
	url    string // redacted
	secret string
	err    error
}

func (e *configError) Error() string {
	s := "proxyext: "
	if e.env != "" {
		s += e.env + "="
	}
	msg := e.err.Error()
	if e.secret != "" {
		msg = strings.ReplaceAll(msg, e.secret, "xxxxx")
	}
	return s + e.url + ": " + msg
}

func (e *configError) Unwrap() error { return e.err }

// Format prints Error for every verb: the fields hold the password.
func (e *configError) Format(f fmt.State, verb rune) { formatAs(f, verb, e.Error()) }

// contextDialer gives a plain proxy.Dialer a DialContext.
type contextDialer struct{ d proxy.Dialer }

func (c contextDialer) Dial(network, address string) (net.Conn, error) {
	return c.d.Dial(network, address)
}

func (c contextDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return dialctx.Dial(ctx, c.d, network, address)
}

// dialer is a proxy.Dialer that has DialContext.
type dialer interface {
	proxy.Dialer
	proxy.ContextDialer
}

// asContextDialer returns d with a DialContext, proxy.Direct for nil.
func asContextDialer(d proxy.Dialer) dialer {
	switch d := d.(type) {
	case nil:
		return proxy.Direct
	case dialer:
		return d
	}
	return contextDialer{d}
}

// ListenConfig returns the listen settings of the URL behind a dialer that
// [FromURL] or [FromEnvironment] returned for a socks5 or socks5h proxy:
// the [socksbind.Dialer] (see [SOCKS5Dialer]), which carries the URL's
// credentials and pipeline parameter, and the Multiplex its bind parameter
// selects. The caller may set the other fields, such as the hooks, before
// it calls Listen; the listener's errors then do not name the URL, as
// those of the dialer's own Listen do. ListenConfig reports false for any
// other dialer: that of an http or https proxy, or the direct one that
// FromEnvironment returns when ALL_PROXY is unset.
func ListenConfig(d proxy.Dialer) (socksbind.ListenConfig, bool) {
	switch v := d.(type) {
	case *socksDialer:
		return v.listenConfig(), true
	case *envListenDialer:
		return ListenConfig(v.ld)
	}
	return socksbind.ListenConfig{}, false
}

// SOCKS5Dialer returns the [socksbind.Dialer] behind a dialer that FromURL
// or FromEnvironment returned for a socks5 or socks5h proxy, so that a
// caller can use its options, such as [socksbind.ListenConfig]. It reports
// false for any other dialer.
func SOCKS5Dialer(d proxy.Dialer) (*socksbind.Dialer, bool) {
	switch v := d.(type) {
	case *socksDialer:
		return v.d, true
	case *envListenDialer:
		return SOCKS5Dialer(v.ld)
	}
	return nil, false
}
