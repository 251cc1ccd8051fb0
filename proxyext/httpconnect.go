package proxyext

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/deadlines"
	"github.com/socksbind/socksbind/internal/dialctx"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/wire"
)

// httpDialer tunnels through an HTTP proxy with the CONNECT method.
type httpDialer struct {
	url     string      // redacted
	addr    string      // the proxy's host:port
	tls     *tls.Config // nil for a plain http proxy
	auth    string      // the Proxy-Authorization value, or ""
	forward proxy.Dialer
	timeout time.Duration // the handshake's own bound; see deadlines.Bound
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
	d := &httpDialer{url: Redact(u), addr: addr, forward: forward, timeout: socksbind.DefaultHandshakeTimeout}
	if secure {
		d.tls = &tls.Config{ServerName: u.Hostname()}
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		d.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass))
	}
	return d, nil
}

// String returns the proxy's URL, redacted.
func (d *httpDialer) String() string { return d.url }

// Format prints String for every verb, so that no verb of the fmt package
// shows the credentials of the Proxy-Authorization header.
func (d *httpDialer) Format(f fmt.State, verb rune) { formatAs(f, verb, d.url) }

// Dial connects to address through the proxy. See [httpDialer.DialContext].
func (d *httpDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext reaches the proxy through the forward dialer, sets up TLS for
// an https proxy, and asks the proxy for a tunnel to address with CONNECT.
// ctx bounds all of it, and so does [socksbind.DefaultHandshakeTimeout]
// when ctx has no earlier deadline; no deadline is left on the connection.
//
// Errors are *net.OpError with Op "proxy connect", Source the proxy and Addr
// the target. A refusal by the proxy carries its status; 407 matches
// socksbind.ErrAuthRejected and 403 socksbind.ErrNotAllowed. A response
// cut short or malformed names the stage "HTTP CONNECT response".
func (d *httpDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "proxy connect", Net: network, Source: netutil.TextAddr(d.addr), Addr: netutil.TextAddr(address), Err: &viaError{url: d.url, err: err}}
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, opErr(net.UnknownNetworkError(network))
	}
	if err := checkTarget(address); err != nil {
		return nil, opErr(err)
	}
	deadline, own := deadlines.Bound(ctx, d.timeout)
	// expired turns the expiry of the hop's own bound into a TimeoutError.
	expired := func(err error) error {
		if own && ctx.Err() == nil && (netutil.IsTimeout(err) || errors.Is(err, context.DeadlineExceeded)) {
			return &deadlines.TimeoutError{Limit: d.timeout}
		}
		return err
	}
	dctx := ctx
	if own {
		var cancel context.CancelFunc
		dctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	raw, err := dialctx.Dial(dctx, d.forward, "tcp", d.addr)
	if err != nil {
		return nil, opErr(expired(err))
	}
	c, err := d.handshake(ctx, raw, deadline, address)
	if err != nil {
		raw.Close()
		return nil, opErr(expired(err))
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

// handshake runs TLS and CONNECT on raw under ctx and deadline (ctx's, or
// an earlier one); see [deadlines.Watch].
func (d *httpDialer) handshake(ctx context.Context, raw net.Conn, deadline time.Time, address string) (net.Conn, error) {
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
			// A certificate's names are the proxy's text.
			return nil, escapedError{err}
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
	code, reason, err := readResponse(br)
	if err != nil {
		return nil, wire.AtStage(wire.StageHTTPConnect, err)
	}
	if code/100 != 2 {
		return nil, &statusError{code: code, reason: reason}
	}
	// The response's body, if the proxy declared one, is ignored, as RFC
	// 9110 section 9.3.6 asks of a 2xx answer to CONNECT: from here on the
	// connection is the tunnel. Bytes of the tunnel that came with the
	// response head are handed over.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		return &bufferedConn{Conn: c, buf: append([]byte(nil), b...)}, nil
	}
	return c, nil
}

// maxResponseHead bounds the head (status line and header fields) of the
// proxy's answer to CONNECT: 64 KiB, the default of Squid's own
// reply_header_max_size. An answer to CONNECT is a status line and a few
// fields; the largest a real proxy sends is a 407 whose Proxy-Authenticate
// carries a Negotiate token (Kerberos tokens reach 48 KB), which fits. Go's
// http.Transport allows 10 MiB (MaxResponseHeaderBytes), far too much to
// buffer on a proxy's say for a one-line answer; nginx reads headers in 4
// to 8 KiB buffers, too little for that 407. At most the head and one
// bufio buffer are held.
const maxResponseHead = 64 << 10

// readResponse reads the head of the proxy's answer to CONNECT, up to the
// empty line that ends it and not a byte of the tunnel further, and returns
// its status code and reason phrase. Header fields are read and dropped:
// a 2xx answer to CONNECT has no body to frame, and the body of a failure
// is never read. A line may end in CRLF or a bare LF.
func readResponse(br *bufio.Reader) (code int, reason string, err error) {
	var status []byte
	budget := maxResponseHead
	for lines, lineLen := 0, 0; ; {
		chunk, err := br.ReadSlice('\n')
		if budget -= len(chunk); budget < 0 {
			return 0, "", errHeadTooLarge
		}
		if lines == 0 {
			status = append(status, chunk...)
		}
		lineLen += len(chunk)
		switch {
		case err == bufio.ErrBufferFull:
			continue // the rest of a long line
		case err == io.EOF:
			return 0, "", io.ErrUnexpectedEOF
		case err != nil:
			return 0, "", err
		}
		if lines > 0 && lineLen == len(chunk) && (string(chunk) == "\r\n" || string(chunk) == "\n") {
			return parseStatus(string(status))
		}
		lines, lineLen = lines+1, 0
	}
}

// parseStatus reads "HTTP/1.x SP 3DIGIT [SP reason-phrase]" and its end.
func parseStatus(line string) (int, string, error) {
	trimmed := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	proto, rest, _ := strings.Cut(trimmed, " ")
	digits, reason, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(digits)
	if (proto != "HTTP/1.0" && proto != "HTTP/1.1") || len(digits) != 3 || err != nil || code < 100 {
		return 0, "", fmt.Errorf("%w: status line %s", wire.ErrMalformed, wire.Quote(trimmed))
	}
	return code, reason, nil
}

// errHeadTooLarge reports a response head longer than maxResponseHead.
var errHeadTooLarge error = headTooLargeError{}

type headTooLargeError struct{}

func (headTooLargeError) Error() string {
	return "response head longer than the limit of " + strconv.Itoa(maxResponseHead>>10) + " KiB"
}

// Is makes it match wire.ErrMalformed, socksbind.ErrProtocolViolation: it
// is not an answer the client can use.
func (headTooLargeError) Is(target error) bool { return target == wire.ErrMalformed }

// statusError is a CONNECT the proxy answered with a status other than 2xx.
// The reason phrase is the proxy's text, so it is quoted.
type statusError struct {
	code   int
	reason string
}

func (e *statusError) Error() string {
	s := strconv.Itoa(e.code)
	if e.reason != "" {
		s += " " + wire.Quote(e.reason)
	}
	if e.code == http.StatusProxyAuthRequired {
		return "proxy authentication required: " + s
	}
	return "proxy refused the tunnel: " + s
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

// escapedError is an error whose text may quote the proxy, shown with
// wire.Escape. It unwraps to the error itself.
type escapedError struct{ err error }

func (e escapedError) Error() string { return wire.Escape(e.err.Error()) }
func (e escapedError) Unwrap() error { return e.err }

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
	return netutil.CloseWrite(c.Conn, c.LocalAddr(), c.RemoteAddr())
}
