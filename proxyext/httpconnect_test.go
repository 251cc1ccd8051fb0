package proxyext

import (
	"context"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/hostile"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/internal/wire"
)

// hostileHTTP starts a hostile proxy that reads a CONNECT request and then
// plays steps, and returns a dialer for it.
func hostileHTTP(t *testing.T, steps ...hostile.Step) *httpDialer {
	t.Helper()
	srv := hostile.NewServer(append([]hostile.Step{hostile.ReadHTTPHead()}, steps...)...)
	t.Cleanup(srv.Close)
	d, err := FromURL(mustParse(t, "http://"+srv.Addr()), nil)
	require.NoError(t, err)
	return d.(*httpDialer)
}

// repeat is an endless reader of one byte.
type repeat byte

func (r repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// lines is an endless reader of header lines "X: a".
type lines struct{ off int }

func (l *lines) Read(p []byte) (int, error) {
	const line = "X: a\r\n"
	for i := range p {
		p[i] = line[l.off%len(line)]
		l.off++
	}
	return len(p), nil
}

// allocated returns how many bytes of heap f allocated, for the whole
// process: run it where nothing else runs.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHTTPConnectHeadLimit feeds the HTTP hop answers that never end: it
// must stop at maxResponseHead with an error that names the limit, having
// allocated little, instead of buffering what the proxy sends.
func TestHTTPConnectHeadLimit(t *testing.T) {
	const flood = 8 << 20 // the proxy stops there, then waits
	tests := []struct {
		name string
		head string
		fill byte
	}{
		{"endless header value", "HTTP/1.1 200 OK\r\nX: ", 'a'},
		{"endless status line", "HTTP/1.1 200 ", 'a'},
		{"endless header lines", "HTTP/1.1 200 OK\r\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			var fill io.Reader = repeat(tt.fill)
			if tt.fill == 0 {
				fill = &lines{}
			}
			d := hostileHTTP(t,
				hostile.Write([]byte(tt.head)),
				hostile.Flood(io.LimitReader(fill, flood)),
				hostile.Silence())
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			var err error
			heap := allocated(func() { _, err = d.DialContext(ctx, "tcp", "127.0.0.1:9") })
			t.Logf("allocated %d KiB", heap>>10)
			require.Error(t, err)
			assert.ErrorIs(t, err, socksbind.ErrProtocolViolation)
			assert.NotErrorIs(t, err, context.DeadlineExceeded)
			assert.Equal(t, wire.StageHTTPConnect, wire.StageOf(err))
			assert.Contains(t, err.Error(), "response head longer than the limit of 64 KiB")
			assert.Less(t, heap, uint64(2<<20), "bytes allocated")
		})
	}

	t.Run("at the limit", func(t *testing.T) {
		leakcheck.Check(t)
		status := "HTTP/1.1 200 OK\r\n"
		pad := maxResponseHead - len(status) - len("X: \r\n\r\n")
		head := status + "X: " + strings.Repeat("a", pad) + "\r\n\r\n"
		require.Len(t, head, maxResponseHead)
		d := hostileHTTP(t, hostile.Write([]byte(head+"tunnel")), hostile.Cut())
		c, err := d.Dial("tcp", "127.0.0.1:9")
		require.NoError(t, err)
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, "tunnel", string(got), "nothing of the tunnel is lost")

		d = hostileHTTP(t, hostile.Write([]byte(status+"X: a"+head[len(status)+3:])))
		_, err = d.Dial("tcp", "127.0.0.1:9")
		assert.ErrorContains(t, err, "limit of 64 KiB", "one byte more")
	})
}

// TestHTTPConnectResponseCut checks that an answer cut short names its
// stage and matches io.ErrUnexpectedEOF.
func TestHTTPConnectResponseCut(t *testing.T) {
	leakcheck.Check(t)
	for _, sent := range []string{"", "HTTP/1.1 2", "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\nX: y\r\n\r"} {
		d := hostileHTTP(t, hostile.Write([]byte(sent)), hostile.Cut())
		_, err := d.Dial("tcp", "127.0.0.1:9")
		require.Error(t, err, "%q", sent)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "%q", sent)
		var se *wire.StageError
		require.ErrorAs(t, err, &se, "%q", sent)
		assert.Equal(t, wire.StageHTTPConnect, se.Stage, "%q", sent)
		assert.Equal(t, io.ErrUnexpectedEOF, se.Err, "%q", sent)
	}
}

// TestHTTPConnectProxyTextEscaped sends status lines and reasons full of
// control bytes: none reaches the error text raw.
func TestHTTPConnectProxyTextEscaped(t *testing.T) {
	leakcheck.Check(t)
	tests := []struct {
		head    string
		wantErr string
		wantIs  error
	}{
		{"HTTP/1.1 403 Go\x1b[2Jaway\r\n\r\n", `proxy refused the tunnel: 403 "Go\x1b[2Jaway"`, socksbind.ErrNotAllowed},
		{"HTTP/1.1 407 \x1b]0;owned\x07\r\n\r\n", `proxy authentication required: 407 "\x1b]0;owned\a"`, socksbind.ErrAuthRejected},
		{"HTTP/1.1 502 bad\rgateway\r\n\r\n", `proxy refused the tunnel: 502 "bad\rgateway"`, nil},
		{"HTTP/1.1 500 \xff\xfe\u00e9\r\n\r\n", `proxy refused the tunnel: 500 "\xff\xfe\u00e9"`, nil},
		{"HTTP/1.1 403 " + strings.Repeat("x", 1000) + "\r\n\r\n", `403 "` + strings.Repeat("x", wire.MaxQuoted) + `"...`, socksbind.ErrNotAllowed},
		{"\x1b[31mSSH-2.0-OpenSSH_9.2\r\n\r\n", `HTTP CONNECT response: malformed message: status line "\x1b[31mSSH-2.0-OpenSSH_9.2"`, socksbind.ErrProtocolViolation},
		{"HTTP/1.1 20x OK\r\n\r\n", `malformed message: status line "HTTP/1.1 20x OK"`, socksbind.ErrProtocolViolation},
		{"HTTP/1.1 099 Low\r\n\r\n", `malformed message: status line "HTTP/1.1 099 Low"`, socksbind.ErrProtocolViolation},
		{"HTTP/2 200 OK\r\n\r\n", `malformed message: status line "HTTP/2 200 OK"`, socksbind.ErrProtocolViolation},
	}
	for _, tt := range tests {
		d := hostileHTTP(t, hostile.Write([]byte(tt.head)))
		_, err := d.Dial("tcp", "127.0.0.1:9")
		require.Error(t, err, "%q", tt.head)
		assert.Contains(t, err.Error(), tt.wantErr)
		if tt.wantIs != nil {
			assert.ErrorIs(t, err, tt.wantIs)
		}
		for _, b := range []byte(err.Error()) {
			if b < 0x20 || b >= 0x7f {
				t.Errorf("byte 0x%02x in the error of %q: %q", b, tt.head, err.Error())
				break
			}
		}
	}
}

// TestHTTPConnectDefaultTimeout checks that the HTTP hop bounds a
// handshake by socksbind.DefaultHandshakeTimeout when the caller's context
// has no deadline: the dial and the connection get a deadline about 30 s
// away, and the connection's is cleared afterwards.
func TestHTTPConnectDefaultTimeout(t *testing.T) {
	leakcheck.Check(t)
	cp := startHTTP(t, nil, false)
	port := testkit.Port(testkit.Echo(t, "tcp").Addr())
	rec := &testkit.Dialer{}
	d, err := FromURL(mustParse(t, cp.URL), rec)
	require.NoError(t, err)

	start := time.Now()
	c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", "127.0.0.1:"+port)
	require.NoError(t, err)
	defer c.Close()

	want := start.Add(socksbind.DefaultHandshakeTimeout)
	dials := rec.Dials()
	require.Len(t, dials, 1)
	assert.False(t, dials[0].Deadline.IsZero(), "the dial to the proxy has a deadline")
	assert.WithinDuration(t, want, dials[0].Deadline, 5*time.Second)
	if dls := dials[0].Conn.Deadlines(); assert.Len(t, dls, 2, "the handshake sets a deadline and clears it") {
		assert.WithinDuration(t, want, dls[0], 5*time.Second)
		assert.True(t, dls[1].IsZero(), "no deadline is left on the connection")
	}
	assertEcho(t, c)

	t.Run("an earlier deadline of the caller wins", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dl, _ := ctx.Deadline()
		c, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", "127.0.0.1:"+port)
		require.NoError(t, err)
		c.Close()
		dials := rec.Dials()
		assert.Equal(t, dl, dials[len(dials)-1].Deadline)
	})
}

// TestHTTPConnectOwnTimeout lets the hop's own bound expire on a proxy
// that never answers.
func TestHTTPConnectOwnTimeout(t *testing.T) {
	leakcheck.Check(t)
	d := hostileHTTP(t, hostile.Silence())
	d.timeout = 100 * time.Millisecond
	start := time.Now()
	_, err := d.Dial("tcp", "127.0.0.1:9")
	require.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's context did not end")
	assert.Contains(t, err.Error(), "proxy did not complete the handshake within 100ms")
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
}
