package connectproxy_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/connectproxy"
	"github.com/socksbind/socksbind/internal/hostile"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
)

const testTimeout = 30 * time.Second

// connect sends a CONNECT for target on c and returns the response.
func connect(t *testing.T, c net.Conn, target, auth string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if auth != "" {
		req += "Proxy-Authorization: " + auth + "\r\n"
	}
	_, err := io.WriteString(c, req+"\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	return resp, br
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestServer(t *testing.T) {
	tests := []struct {
		name     string
		tls      bool
		users    map[string]string
		refuse   int
		auth     string
		want     int
		wantUser string
	}{
		{name: "plain", want: 200},
		{name: "tls", tls: true, want: 200},
		{name: "auth ok", users: map[string]string{"u": "p"}, auth: basic("u", "p"), want: 200, wantUser: "u"},
		{name: "auth missing", users: map[string]string{"u": "p"}, want: 407},
		{name: "auth wrong", users: map[string]string{"u": "p"}, auth: basic("u", "x"), want: 407},
		{name: "refused", refuse: http.StatusForbidden, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			target := testkit.Echo(t, "tcp").Addr().String()
			srv := connectproxy.NewUnstartedServer()
			srv.Users = tt.users
			if tt.refuse != 0 {
				srv.Refuse = func(*connectproxy.Request) int { return tt.refuse }
			}
			if tt.tls {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)

			var c net.Conn
			var err error
			if tt.tls {
				c, err = tls.Dial("tcp", srv.Addr(), &tls.Config{RootCAs: connectproxy.CertPool()})
				assert.Equal(t, "https://"+srv.Addr(), srv.URL)
			} else {
				c, err = net.Dial("tcp", srv.Addr())
				assert.Equal(t, "http://"+srv.Addr(), srv.URL)
			}
			require.NoError(t, err)
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))

			resp, br := connect(t, c, target, tt.auth)
			assert.Equal(t, tt.want, resp.StatusCode)
			reqs := srv.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, http.MethodConnect, reqs[0].Method)
			assert.Equal(t, target, reqs[0].Target)
			assert.Equal(t, tt.auth, reqs[0].ProxyAuthorization)
			assert.Equal(t, tt.wantUser, reqs[0].User)
			if tt.want != 200 {
				return
			}
			_, err = io.WriteString(c, "ping")
			require.NoError(t, err)
			buf := make([]byte, 4)
			_, err = io.ReadFull(br, buf)
			require.NoError(t, err)
			assert.Equal(t, "ping", string(buf))
		})
	}
}

func TestStallUntilClose(t *testing.T) {
	leakcheck.Check(t)
	srv := connectproxy.NewUnstartedServer()
	srv.Stall = true
	got := make(chan connectproxy.Request, 1)
	srv.OnRequest = func(r connectproxy.Request) { got <- r }
	srv.Start()

	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	_, err = io.WriteString(c, "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
	require.NoError(t, err)
	r := <-got
	assert.Equal(t, "127.0.0.1:1", r.Target)

	srv.Close()
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the stalled connection is closed by Close")
	srv.Close() // idempotent
}

func TestNotConnect(t *testing.T) {
	leakcheck.Check(t)
	srv := connectproxy.NewServer()
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	http.DefaultClient.CloseIdleConnections()
}

func TestBadGateway(t *testing.T) {
	leakcheck.Check(t)
	closed, release, err := hostile.RefusedAddr()
	require.NoError(t, err)
	t.Cleanup(release)

	srv := connectproxy.NewServer()
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	resp, _ := connect(t, c, closed, "")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
}

func TestURLWithUser(t *testing.T) {
	srv := connectproxy.NewTLSServer()
	defer srv.Close()
	assert.Equal(t, "https://a%40b:p%2Fq@"+srv.Addr(), srv.URLWithUser("a@b", "p/q"))
	assert.NotNil(t, srv.Certificate())
	plain := connectproxy.NewServer()
	defer plain.Close()
	assert.Nil(t, plain.Certificate())
}
