package proxyext

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/dialctx"
)

// testRootCAs, when set by a test before any dial, replaces the system's
// roots in the verification of an https proxy's certificate.
var testRootCAs *x509.CertPool

// httpDialer tunnels through an HTTP proxy with the CONNECT method.
type httpDialer struct {
	url     string      // redacted
	addr    string      // the proxy's host:port
	tls     *tls.Config // nil for a plain http proxy
	auth    string      // the Proxy-Authorization value, or ""
	forward proxy.Dialer
}

func newHTTP(u *url.URL, forward proxy.Dialer) (proxy.Dialer, error) {
	secure := strings.EqualFold(u.Scheme, "https")
	def := "80"
	if secure {
		def = "443"
	}
	addr, err := hostPort(u, def)
	if err != nil {
		return nil, urlError(u, err)
	}
	d := &httpDialer{url: Redact(u), addr: addr, forward: forward}
	if secure {
		d.tls = &tls.Config{ServerName: u.Hostname(), RootCAs: testRootCAs}
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		d.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass))
	}
	return d, nil
}

// String returns the proxy's URL, redacted.
func (d *httpDialer) String() string { return d.url }

// Dial connects to address through the proxy. See [httpDialer.DialContext].
func (d *httpDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext reaches the proxy through the forward dialer, sets up TLS for
// an https proxy, and asks the proxy for a tunnel to address with CONNECT.
// ctx bounds all of it; no deadline is left on the connection.
//
// Errors are *net.OpError with Op "proxy connect", Source the proxy and Addr
// the target. A refusal by the proxy carries its status; 407 matches
// socksbind.ErrAuthRejected and 403 socksbind.ErrNotAllowed.
func (d *httpDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "proxy connect", Net: network, Source: textAddr(d.addr), Addr: textAddr(address), Err: err}
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, opErr(net.UnknownNetworkError(network))
	}
	if err := checkTarget(address); err != nil {
		return nil, opErr(err)
	}
	raw, err := dialctx.Dial(ctx, d.forward, "tcp", d.addr)
	if err != nil {
		return nil, opErr(err)
	}
	c, err := d.handshake(ctx, raw, address)
	if err != nil {
		raw.Close()
		return nil, opErr(err)
	}
	return c, nil
}

// checkTarget accepts a host:port that can go in a request line as is.
func checkTarget(address string) error {
	if _, _, err := net.SplitHostPort(address); err != nil {
		return err
	}
	for i := 0; i < len(address); i++ {
		if b := address[i]; b <= ' ' || b == 0x7f {
			return fmt.Errorf("invalid character %q in address", b)
		}
	}
	return nil
}

// handshake runs TLS and CONNECT on raw under ctx; see [deadlines.Watch].
func (d *httpDialer) handshake(ctx context.Context, raw net.Conn, address string) (net.Conn, error) {
	deadline, _ := ctx.Deadline()
	w := deadlines.Start(ctx, raw, deadline)
	c, err := d.connect(raw, address)
	if err = w.Done(err); err != nil {
		return nil, err
	}
	return c, nil
}

func (d *httpDialer) connect(raw net.Conn, address string) (net.Conn, error) {
	c := raw
	if d.tls != nil {
		tc := tls.Client(raw, d.tls)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	req := "CONNECT " + address + " HTTP/1.1\r\nHost: " + address + "\r\n"
	if d.auth != "" {
		req += "Proxy-Authorization: " + d.auth + "\r\n"
	}
	req += "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("reading the proxy's response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, &statusError{code: resp.StatusCode, status: resp.Status}
	}
	// The response's body, if the proxy declared one, is ignored: from
	// here on the connection is the tunnel. Bytes of the tunnel that
	// came with the response header are handed over.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		return &bufferedConn{Conn: c, buf: append([]byte(nil), b...)}, nil
	}
	return c, nil
}

// statusError is a CONNECT the proxy answered with a status other than 2xx.
type statusError struct {
	code   int
	status string
}

func (e *statusError) Error() string {
	if e.code == http.StatusProxyAuthRequired {
		return "proxy authentication required: " + e.status
	}
	return "proxy refused the tunnel: " + e.status
}

func (e *statusError) Unwrap() error {
	switch e.code {
	case http.StatusProxyAuthRequired:
		return socksbind.ErrAuthRejected
	case http.StatusForbidden:
		return socksbind.ErrNotAllowed
	}
	return nil
}

// bufferedConn is a connection with bytes already read from it in front.
type bufferedConn struct {
	net.Conn
	buf []byte
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the connection under the buffer.
func (c *bufferedConn) NetConn() net.Conn { return c.Conn }

// CloseWrite shuts down the writing side, when the connection can.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.ErrUnsupported}
}
