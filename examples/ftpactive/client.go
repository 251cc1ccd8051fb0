package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
)

// refusalGrace is how long a transfer that the server answered with 425
// ("can't open data connection") waits for the proxy to say why. When the
// proxy turned the server's connection away, its second BIND reply and the
// server's 425 travel on two connections, in no set order.
const refusalGrace = 2 * time.Second

// options configure a client.
type options struct {
	// EPRT announces IPv4 data addresses with EPRT (RFC 2428) instead of
	// PORT. IPv6 addresses always go with EPRT: PORT cannot carry them.
	EPRT bool

	// ExpectPeer is the IP address the server's data connections come
	// from: the proxy is asked to let that peer through and no other.
	// The zero value means the server's IP as the proxy reaches it; an
	// unspecified address (0.0.0.0, ::) lets any peer connect.
	ExpectPeer netip.Addr

	// Timeout bounds each reply of the server, the wait for each data
	// connection, and each read or write on one that makes no progress.
	// Zero means 30 seconds.
	Timeout time.Duration

	// Trace, when not nil, receives the control dialogue, with the
	// password masked.
	Trace io.Writer
}

// client is an FTP client (RFC 959) in active mode through a SOCKS5 proxy:
// the control connection goes through the proxy with CONNECT, and for each
// data connection the proxy listens with a one-shot BIND whose expected peer
// is the server. This is the use RFC 1928 gives for BIND.
//
// After a failed transfer the dialogue with the server may be out of step;
// close the client.
type client struct {
	proxy *socksbind.Dialer
	opts  options
	ctrl  net.Conn
	text  *textproto.Conn
	peer  netip.Addr // the expected peer of every BIND
}

// dial connects to the FTP server at address through the proxy and reads its
// greeting. ctx bounds the connection to the proxy and the CONNECT.
//
// Unless opts.ExpectPeer is set, the data connections are expected from the
// IP the proxy connected to: address's own when it is an IP, the one the
// Dialer resolved when it resolves names (a socks5:// URL). When the proxy
// resolves the name (socks5h://) that IP is unknown, and dial fails.
func dial(ctx context.Context, proxy *socksbind.Dialer, address string, opts options) (*client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	ctrl, err := proxy.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	c := &client{proxy: proxy, opts: opts, ctrl: ctrl, text: textproto.NewConn(ctrl), peer: opts.ExpectPeer}
	if !c.peer.IsValid() {
		ta, ok := ctrl.RemoteAddr().(*net.TCPAddr)
		if !ok {
			ctrl.Close()
			return nil, fmt.Errorf("the proxy resolved %s, so the address the server's data connections "+
				"come from is unknown: give the server as an IP address, or resolve its name here "+
				"(a socks5:// proxy URL), or name the expected peer", address)
		}
		c.peer = ta.AddrPort().Addr().Unmap()
	}
	if _, _, err := c.reply(2); err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return c, nil
}

// Close closes the control connection without a word to the server.
func (c *client) Close() error { return c.ctrl.Close() }

// reply reads one reply, multi-line or not (RFC 959, 4.2), within the
// timeout. A reply whose first digit is not expect (expect 0 takes any) is
// returned as a *textproto.Error along with its code.
func (c *client) reply(expect int) (code int, msg string, err error) {
	if err := c.ctrl.SetReadDeadline(time.Now().Add(c.opts.Timeout)); err != nil {
		return 0, "", err
	}
	code, msg, err = c.text.ReadResponse(expect)
	if c.opts.Trace != nil && code != 0 {
		fmt.Fprintf(c.opts.Trace, "< %d %s\n", code, strings.ReplaceAll(msg, "\n", "\n  "))
	}
	return code, msg, err
}

// cmd sends one command line and reads its reply, as reply does.
func (c *client) cmd(expect int, format string, args ...any) (code int, msg string, err error) {
	line := fmt.Sprintf(format, args...)
	if c.opts.Trace != nil {
		shown := line
		if strings.HasPrefix(shown, "PASS ") {
			shown = "PASS ****"
		}
		fmt.Fprintf(c.opts.Trace, "> %s\n", shown)
	}
	if err := c.ctrl.SetWriteDeadline(time.Now().Add(c.opts.Timeout)); err != nil {
		return 0, "", err
	}
	if err := c.text.PrintfLine("%s", line); err != nil {
		return 0, "", err
	}
	return c.reply(expect)
}

// login logs in as user, sending the password when the server asks for one,
// and switches to binary transfers (TYPE I).
func (c *client) login(user, pass string) error {
	code, msg, err := c.cmd(0, "USER %s", user)
	if err != nil {
		return err
	}
	switch code / 100 {
	case 2:
	case 3:
		if _, _, err := c.cmd(2, "PASS %s", pass); err != nil {
			return fmt.Errorf("login: %w", err)
		}
	default:
		return fmt.Errorf("login: %w", &textproto.Error{Code: code, Msg: msg})
	}
	_, _, err = c.cmd(2, "TYPE I")
	return err
}

// quit ends the session politely and closes the control connection.
func (c *client) quit() error {
	_, _, err := c.cmd(2, "QUIT")
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}

// list writes the server's listing of dir (of the current directory when dir
// is empty) to w.
func (c *client) list(dir string, w io.Writer) (int64, error) {
	command := "LIST"
	if dir != "" {
		command += " " + dir
	}
	return c.transfer(command, func(data net.Conn) (int64, error) {
		return io.Copy(w, data)
	})
}

// retrieve writes the contents of the remote file name to w.
func (c *client) retrieve(name string, w io.Writer) (int64, error) {
	return c.transfer("RETR "+name, func(data net.Conn) (int64, error) {
		return io.Copy(w, data)
	})
}

// store sends what r holds to the server as the remote file name.
func (c *client) store(name string, r io.Reader) (int64, error) {
	return c.transfer("STOR "+name, func(data net.Conn) (int64, error) {
		return io.Copy(data, r) // transfer's Close then marks the end of the file
	})
}

// transfer runs a command that moves data (LIST, RETR, STOR): the proxy
// listens for the server with a one-shot BIND, PORT or EPRT tells the server
// where to connect, and once the command is under way (a 1xx reply) and the
// server has connected, use moves the data. The transfer ends with the
// server's final reply.
func (c *client) transfer(command string, use func(net.Conn) (int64, error)) (int64, error) {
	dc, err := c.listenData()
	if err != nil {
		return 0, err
	}
	defer dc.close()

	if _, _, err := c.cmd(2, "%s", dc.announce(c.opts.EPRT)); err != nil {
		return 0, dc.why(err)
	}
	if _, _, err := c.cmd(1, "%s", command); err != nil {
		return 0, dc.why(err)
	}
	data, err := dc.wait()
	if err != nil {
		return 0, err
	}
	n, err := use(idleConn{data, c.opts.Timeout})
	// Closing the data connection ends the file for STOR, and a RETR or
	// LIST stopped early.
	if cerr := data.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("data connection: %w", err)
	}
	if _, _, err := c.reply(2); err != nil {
		return n, err
	}
	return n, nil
}

// dataConn is a data connection on its way: a one-shot BIND at the proxy and
// the Accept that waits on it, in a goroutine that dataConn owns.
type dataConn struct {
	ln   *socksbind.Listener
	peer netip.Addr
	done chan struct{} // closed when Accept has returned
	conn net.Conn      // valid once done is closed
	err  error         // valid once done is closed
}

// listenData asks the proxy to listen for a connection from the expected
// peer, which must come within the timeout.
func (c *client) listenData() (*dataConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	lc := socksbind.ListenConfig{Dialer: c.proxy, Once: true}
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(c.peer.String(), "0"))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("data connection: %w", err)
	}
	dc := &dataConn{ln: ln, peer: c.peer, done: make(chan struct{})}
	go func() {
		defer close(dc.done)
		defer cancel()
		dc.conn, dc.err = ln.AcceptContext(ctx)
		switch {
		case errors.Is(dc.err, context.DeadlineExceeded):
			dc.err = fmt.Errorf("data connection: the server did not connect to %v within %v: %w",
				ln.Addr(), c.opts.Timeout, dc.err)
			return
		case dc.err != nil:
			dc.err = fmt.Errorf("data connection (expected from %v): %w", dc.peer, dc.err)
			return
		}
		// A proxy that does not filter peers may let anyone through.
		from := addrOf(dc.conn.RemoteAddr())
		if !dc.peer.IsUnspecified() && from != dc.peer {
			dc.conn.Close()
			dc.conn, dc.err = nil, fmt.Errorf("data connection from %v, not from the server (%v)", from, dc.peer)
		}
	}()
	return dc, nil
}

// announce returns the PORT or EPRT command that tells the server the
// address the proxy listens on.
func (dc *dataConn) announce(eprt bool) string {
	return announce(netutil.AddrPort(dc.ln.Addr()), eprt)
}

// announce returns the command that announces the data address a: PORT
// h1,h2,h3,h4,p1,p2 (RFC 959), or EPRT |1|ip|port| or |2|ip6|port| (RFC
// 2428), which IPv6 needs.
func announce(a netip.AddrPort, eprt bool) string {
	ip := a.Addr().Unmap()
	if ip.Is4() && !eprt {
		b := ip.As4()
		return fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", b[0], b[1], b[2], b[3], a.Port()>>8, a.Port()&0xff)
	}
	family := 2
	if ip.Is4() {
		family = 1
	}
	return fmt.Sprintf("EPRT |%d|%s|%d|", family, ip.WithZone(""), a.Port())
}

// wait returns the data connection once the server has connected, or why it
// did not within the timeout. The caller closes the connection.
func (dc *dataConn) wait() (net.Conn, error) {
	<-dc.done
	conn := dc.conn
	dc.conn = nil
	return conn, dc.err
}

// why explains a reply that stopped a transfer. After a 425 the proxy may
// have refused the server's connection (a peer other than the one expected):
// its reply, when it comes soon, is the cause.
func (dc *dataConn) why(err error) error {
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 425 {
		return err
	}
	select {
	case <-dc.done:
		if dc.err != nil {
			return fmt.Errorf("%w (server: %w)", dc.err, err)
		}
	case <-time.After(refusalGrace):
	}
	return err
}

// close stops the BIND, waits for the Accept and closes what it returned
// unless wait handed it over.
func (dc *dataConn) close() {
	dc.ln.Close()
	<-dc.done
	if dc.conn != nil {
		dc.conn.Close()
	}
}

// idleConn bounds each Read and Write of a connection by a deadline timeout
// from its start, so that a stalled transfer fails instead of hanging.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c idleConn) Read(p []byte) (int, error) {
	if err := c.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c idleConn) Write(p []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// addrOf returns the IP of a TCP address.
func addrOf(a net.Addr) netip.Addr { return netutil.AddrPort(a).Addr() }
