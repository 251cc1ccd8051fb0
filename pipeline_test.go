package socksbind_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/hostile"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

// writeCounter is a forward dialer that counts the writes made on each
// connection to the proxy, and how often ReadFrom was called on it.
type writeCounter struct {
	mu    sync.Mutex
	conns []*countedConn
}

type countedConn struct {
	*net.TCPConn
	writes    atomic.Int32
	readFroms atomic.Int32
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.TCPConn.Write(p)
}

func (c *countedConn) ReadFrom(r io.Reader) (int64, error) {
	c.readFroms.Add(1)
	return c.TCPConn.ReadFrom(r)
}

func (w *writeCounter) Dial(network, addr string) (net.Conn, error) {
	return w.DialContext(context.Background(), network, addr)
}

func (w *writeCounter) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cc := &countedConn{TCPConn: c.(*net.TCPConn)}
	w.mu.Lock()
	w.conns = append(w.conns, cc)
	w.mu.Unlock()
	return cc, nil
}

// writes returns the writes on each connection so far.
func (w *writeCounter) writes() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n []int
	for _, c := range w.conns {
		n = append(n, int(c.writes.Load()))
	}
	return n
}

func pipelined(t *testing.T, srv *socks5test.Server, user, pass string) (*socksbind.Dialer, *writeCounter) {
	t.Helper()
	w := &writeCounter{}
	d := &socksbind.Dialer{ProxyAddress: srv.Addr(), Forward: w, Pipeline: true}
	if user != "" {
		d.Auth = []socksbind.Authenticator{socksbind.NoAuth{}, &socksbind.UsernamePassword{Username: user, Password: pass}}
	}
	return d, w
}

// A pipelined CONNECT is one write, with or without a password, and works.
func TestPipelineConnect(t *testing.T) {
	for _, user := range []string{"", "alice"} {
		t.Run("user="+user, func(t *testing.T) {
			srv := newProxy(t, func(s *socks5test.Server) {
				if user != "" {
					s.Users = map[string]string{user: "secret"}
				}
			})
			echo := testkit.Echo(t, "tcp")
			d, w := pipelined(t, srv, user, "secret")
			c, err := d.DialContext(context.Background(), "tcp", echo.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, []int{1}, w.writes(), "greeting, authentication and request in one write")
			d.Pipeline = false
			c2, err := d.DialContext(context.Background(), "tcp", echo.Addr().String())
			require.NoError(t, err)
			c2.Close()
			want := 2
			if user != "" {
				want = 3
			}
			assert.Equal(t, []int{1, want}, w.writes(), "without pipelining, a write per message")
			_, err = c.Write([]byte("ping"))
			require.NoError(t, err)
			buf := make([]byte, 4)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			assert.Equal(t, "ping", string(buf))
			if user != "" {
				assert.Equal(t, user, srv.Requests()[0].User)
			}
		})
	}
}

// Failures of a pipelined handshake map to the same typed errors.
func TestPipelineFailures(t *testing.T) {
	t.Run("auth rejected", func(t *testing.T) {
		srv := newProxy(t, func(s *socks5test.Server) { s.Users = map[string]string{"alice": "secret"} })
		d, _ := pipelined(t, srv, "alice", "wrong")
		_, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:9")
		assert.ErrorIs(t, err, socksbind.ErrAuthRejected)
	})
	t.Run("no acceptable method", func(t *testing.T) {
		srv := newProxy(t, func(s *socks5test.Server) { s.Users = map[string]string{"alice": "secret"} })
		d, _ := pipelined(t, srv, "", "")
		_, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:9")
		assert.ErrorIs(t, err, socksbind.ErrNoAcceptableAuth)
		assert.Contains(t, err.Error(), "pipelined")
	})
	t.Run("refused", func(t *testing.T) {
		srv := newProxy(t, func(s *socks5test.Server) {
			s.Rules = []socks5test.Rule{socks5test.RefusePort(9, socksbind.ReplyNotAllowed)}
		})
		d, _ := pipelined(t, srv, "", "")
		_, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:9")
		assert.ErrorIs(t, err, socksbind.ErrNotAllowed)
	})
	t.Run("proxy chose another method", func(t *testing.T) {
		// The proxy picks "no authentication" although the pipelined
		// greeting offered username/password only.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.Read(make([]byte, 512))
			c.Write([]byte{5, 0})
			io.Copy(io.Discard, c)
		}()
		d := &socksbind.Dialer{ProxyAddress: ln.Addr().String(), Pipeline: true,
			Auth: []socksbind.Authenticator{&socksbind.UsernamePassword{Username: "alice", Password: "secret"}}}
		_, err = d.DialContext(context.Background(), "tcp", "127.0.0.1:9")
		assert.ErrorIs(t, err, socksbind.ErrProtocolViolation)
		assert.Contains(t, err.Error(), "pipelined greeting offered")
	})
}

// A pipelined handshake that outlives the caller's deadline, shorter than
// the handshake timeout, says that pipelining may be why, as one that
// outlives the handshake timeout does: the proxy answers the greeting and
// then waits in silence, as microsocks does. The error still matches
// context.DeadlineExceeded and is a timeout; without pipelining there is
// no hint.
func TestPipelineCallerDeadline(t *testing.T) {
	for _, pipeline := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "pipelined"}[pipeline], func(t *testing.T) {
			srv := scriptedProxy(t, hostile.ReadGreeting(), hostile.Write([]byte{5, 0}), hostile.Silence())
			d := &socksbind.Dialer{ProxyAddress: srv.Addr(), Pipeline: pipeline}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, err := d.DialContext(ctx, "tcp", "127.0.0.1:9")
			require.Error(t, err)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			assert.True(t, ne.Timeout())
			var op *net.OpError
			require.ErrorAs(t, err, &op)
			assert.True(t, op.Timeout(), "net.OpError.Timeout asks its Err directly")
			if pipeline {
				assert.Contains(t, err.Error(), "set Dialer.Pipeline to false")
			} else {
				assert.NotContains(t, err.Error(), "Pipeline")
			}
		})
	}
}

// A pipelined Listen is one write; so is every re-arm of a listener whose
// proxy has answered a BIND, even when the Dialer does not pipeline.
func TestPipelineListen(t *testing.T) {
	for _, pipeline := range []bool{false, true} {
		for _, user := range []string{"", "alice"} {
			t.Run("pipeline="+map[bool]string{false: "off", true: "on"}[pipeline]+",user="+user, func(t *testing.T) {
				srv := newProxy(t, func(s *socks5test.Server) {
					if user != "" {
						s.Users = map[string]string{user: "secret"}
					}
				})
				d, w := pipelined(t, srv, user, "secret")
				d.Pipeline = pipeline
				armed, hook := armedHook()
				ln := listen(t, srv, socksbind.ListenConfig{Dialer: d, Armed: hook}, ":0")
				for range 2 {
					dialPeer(t, ln.Addr())
					accept(t, ln)
					waitArmed(t, armed)
				}
				first := 1
				if !pipeline {
					first = 2 // greeting, then the request (and the password between)
					if user != "" {
						first = 3
					}
				}
				assert.Equal(t, []int{first, 1, 1}, w.writes())
			})
		}
	}
}

// io.Copy through a *socksbind.Conn reaches the TCP connection's own
// ReadFrom and WriteTo paths, where the kernel can splice.
func TestSplicePath(t *testing.T) {
	srv := newProxy(t, nil)
	echo := testkit.Echo(t, "tcp")

	// Into the Conn: its ReadFrom hands the reader to the TCP
	// connection's ReadFrom.
	w := &writeCounter{}
	d := &socksbind.Dialer{ProxyAddress: srv.Addr(), Forward: w}
	c, err := d.DialContext(context.Background(), "tcp", echo.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	src, dst := net.Pipe()
	go func() { src.Write([]byte("spliced")); src.Close() }()
	n, err := io.Copy(c, dst)
	require.NoError(t, err)
	assert.Equal(t, int64(7), n)
	assert.Equal(t, int32(1), w.conns[0].readFroms.Load(), "io.Copy into the Conn did not reach TCPConn.ReadFrom")

	// Out of the Conn: a writer with ReadFrom is handed the bare
	// *net.TCPConn, as the kernel needs for splice.
	d = &socksbind.Dialer{ProxyAddress: srv.Addr()}
	c2, err := d.DialContext(context.Background(), "tcp", echo.Addr().String())
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.Write([]byte("back"))
	require.NoError(t, err)
	require.NoError(t, c2.(*socksbind.Conn).CloseWrite())
	rec := &readFromRecorder{}
	_, err = io.Copy(rec, c2)
	require.NoError(t, err)
	_, bare := rec.src.(*net.TCPConn)
	assert.True(t, bare, "io.Copy out of the Conn handed ReadFrom a %T, not the *net.TCPConn", rec.src)
	assert.Equal(t, "back", rec.got)
}

type readFromRecorder struct {
	src io.Reader
	got string
}

func (r *readFromRecorder) Write(p []byte) (int, error) { r.got += string(p); return len(p), nil }

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.src = src
	b, err := io.ReadAll(src)
	r.got += string(b)
	return int64(len(b)), err
}
