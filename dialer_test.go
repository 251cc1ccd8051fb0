package socksbind_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/nettest"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

func TestDialConnect(t *testing.T) {
	targets := []struct {
		name    string
		network string
		host    string
		sent    func(socksbind.Addr) bool // what the request carried
	}{
		{"ipv4", "tcp4", "127.0.0.1", func(a socksbind.Addr) bool { return a.IP.Is4() }},
		{"ipv6", "tcp6", "::1", func(a socksbind.Addr) bool { return a.IP.Is6() }},
		{"domain", "tcp4", "localhost", func(a socksbind.Addr) bool { return a.Name == "localhost" }},
	}
	auths := []struct {
		name string
		auth *proxy.Auth
	}{
		{"no auth", nil},
		{"username/password", &proxy.Auth{User: "alice", Password: "secret"}},
		{"empty password", &proxy.Auth{User: "bob"}},
	}
	for _, a := range auths {
		for _, tt := range targets {
			t.Run(a.name+"/"+tt.name, func(t *testing.T) {
				srv := newProxy(t, func(s *socks5test.Server) {
					if a.auth != nil {
						s.Users = map[string]string{a.auth.User: a.auth.Password}
					}
				})
				echo := testkit.Echo(t, tt.network)
				d, err := socksbind.SOCKS5("tcp", srv.Addr(), a.auth, nil)
				require.NoError(t, err)

				target := net.JoinHostPort(tt.host, itoa(portOf(echo.Addr())))
				c, err := d.Dial("tcp", target)
				require.NoError(t, err)
				defer c.Close()

				_, err = c.Write([]byte("hello"))
				require.NoError(t, err)
				buf := make([]byte, 5)
				_, err = io.ReadFull(c, buf)
				require.NoError(t, err)
				assert.Equal(t, "hello", string(buf))

				assert.Equal(t, target, c.RemoteAddr().String())
				// The proxy reports the local end of its outbound
				// connection, which is on loopback.
				local, ok := c.LocalAddr().(*net.TCPAddr)
				require.True(t, ok, "LocalAddr is %T", c.LocalAddr())
				assert.True(t, local.IP.IsLoopback(), "LocalAddr %v", local)

				reqs := srv.Requests()
				require.Len(t, reqs, 1)
				assert.Equal(t, socksbind.CmdConnect, reqs[0].Command)
				assert.True(t, tt.sent(reqs[0].Dst), "sent %v", reqs[0].Dst)
				if a.auth != nil {
					assert.Equal(t, a.auth.User, reqs[0].User)
				}
			})
		}
	}
}

func TestDialResolveLocally(t *testing.T) {
	srv := newProxy(t, nil)
	echo := testkit.Echo(t, "tcp4")
	d := newDialer(t, srv)
	d.ResolveLocally = true
	c, err := d.Dial("tcp4", "localhost:"+itoa(portOf(echo.Addr())))
	require.NoError(t, err)
	c.Close()
	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	assert.True(t, reqs[0].Dst.IP.Is4(), "the name went to the proxy: %v", reqs[0].Dst)
	assert.Equal(t, "127.0.0.1", reqs[0].Dst.Host())
}

// TestReplyCodes checks every reply code against its sentinel and errno,
// through a real refusal by the proxy.
func TestReplyCodes(t *testing.T) {
	tests := []struct {
		rep      socksbind.Reply
		sentinel error
		errno    syscall.Errno
	}{
		{socksbind.ReplyGeneralFailure, socksbind.ErrGeneralFailure, 0},
		{socksbind.ReplyNotAllowed, socksbind.ErrNotAllowed, syscall.EACCES},
		{socksbind.ReplyNetworkUnreachable, socksbind.ErrNetworkUnreachable, syscall.ENETUNREACH},
		{socksbind.ReplyHostUnreachable, socksbind.ErrHostUnreachable, syscall.EHOSTUNREACH},
		{socksbind.ReplyConnectionRefused, socksbind.ErrConnectionRefused, syscall.ECONNREFUSED},
		{socksbind.ReplyTTLExpired, socksbind.ErrTTLExpired, syscall.ETIMEDOUT},
		{socksbind.ReplyCommandNotSupported, socksbind.ErrCommandNotSupported, syscall.EOPNOTSUPP},
		{socksbind.ReplyAddressTypeNotSupported, socksbind.ErrAddressNotSupported, syscall.EAFNOSUPPORT},
		{0x09, socksbind.ErrGeneralFailure, 0},
	}
	all := []error{socksbind.ErrGeneralFailure, socksbind.ErrNotAllowed, socksbind.ErrNetworkUnreachable,
		socksbind.ErrHostUnreachable, socksbind.ErrConnectionRefused, socksbind.ErrTTLExpired,
		socksbind.ErrCommandNotSupported, socksbind.ErrAddressNotSupported, socksbind.ErrAddressInUse, socksbind.ErrNoProxy}
	for _, tt := range tests {
		t.Run(tt.rep.String(), func(t *testing.T) {
			srv := newProxy(t, func(s *socks5test.Server) {
				s.Rules = []socks5test.Rule{socks5test.RefusePort(4242, tt.rep)}
			})
			_, err := newDialer(t, srv).Dial("tcp", "127.0.0.1:4242")
			require.Error(t, err)

			var op *net.OpError
			require.ErrorAs(t, err, &op)
			assert.Equal(t, "socks connect", op.Op)
			assert.Equal(t, "tcp", op.Net)
			assert.Equal(t, srv.Addr(), op.Source.String())
			assert.Equal(t, "127.0.0.1:4242", op.Addr.String())

			var re *socksbind.ReplyError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, tt.rep, re.Reply)
			assert.Equal(t, socksbind.CmdConnect, re.Command)
			assert.Contains(t, err.Error(), tt.rep.String())

			for _, s := range all {
				assert.Equal(t, s == tt.sentinel, errors.Is(err, s), "errors.Is(err, %q)", s)
			}
			if tt.errno != 0 {
				assert.ErrorIs(t, err, tt.errno)
			}
			assert.NotErrorIs(t, err, syscall.EADDRINUSE)
		})
	}
	t.Run("connection refused by the target", func(t *testing.T) {
		// A real refusal: the proxy dials a port where nothing listens.
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		ln.Close()
		srv := newProxy(t, nil)
		_, err = newDialer(t, srv).Dial("tcp", addr)
		assert.ErrorIs(t, err, socksbind.ErrConnectionRefused)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	})
}

func TestDialAuthFailures(t *testing.T) {
	t.Run("bad password", func(t *testing.T) {
		srv := newProxy(t, func(s *socks5test.Server) { s.Users = map[string]string{"alice": "secret"} })
		d, err := socksbind.SOCKS5("tcp", srv.Addr(), &proxy.Auth{User: "alice", Password: "wrong"}, nil)
		require.NoError(t, err)
		_, err = d.Dial("tcp", "127.0.0.1:1")
		assert.ErrorIs(t, err, socksbind.ErrAuthRejected)
		assert.NotContains(t, err.Error(), "wrong")
		assert.Empty(t, srv.Requests())
	})
	t.Run("no acceptable method", func(t *testing.T) {
		srv := newProxy(t, func(s *socks5test.Server) { s.Users = map[string]string{"alice": "secret"} })
		_, err := newDialer(t, srv).Dial("tcp", "127.0.0.1:1")
		assert.ErrorIs(t, err, socksbind.ErrNoAcceptableAuth)
	})
	t.Run("invalid credentials are refused before anything is sent", func(t *testing.T) {
		for _, auth := range []proxy.Auth{{User: ""}, {User: strings.Repeat("u", 256)}, {User: "u", Password: strings.Repeat("p", 256)}} {
			_, err := socksbind.SOCKS5("tcp", "127.0.0.1:1", &auth, nil)
			assert.Error(t, err)
		}
		// A Dialer built by hand is checked at dial time, before the
		// proxy is reached.
		var greeted atomic.Int32
		srv := newProxy(t, func(s *socks5test.Server) {
			s.Hooks.Fault = func(socks5test.Stage, net.Conn, *socks5test.Request) bool { greeted.Add(1); return false }
		})
		d := newDialer(t, srv)
		d.Auth = []socksbind.Authenticator{&socksbind.UsernamePassword{Username: "u", Password: strings.Repeat("p", 256)}}
		_, err := d.Dial("tcp", "127.0.0.1:1")
		assert.ErrorContains(t, err, "password must be at most 255 bytes")
		assert.NotContains(t, err.Error(), "ppp")
		assert.Zero(t, greeted.Load(), "the proxy was greeted")
	})
	t.Run("name too long", func(t *testing.T) {
		srv := newProxy(t, nil)
		_, err := newDialer(t, srv).Dial("tcp", strings.Repeat("a", 256)+":80")
		assert.ErrorContains(t, err, "longer than 255")
		assert.Empty(t, srv.Requests())
	})
}

// TestMalformedReplies feeds the client every kind of bad answer; each must
// end in a clear error, promptly, leaving nothing behind.
func TestMalformedReplies(t *testing.T) {
	tests := []struct {
		name  string
		stage socks5test.Stage
		write []byte
		want  error
	}{
		{"greeting: wrong version", socks5test.StageGreeting, []byte{4, 0}, socksbind.ErrProtocolViolation},
		{"greeting: method not offered", socks5test.StageGreeting, []byte{5, 2}, socksbind.ErrProtocolViolation},
		{"greeting: close", socks5test.StageGreeting, nil, io.ErrUnexpectedEOF},
		{"greeting: half an answer", socks5test.StageGreeting, []byte{5}, io.ErrUnexpectedEOF},
		{"request: close", socks5test.StageRequest, nil, io.ErrUnexpectedEOF},
		{"request: wrong version", socks5test.StageRequest, []byte{4, 0, 0, 1, 0, 0, 0, 0, 0, 0}, socksbind.ErrProtocolViolation},
		{"request: bad address type", socks5test.StageRequest, []byte{5, 0, 0, 7, 0, 0, 0, 0, 0, 0}, socksbind.ErrProtocolViolation},
		{"request: cut short", socks5test.StageRequest, []byte{5, 0, 0, 4, 0, 0}, io.ErrUnexpectedEOF},
		{"request: http answer", socks5test.StageRequest, []byte("HTTP/1.0 400 Bad Request\r\n\r\n"), socksbind.ErrProtocolViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newProxy(t, func(s *socks5test.Server) {
				s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
					if stage != tt.stage {
						return false
					}
					if tt.write != nil {
						c.Write(tt.write)
					}
					return true
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := newDialer(t, srv).DialContext(ctx, "tcp", "127.0.0.1:1")
			assert.ErrorIs(t, err, tt.want)
			var op *net.OpError
			assert.ErrorAs(t, err, &op)
		})
	}
}

// stall makes the server read the request and never answer.
func stall(stage socks5test.Stage) func(*socks5test.Server) {
	return func(s *socks5test.Server) {
		s.Hooks.Fault = func(st socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
			if st != stage {
				return false
			}
			io.Copy(io.Discard, c) // until the client or the server closes
			return true
		}
	}
}

func TestDialCancel(t *testing.T) {
	for _, stage := range []socks5test.Stage{socks5test.StageGreeting, socks5test.StageRequest} {
		t.Run("cancel at "+stage.String(), func(t *testing.T) {
			srv := newProxy(t, stall(stage))
			ctx, cancel := context.WithCancel(context.Background())
			var cancelled time.Time
			time.AfterFunc(20*time.Millisecond, func() { cancelled = time.Now(); cancel() })
			_, err := newDialer(t, srv).DialContext(ctx, "tcp", "127.0.0.1:1")
			late := time.Since(cancelled)
			assert.ErrorIs(t, err, context.Canceled)
			assert.Less(t, late, 100*time.Millisecond, "returned %v after the cancel", late)
		})
		t.Run("deadline at "+stage.String(), func(t *testing.T) {
			srv := newProxy(t, stall(stage))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err := newDialer(t, srv).DialContext(ctx, "tcp", "127.0.0.1:1")
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			assert.True(t, ne.Timeout())
		})
	}
}

// blockingDialer is a proxy.Dialer without DialContext that blocks until
// released.
type blockingDialer struct {
	release chan struct{}
	dialed  chan net.Conn
}

func (b *blockingDialer) Dial(network, addr string) (net.Conn, error) {
	<-b.release
	c, err := net.Dial(network, addr)
	if err == nil {
		b.dialed <- c
	}
	return c, err
}

func TestDialCancelForwardWithoutContext(t *testing.T) {
	srv := newProxy(t, nil)
	fwd := &blockingDialer{release: make(chan struct{}), dialed: make(chan net.Conn, 1)}
	d, err := socksbind.SOCKS5("tcp", srv.Addr(), nil, fwd)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	_, err = d.DialContext(ctx, "tcp", "127.0.0.1:1")
	assert.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), time.Second)

	// The forward dial completes after the caller gave up: its connection
	// must be closed, not leaked.
	close(fwd.release)
	c := <-fwd.dialed
	require.Eventually(t, func() bool {
		_, err := c.Write([]byte{5, 1, 0})
		return errors.Is(err, net.ErrClosed)
	}, 5*time.Second, 5*time.Millisecond)
}

func TestDialDeadlinesCleared(t *testing.T) {
	srv := newProxy(t, nil)
	echo := testkit.Echo(t, "tcp4")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c, err := newDialer(t, srv).DialContext(ctx, "tcp", echo.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	<-ctx.Done() // past the context's deadline
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	require.NoError(t, err, "a deadline of the handshake was left on the connection")
}

func TestConnFastPaths(t *testing.T) {
	srv := newProxy(t, nil)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := testkit.AcceptAsync(ln)
	c, err := newDialer(t, srv).Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	peer := (<-accepted).Conn
	require.NotNil(t, peer)
	defer peer.Close()

	sc, ok := c.(*socksbind.Conn)
	require.True(t, ok)
	var _ io.ReaderFrom = sc
	var _ io.WriterTo = sc
	_, isTCP := sc.NetConn().(*net.TCPConn)
	assert.True(t, isTCP)

	// ReadFrom through the proxy, then CloseWrite: the peer sees all of
	// it and EOF, and can still answer.
	n, err := sc.ReadFrom(strings.NewReader(strings.Repeat("x", 100000)))
	require.NoError(t, err)
	assert.EqualValues(t, 100000, n)
	require.NoError(t, sc.CloseWrite())
	got, err := io.ReadAll(peer)
	require.NoError(t, err)
	assert.Len(t, got, 100000)
	go func() { peer.Write([]byte("bye")); peer.Close() }()
	var sb strings.Builder
	n, err = sc.WriteTo(&sb)
	require.NoError(t, err)
	assert.EqualValues(t, 3, n)
	assert.Equal(t, "bye", sb.String())
}

func TestNettestConn(t *testing.T) {
	srv := newProxy(t, nil)
	d := newDialer(t, srv)
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, nil, nil, err
		}
		defer ln.Close()
		accepted := testkit.AcceptAsync(ln)
		c1, err = d.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, nil, nil, err
		}
		c2 = (<-accepted).Conn
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

func TestDialBadArguments(t *testing.T) {
	d := &socksbind.Dialer{ProxyAddress: "127.0.0.1:1"}
	for _, tt := range []struct{ network, addr string }{
		{"ip", "127.0.0.1:1"},
		{"tcp", "127.0.0.1"},
		{"tcp", "127.0.0.1:99999"},
		{"tcp", ":80"},
		{"tcp4", "[::1]:80"},
		{"tcp6", "127.0.0.1:80"},
	} {
		_, err := d.Dial(tt.network, tt.addr)
		var op *net.OpError
		assert.ErrorAs(t, err, &op, "%s %s", tt.network, tt.addr)
	}
}

// misuse calls f, which must return an error and not panic, and returns
// that error.
func misuse[C interface {
	comparable
	io.Closer
}](t *testing.T, f func() (C, error)) error {
	t.Helper()
	var c, none C
	var err error
	require.NotPanics(t, func() { c, err = f() })
	if c != none {
		c.Close()
	}
	require.Error(t, err)
	var op *net.OpError
	assert.ErrorAs(t, err, &op)
	return err
}

// A nil *Dialer is no proxy: its methods fail with an error matching
// ErrNoProxy, and a nil context is an error, not a panic.
func TestNilDialer(t *testing.T) {
	var d *socksbind.Dialer
	var nilCtx context.Context
	t.Run("Dial", func(t *testing.T) {
		err := misuse(t, func() (net.Conn, error) { return d.Dial("tcp", "127.0.0.1:9") })
		assert.ErrorIs(t, err, socksbind.ErrNoProxy)
	})
	t.Run("DialContext", func(t *testing.T) {
		err := misuse(t, func() (net.Conn, error) { return d.DialContext(context.Background(), "tcp", "127.0.0.1:9") })
		assert.ErrorIs(t, err, socksbind.ErrNoProxy)
	})
	live := &socksbind.Dialer{ProxyAddress: newProxy(t, nil).Addr(), ResolveLocally: true}
	t.Run("DialContext, nil context", func(t *testing.T) {
		misuse(t, func() (net.Conn, error) { return live.DialContext(nilCtx, "tcp", "127.0.0.1:9") })
		misuse(t, func() (net.Conn, error) { return live.DialContext(nilCtx, "tcp", "localhost:9") })
	})
	t.Run("Listen, nil context", func(t *testing.T) {
		for _, mux := range []socksbind.Multiplex{socksbind.MultiplexOff, socksbind.MultiplexOn, socksbind.MultiplexAuto} {
			lc := socksbind.ListenConfig{Dialer: live, Multiplex: mux}
			misuse(t, func() (*socksbind.Listener, error) { return lc.Listen(nilCtx, "tcp", ":0") })
		}
	})
}

// Listen without a Dialer fails as Dial does: with an error matching
// ErrNoProxy, whether the Dialer or the ListenConfig is nil.
func TestNilListenConfig(t *testing.T) {
	var d *socksbind.Dialer
	t.Run("nil Dialer", func(t *testing.T) {
		err := misuse(t, func() (*socksbind.Listener, error) { return d.Listen(context.Background(), "tcp", ":0") })
		assert.ErrorIs(t, err, socksbind.ErrNoProxy)
	})
	t.Run("ListenConfig without a Dialer", func(t *testing.T) {
		var lc socksbind.ListenConfig
		err := misuse(t, func() (*socksbind.Listener, error) { return lc.Listen(context.Background(), "tcp", ":0") })
		assert.ErrorIs(t, err, socksbind.ErrNoProxy)
	})
	t.Run("nil ListenConfig", func(t *testing.T) {
		var lc *socksbind.ListenConfig
		err := misuse(t, func() (*socksbind.Listener, error) { return lc.Listen(context.Background(), "tcp", ":0") })
		assert.ErrorIs(t, err, socksbind.ErrNoProxy)
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestFailureReplyAddress: Dante puts one of its own ports in a failed
// CONNECT reply; that address means nothing to the caller and must not be
// reported as if it were the target's.
func TestFailureReplyAddress(t *testing.T) {
	srv := newProxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
			if stage != socks5test.StageRequest {
				return false
			}
			c.Write([]byte{5, 5, 0, 1, 127, 0, 0, 1, 0x9c, 0x2b}) // as Dante sends it
			return true
		}
	})
	_, err := newDialer(t, srv).Dial("tcp", "127.0.0.1:4242")
	var re *socksbind.ReplyError
	require.ErrorAs(t, err, &re)
	assert.Nil(t, re.Addr)
	assert.NotContains(t, err.Error(), "39979")
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
}
