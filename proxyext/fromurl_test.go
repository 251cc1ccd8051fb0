package proxyext

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/connectproxy"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

// startSOCKS starts a SOCKS5 test server that knows the test names, with the
// given users (nil for no authentication) and BIND mode.
func startSOCKS(t *testing.T, users map[string]string, mode socks5test.BindMode) *socks5test.Server {
	t.Helper()
	return testkit.Proxy(t, func(srv *socks5test.Server) {
		srv.Users = users
		srv.BindMode = mode
		srv.Hosts = map[string]netip.Addr{echoName: loopback4, httpName: loopback4}
	})
}

// startHTTP starts an HTTP CONNECT proxy that knows the test names, with
// the given users (nil for no authentication), over TLS or not, after
// configure set it up further.
func startHTTP(t *testing.T, users map[string]string, secure bool, configure ...func(*connectproxy.Server)) *connectproxy.Server {
	t.Helper()
	cp := connectproxy.NewUnstartedServer()
	cp.Users = users
	cp.Hosts = map[string]netip.Addr{echoName: loopback4, httpName: loopback4}
	for _, f := range configure {
		f(cp)
	}
	if secure {
		cp.StartTLS()
	} else {
		cp.Start()
	}
	t.Cleanup(cp.Close)
	return cp
}

// registeredDialer is what the scheme registered by the tests returns.
type registeredDialer struct {
	u       *url.URL
	forward proxy.Dialer
}

func (registeredDialer) Dial(string, string) (net.Conn, error) { return nil, errors.ErrUnsupported }

func init() {
	proxy.RegisterDialerType("proxyexttest", func(u *url.URL, forward proxy.Dialer) (proxy.Dialer, error) {
		return registeredDialer{u: u, forward: forward}, nil
	})
}

func TestFromURL(t *testing.T) {
	basic := func(userinfo string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(userinfo))
	}
	tests := []struct {
		name string
		url  string

		// socks5 and socks5h
		wantSOCKS  string // proxy address
		wantLocal  bool
		wantUser   string
		wantPass   string
		wantNoAuth bool

		// http and https
		wantHTTP   string // proxy address
		wantTLS    string // ServerName, "" for plain http
		wantHeader string

		wantOther bool
		wantErr   string
		wantErrIs error
	}{
		{name: "socks5", url: "socks5://127.0.0.1:1081", wantSOCKS: "127.0.0.1:1081", wantLocal: true, wantNoAuth: true},
		{name: "socks5h", url: "socks5h://127.0.0.1:1081", wantSOCKS: "127.0.0.1:1081", wantNoAuth: true},
		{name: "socks5 default port", url: "socks5://proxy.example", wantSOCKS: "proxy.example:1080", wantLocal: true, wantNoAuth: true},
		{name: "socks5h ipv6", url: "socks5h://[::1]", wantSOCKS: "[::1]:1080", wantNoAuth: true},
		{name: "socks5h upper case scheme", url: "SOCKS5H://127.0.0.1", wantSOCKS: "127.0.0.1:1080", wantNoAuth: true},
		{name: "socks5 credentials", url: "socks5://user:" + secret + "@127.0.0.1", wantSOCKS: "127.0.0.1:1080", wantLocal: true, wantUser: "user", wantPass: secret},
		{name: "socks5h escaped credentials", url: "socks5h://us%40er:" + secret + "%2F@127.0.0.1", wantSOCKS: "127.0.0.1:1080", wantUser: "us@er", wantPass: secret + "/"},
		{name: "socks5h user without password", url: "socks5h://user@127.0.0.1", wantSOCKS: "127.0.0.1:1080", wantUser: "user"},
		{name: "socks5h empty userinfo", url: "socks5h://@127.0.0.1", wantSOCKS: "127.0.0.1:1080", wantNoAuth: true},
		{name: "socks5h password without user", url: "socks5h://:" + secret + "@127.0.0.1", wantErr: "username must be 1 to 255 bytes"},
		{name: "socks5h missing host", url: "socks5h:///", wantErr: "missing host"},
		{name: "socks5h port 0", url: "socks5h://user:" + secret + "@127.0.0.1:0", wantErr: `invalid port "0"`},
		{name: "socks5h port too large", url: "socks5h://127.0.0.1:65536", wantErr: `invalid port "65536"`},
		{name: "http", url: "http://127.0.0.1:3128", wantHTTP: "127.0.0.1:3128"},
		{name: "http default port", url: "http://proxy.example", wantHTTP: "proxy.example:80"},
		{name: "https default port", url: "https://proxy.example", wantHTTP: "proxy.example:443", wantTLS: "proxy.example"},
		{name: "https ipv6", url: "https://[::1]:8443", wantHTTP: "[::1]:8443", wantTLS: "::1"},
		{name: "http credentials", url: "http://user:" + secret + "@127.0.0.1:3128", wantHTTP: "127.0.0.1:3128", wantHeader: basic("user:" + secret)},
		{name: "http user without password", url: "http://user@127.0.0.1:3128", wantHTTP: "127.0.0.1:3128", wantHeader: basic("user:")},
		{name: "http missing host", url: "http://user:" + secret + "@:3128", wantErr: "missing host"},
		{name: "registered scheme", url: "proxyexttest://user:" + secret + "@127.0.0.1", wantOther: true},
		{name: "unknown scheme", url: "ftp://user:" + secret + "@127.0.0.1", wantErr: "unknown scheme: ftp"},
		{name: "socks4", url: "socks4://user:" + secret + "@127.0.0.1:1080", wantErr: "SOCKS4 is not supported, only SOCKS5; if the proxy speaks SOCKS5 too, as most do, use socks5://user:xxxxx@127.0.0.1:1080", wantErrIs: errors.ErrUnsupported},
		{name: "socks4a", url: "SOCKS4A://127.0.0.1", wantErr: "SOCKS4 is not supported, only SOCKS5; if the proxy speaks SOCKS5 too, as most do, use socks5h://127.0.0.1", wantErrIs: errors.ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := mustParse(t, tt.url)
			d, err := FromURL(u, nil)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				if tt.wantErrIs != nil {
					assert.ErrorIs(t, err, tt.wantErrIs)
				}
				assert.Contains(t, err.Error(), Redact(u), "the error names the URL, redacted")
				assertNoSecret(t, secret, err)
				return
			}
			require.NoError(t, err)
			assertNoSecret(t, secret, d)
			switch {
			case tt.wantSOCKS != "":
				sd, ok := d.(*socksDialer)
				require.True(t, ok, "%T", d)
				var _ ListenDialer = sd
				assert.Equal(t, tt.wantSOCKS, sd.d.ProxyAddress)
				assert.Equal(t, tt.wantLocal, sd.d.ResolveLocally)
				assert.Nil(t, sd.d.Forward)
				assert.Equal(t, Redact(u), sd.String())
				if tt.wantNoAuth {
					assert.Empty(t, sd.d.Auth)
					return
				}
				require.Len(t, sd.d.Auth, 2)
				assert.Equal(t, socksbind.NoAuth{}, sd.d.Auth[0])
				up, ok := sd.d.Auth[1].(*socksbind.UsernamePassword)
				require.True(t, ok)
				assert.Equal(t, tt.wantUser, up.Username)
				assert.Equal(t, tt.wantPass, up.Password)
			case tt.wantHTTP != "":
				hd, ok := d.(*httpDialer)
				require.True(t, ok, "%T", d)
				_, listens := d.(ListenDialer)
				assert.False(t, listens, "an HTTP CONNECT dialer cannot listen")
				assert.Equal(t, tt.wantHTTP, hd.addr)
				assert.Equal(t, tt.wantHeader, hd.auth)
				assert.Equal(t, Redact(u), hd.String())
				if tt.wantTLS == "" {
					assert.Nil(t, hd.tls)
				} else {
					require.NotNil(t, hd.tls)
					assert.Equal(t, tt.wantTLS, hd.tls.ServerName)
				}
			case tt.wantOther:
				rd, ok := d.(registeredDialer)
				require.True(t, ok, "%T", d)
				assert.Equal(t, u, rd.u)
				assert.Equal(t, proxy.Direct, rd.forward, "nil forward is passed on as proxy.Direct")
			}
		})
	}

	t.Run("nil", func(t *testing.T) {
		_, err := FromURL(nil, nil)
		assert.Error(t, err)
	})
	t.Run("forward", func(t *testing.T) {
		fwd := newRecorder()
		for _, raw := range []string{"socks5h://127.0.0.1", "proxyexttest://127.0.0.1"} {
			d, err := FromURL(mustParse(t, raw), fwd)
			require.NoError(t, err)
			switch d := d.(type) {
			case *socksDialer:
				assert.Same(t, fwd, d.d.Forward)
			case registeredDialer:
				assert.Same(t, fwd, d.forward)
			}
		}
		d, err := FromURL(mustParse(t, "http://127.0.0.1"), fwd)
		require.NoError(t, err)
		assert.Same(t, fwd, d.(*httpDialer).forward)
	})
}

func TestRedact(t *testing.T) {
	assert.Equal(t, "socks5h://user:xxxxx@127.0.0.1:1080", Redact(mustParse(t, "socks5h://user:pw@127.0.0.1:1080")))
	assert.Equal(t, "socks5h://user@127.0.0.1:1080", Redact(mustParse(t, "socks5h://user@127.0.0.1:1080")))
	assert.Equal(t, "http://127.0.0.1:3128", Redact(mustParse(t, "http://127.0.0.1:3128")))
	assert.Equal(t, "", Redact(nil))

	for _, tt := range []struct{ raw, want string }{
		{"socks5://user:pw@[bad", "socks5://user:xxxxx@[bad"},
		{"socks5://user:p@w@[bad", "socks5://user:xxxxx@[bad"},
		{"socks5://user@[bad", "socks5://user@[bad"},
		{"socks5://[bad", "socks5://[bad"},
		{"user:pw@host:1", "user:xxxxx@host:1"},
	} {
		assert.Equal(t, tt.want, redactText(tt.raw), tt.raw)
	}
}

// TestResolution proves where target names are resolved: by the client
// for socks5, by the proxy for socks5h, as the proxy's record of the
// request's address type shows.
func TestResolution(t *testing.T) {
	tests := []struct {
		scheme      string
		wantType    addrKind
		wantQueries bool
	}{
		{scheme: "socks5", wantType: kindIPv4, wantQueries: true},
		{scheme: "socks5h", wantType: kindDomain},
	}
	for _, tt := range tests {
		t.Run(tt.scheme, func(t *testing.T) {
			leakcheck.Check(t)
			port := testkit.Port(testkit.Echo(t, "tcp").Addr())
			srv := startSOCKS(t, nil, socks5test.BindDante)
			d, err := FromURL(mustParse(t, tt.scheme+"://"+srv.Addr()), nil)
			require.NoError(t, err)
			fake := &fakeResolver{hosts: map[string]netip.Addr{echoName: loopback4}}
			withResolver(t, d, fake.resolver())

			c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", net.JoinHostPort(echoName, port))
			require.NoError(t, err)
			defer c.Close()
			assertEcho(t, c)

			reqs := srv.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, tt.wantType, kindOf(reqs[0].Dst))
			if tt.wantType == kindDomain {
				assert.Equal(t, echoName, reqs[0].Dst.Name)
			} else {
				assert.Equal(t, loopback4, reqs[0].Dst.IP)
			}
			assert.Equal(t, tt.wantQueries, fake.queries.Load() > 0, "local DNS queries")
		})
	}
}

func TestHTTPConnect(t *testing.T) {
	tests := []struct {
		name     string
		tls      bool
		users    map[string]string
		refuse   int
		userinfo string
		target   string // default: the echo server

		wantErrIs error
		wantErr   string
		wantUser  string
	}{
		{name: "http"},
		{name: "https", tls: true},
		{name: "http credentials", users: map[string]string{"user": secret}, userinfo: "user:" + secret + "@", wantUser: "user"},
		{name: "https credentials", tls: true, users: map[string]string{"user": secret}, userinfo: "user:" + secret + "@", wantUser: "user"},
		{name: "credentials missing", users: map[string]string{"user": secret}, wantErrIs: socksbind.ErrAuthRejected, wantErr: "proxy authentication required: 407"},
		{name: "credentials wrong", users: map[string]string{"user": "other"}, userinfo: "user:" + secret + "@", wantErrIs: socksbind.ErrAuthRejected, wantErr: "proxy authentication required: 407"},
		{name: "forbidden", refuse: http.StatusForbidden, userinfo: "user:" + secret + "@", wantErrIs: socksbind.ErrNotAllowed, wantErr: `proxy refused the tunnel: 403 "Forbidden"`},
		{name: "bad gateway", target: "closed", wantErr: `proxy refused the tunnel: 502 "Bad Gateway"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			target := "127.0.0.1:" + testkit.Port(testkit.Echo(t, "tcp").Addr())
			if tt.target == "closed" {
				target = refusedAddr(t)
			}
			cp := startHTTP(t, tt.users, tt.tls, func(cp *connectproxy.Server) {
				if tt.refuse != 0 {
					cp.Refuse = func(*connectproxy.Request) int { return tt.refuse }
				}
			})
			u := mustParse(t, cp.URL)
			if tt.userinfo != "" {
				u = mustParse(t, u.Scheme+"://"+tt.userinfo+u.Host)
			}
			d, err := FromURL(u, nil)
			require.NoError(t, err)
			if tt.tls {
				trustTestCA(t, d)
			}

			c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", target)
			reqs := cp.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, target, reqs[0].Target)
			assert.Equal(t, tt.wantUser, reqs[0].User)
			if tt.wantErr != "" {
				require.Error(t, err)
				var oe *net.OpError
				require.ErrorAs(t, err, &oe)
				assert.Equal(t, "proxy connect", oe.Op)
				assert.Contains(t, err.Error(), tt.wantErr)
				if tt.wantErrIs != nil {
					assert.ErrorIs(t, err, tt.wantErrIs)
				}
				assertNoSecret(t, secret, err)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			assertEcho(t, c)
		})
	}
}

// TestHTTPConnectBytesAfterHeader checks that bytes of the tunnel that
// arrive with the proxy's response are not lost.
func TestHTTPConnectBytesAfterHeader(t *testing.T) {
	for _, resp := range []string{
		"HTTP/1.1 200 Connection established\r\n\r\n",
		"HTTP/1.0 200 Connection established\r\nProxy-Agent: test\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
	} {
		t.Run(resp[:12], func(t *testing.T) {
			leakcheck.Check(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			var wg sync.WaitGroup
			t.Cleanup(func() {
				ln.Close()
				wg.Wait()
			})
			wg.Go(func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				// The response and the first bytes of the tunnel
				// in one write.
				io.WriteString(c, resp+"banner")
				io.Copy(io.Discard, br)
			})
			d, err := FromURL(mustParse(t, "http://"+ln.Addr().String()), nil)
			require.NoError(t, err)
			c, err := d.Dial("tcp", "example.test:22")
			require.NoError(t, err)
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			buf := make([]byte, 6)
			_, err = io.ReadFull(c, buf)
			require.NoError(t, err)
			assert.Equal(t, "banner", string(buf))
		})
	}
}

func TestHTTPConnectBadInput(t *testing.T) {
	d, err := FromURL(mustParse(t, "http://user:pw@127.0.0.1:9"), nil)
	require.NoError(t, err)
	for _, tt := range []struct{ network, address, wantErr string }{
		{"udp", "example.test:53", "unknown network udp"},
		{"tcp", "example.test", "missing port"},
		{"tcp", "example.test:80\r\nX-Injected: 1", "too many colons"},
		{"tcp", "example.test\r\nX-Injected:80", "invalid character"},
		{"tcp", "exa mple.test:80", "invalid character"},
	} {
		_, err := d.Dial(tt.network, tt.address)
		require.Error(t, err, tt.address)
		assert.Contains(t, err.Error(), tt.wantErr)
	}
}

func TestHTTPSProxyUntrusted(t *testing.T) {
	leakcheck.Check(t)
	// A plain HTTP proxy behind an https URL: the TLS handshake fails.
	cp := connectproxy.NewServer()
	t.Cleanup(cp.Close)
	d, err := FromURL(mustParse(t, "https://user:s3cr3t@"+cp.Addr()), nil)
	require.NoError(t, err)
	_, err = d.Dial("tcp", "example.test:80")
	require.Error(t, err)
	assertNoSecret(t, "s3cr3t", err)
}

func TestSOCKS5Dialer(t *testing.T) {
	u, err := url.Parse("socks5://127.0.0.1:1080")
	require.NoError(t, err)
	d, err := FromURL(u, nil)
	require.NoError(t, err)
	sd, ok := SOCKS5Dialer(d)
	require.True(t, ok)
	assert.Equal(t, "127.0.0.1:1080", sd.ProxyAddress)
	assert.True(t, sd.ResolveLocally)

	t.Setenv("ALL_PROXY", "socks5h://127.0.0.1:1081")
	t.Setenv("all_proxy", "")
	env, err := FromEnvironment()
	require.NoError(t, err)
	sd, ok = SOCKS5Dialer(env)
	require.True(t, ok)
	assert.Equal(t, "127.0.0.1:1081", sd.ProxyAddress)
	assert.False(t, sd.ResolveLocally)

	u, err = url.Parse("http://127.0.0.1:3128")
	require.NoError(t, err)
	h, err := FromURL(u, nil)
	require.NoError(t, err)
	_, ok = SOCKS5Dialer(h)
	assert.False(t, ok)
}

// TestListenConfig checks that the settings ListenConfig returns are the
// URL's: bind=on listens with GOST's multiplexed BIND, and with no bind the
// same proxy is asked for a standard BIND.
func TestListenConfig(t *testing.T) {
	leakcheck.Check(t)
	srv := testkit.Proxy(t, func(srv *socks5test.Server) { srv.Multiplex = true })
	for _, tt := range []struct {
		query string
		want  socksbind.Command
	}{
		{"?bind=on", socksbind.CmdMultiplexBind},
		{"", socksbind.CmdBind},
	} {
		t.Run(tt.want.String(), func(t *testing.T) {
			d, err := FromURL(mustParse(t, srv.URL+tt.query), nil)
			require.NoError(t, err)
			lc, ok := ListenConfig(d)
			require.True(t, ok)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			ln, err := lc.Listen(ctx, "tcp", ":0")
			require.NoError(t, err)
			assert.Equal(t, tt.want == socksbind.CmdMultiplexBind, ln.Multiplexed())
			if ln.Multiplexed() {
				serveHTTP(t, ln, 3) // many peers at one address
			} else {
				require.NoError(t, ln.Close())
			}
			reqs := srv.Requests()
			require.NotEmpty(t, reqs)
			assert.Equal(t, tt.want, reqs[len(reqs)-1].Command)
		})
	}
}

// TestHTTPSProxyUnknownAuthority checks that an https proxy is verified
// against the system's roots, which do not hold the test certificate, and
// that the same dialer succeeds once it trusts it.
func TestHTTPSProxyUnknownAuthority(t *testing.T) {
	leakcheck.Check(t)
	cp := startHTTP(t, nil, true)
	target := "127.0.0.1:" + testkit.Port(testkit.Echo(t, "tcp").Addr())
	d, err := FromURL(mustParse(t, cp.URL), nil)
	require.NoError(t, err)
	_, err = d.Dial("tcp", target)
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown, "%v", err)
	assert.Empty(t, cp.Requests(), "nothing was asked of an unverified proxy")

	trustTestCA(t, d)
	c, err := d.Dial("tcp", target)
	require.NoError(t, err)
	defer c.Close()
	assertEcho(t, c)
}
