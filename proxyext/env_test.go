package proxyext

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/connectproxy"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

const secret = "s3cr3t-pw"

// envServers are the proxies an environment case can name: "{socks}",
// "{socks2}", "{socksAuth}", "{socksNoBind}", "{http}", "{httpAuth}" and
// "{https}" in a variable's value stand for their addresses, "{port}" for
// the echo server's port.
type envServers struct {
	socks, socks2, socksAuth *socks5test.Server
	socksNoBind              *socks5test.Server // refuses BIND
	http, httpAuth, https    *connectproxy.Server
	port                     string
}

// newEnvServers empties the proxy variables for the test, starts the
// proxies an environment case can name, and sets the variables of env with
// the names in their values expanded.
func newEnvServers(t *testing.T, env map[string]string) *envServers {
	t.Helper()
	clearEnv(t)
	s := &envServers{
		socks:     startSOCKS(t, nil, socks5test.BindReuse),
		socks2:    startSOCKS(t, nil, socks5test.BindReuse),
		socksAuth: startSOCKS(t, map[string]string{"user": secret}, socks5test.BindReuse),
		http:      startHTTP(t, nil, false),
		httpAuth:  startHTTP(t, map[string]string{"user": secret}, false),
		https:     startHTTP(t, nil, true),
		port:      testkit.Port(testkit.Echo(t, "tcp").Addr()),
	}
	s.socksNoBind = testkit.Proxy(t, func(srv *socks5test.Server) {
		srv.Rules = []socks5test.Rule{socks5test.RefuseCommand(socksbind.CmdBind, socksbind.ReplyNotAllowed)}
	})
	for k, v := range env {
		t.Setenv(k, s.expand(v))
	}
	return s
}

func (s *envServers) expand(v string) string {
	return strings.NewReplacer(
		"{socks}", s.socks.Addr(),
		"{socks2}", s.socks2.Addr(),
		"{socksAuth}", s.socksAuth.Addr(),
		"{socksNoBind}", s.socksNoBind.Addr(),
		"{http}", s.http.Addr(),
		"{httpAuth}", s.httpAuth.Addr(),
		"{https}", s.https.Addr(),
		"{port}", s.port,
	).Replace(v)
}

// saw returns the names of the proxies that received a request.
func (s *envServers) saw() []string {
	var names []string
	for name, n := range map[string]int{
		"socks":     len(s.socks.Requests()),
		"socks2":    len(s.socks2.Requests()),
		"socksAuth": len(s.socksAuth.Requests()),
		"http":      len(s.http.Requests()),
		"httpAuth":  len(s.httpAuth.Requests()),
		"https":     len(s.https.Requests()),
	} {
		if n > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// request returns the one SOCKS request the named proxy received.
func (s *envServers) request(t *testing.T, name string) socks5test.Request {
	t.Helper()
	srv := map[string]*socks5test.Server{"socks": s.socks, "socks2": s.socks2, "socksAuth": s.socksAuth}[name]
	require.NotNil(t, srv, name)
	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	return reqs[0]
}

func TestEnvironment(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		target string // default echoName:{port}

		wantConfigErr string // from FromEnvironment
		wantDialErr   error  // errors.Is the Dial error
		wantVia       string // the proxy that sees the request, or "direct"
		wantType      addrKind
		wantUser      string
		wantListen    bool
	}{
		{name: "unset", wantVia: "direct"},
		{name: "empty", env: map[string]string{"ALL_PROXY": ""}, wantVia: "direct"},
		{name: "socks5", env: map[string]string{"ALL_PROXY": "socks5://{socks}"}, wantVia: "socks", wantType: kindIPv4, wantListen: true},
		{name: "socks5h", env: map[string]string{"ALL_PROXY": "socks5h://{socks}"}, wantVia: "socks", wantType: kindDomain, wantListen: true},
		{name: "socks5h lower case", env: map[string]string{"all_proxy": "socks5h://{socks}"}, wantVia: "socks", wantType: kindDomain, wantListen: true},
		{name: "both cases, upper wins", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "all_proxy": "socks5h://{socks2}"}, wantVia: "socks", wantType: kindDomain, wantListen: true},
		{name: "upper empty, lower used", env: map[string]string{"ALL_PROXY": "", "all_proxy": "socks5h://{socks2}"}, wantVia: "socks2", wantType: kindDomain, wantListen: true},
		{name: "socks5h credentials", env: map[string]string{"ALL_PROXY": "socks5h://user:" + secret + "@{socksAuth}"}, wantVia: "socksAuth", wantType: kindDomain, wantUser: "user", wantListen: true},
		{name: "socks5 credentials", env: map[string]string{"ALL_PROXY": "socks5://user:" + secret + "@{socksAuth}"}, wantVia: "socksAuth", wantType: kindIPv4, wantUser: "user", wantListen: true},
		{name: "socks5h wrong credentials", env: map[string]string{"ALL_PROXY": "socks5h://user:" + secret + "x@{socksAuth}"}, wantDialErr: socksbind.ErrAuthRejected, wantListen: true},
		{name: "socks5h credentials missing", env: map[string]string{"ALL_PROXY": "socks5h://{socksAuth}"}, wantDialErr: socksbind.ErrNoAcceptableAuth, wantListen: true},
		{name: "http", env: map[string]string{"ALL_PROXY": "http://{http}"}, wantVia: "http"},
		{name: "http lower case", env: map[string]string{"all_proxy": "http://{http}"}, wantVia: "http"},
		{name: "https", env: map[string]string{"ALL_PROXY": "https://{https}"}, wantVia: "https"},
		{name: "http credentials", env: map[string]string{"ALL_PROXY": "http://user:" + secret + "@{httpAuth}"}, wantVia: "httpAuth", wantUser: "user"},
		{name: "http wrong credentials", env: map[string]string{"ALL_PROXY": "http://user:" + secret + "x@{httpAuth}"}, wantDialErr: socksbind.ErrAuthRejected},
		{name: "malformed", env: map[string]string{"ALL_PROXY": "socks5://[bad"}, wantConfigErr: `ALL_PROXY=socks5://[bad: invalid proxy URL: missing ']' in host`},
		{name: "malformed lower case", env: map[string]string{"all_proxy": "socks5h://user:" + secret + "@[bad"}, wantConfigErr: `all_proxy=socks5h://user:xxxxx@[bad: invalid proxy URL`},
		{name: "malformed escape", env: map[string]string{"ALL_PROXY": "socks5h://user:a%zz" + secret + "@127.0.0.1"}, wantConfigErr: "invalid URL escape"},
		{name: "malformed port", env: map[string]string{"ALL_PROXY": "socks5h://user:" + secret + "@127.0.0.1:x"}, wantConfigErr: "invalid proxy URL"},
		{name: "no scheme", env: map[string]string{"ALL_PROXY": "127.0.0.1:1080"}, wantConfigErr: "not a proxy URL: want scheme://host[:port], such as socks5h://127.0.0.1:1080"},
		{name: "no scheme with name", env: map[string]string{"ALL_PROXY": "proxy.example:1080"}, wantConfigErr: "not a proxy URL: want scheme://host[:port], such as socks5h://proxy.example:1080"},
		{name: "no scheme IPv6", env: map[string]string{"ALL_PROXY": "[::1]:1080"}, wantConfigErr: "not a proxy URL: want scheme://host[:port], such as socks5h://[::1]:1080"},
		{name: "no scheme with user", env: map[string]string{"all_proxy": "u:hunter2@127.0.0.1:1080"}, wantConfigErr: "all_proxy=u:xxxxx@127.0.0.1:1080: not a proxy URL"},
		{name: "unknown scheme", env: map[string]string{"ALL_PROXY": "ftp://user:" + secret + "@{socks}"}, wantConfigErr: "unknown scheme: ftp"},
		{name: "socks4", env: map[string]string{"ALL_PROXY": "socks4://127.0.0.1:1080"}, wantConfigErr: "ALL_PROXY=socks4://127.0.0.1:1080: SOCKS4 is not supported, only SOCKS5; if the proxy speaks SOCKS5 too, as most do, use socks5://127.0.0.1:1080"},
		{name: "socks4a with user", env: map[string]string{"all_proxy": "socks4a://user:" + secret + "@127.0.0.1:1080"}, wantConfigErr: "all_proxy=socks4a://user:xxxxx@127.0.0.1:1080: SOCKS4 is not supported, only SOCKS5; if the proxy speaks SOCKS5 too, as most do, use socks5h://user:xxxxx@127.0.0.1:1080"},
		{name: "no host", env: map[string]string{"ALL_PROXY": "socks5h://user:" + secret + "@"}, wantConfigErr: "missing host"},
		{name: "NO_PROXY hit", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "NO_PROXY": "other.test,proxyext.test"}, wantVia: "direct", wantListen: true},
		{name: "NO_PROXY hit exact", env: map[string]string{"ALL_PROXY": "http://{http}", "NO_PROXY": echoName}, wantVia: "direct"},
		{name: "NO_PROXY hit with port", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "NO_PROXY": ".proxyext.test:{port}"}, wantVia: "direct", wantListen: true},
		{name: "NO_PROXY hit star", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "NO_PROXY": "*"}, wantVia: "direct", wantListen: true},
		{name: "no_proxy lower case hit", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "no_proxy": "proxyext.test"}, wantVia: "direct", wantListen: true},
		{name: "NO_PROXY miss", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "NO_PROXY": "other.test,10.0.0.0/8"}, wantVia: "socks", wantType: kindDomain, wantListen: true},
		{name: "NO_PROXY miss other port", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "NO_PROXY": echoName + ":1"}, wantVia: "socks", wantType: kindDomain, wantListen: true},
		{name: "NO_PROXY upper wins", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "NO_PROXY": "other.test", "no_proxy": "proxyext.test"}, wantVia: "socks", wantType: kindDomain, wantListen: true},
		{name: "NO_PROXY CIDR hit", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "NO_PROXY": "192.0.2.0/24"}, target: "192.0.2.1:{port}", wantVia: "direct", wantListen: true},
		{name: "loopback never proxied", env: map[string]string{"ALL_PROXY": "socks5h://{socks}"}, target: "127.0.0.1:{port}", wantVia: "direct", wantListen: true},
		{name: "localhost never proxied", env: map[string]string{"ALL_PROXY": "socks5h://{socks}"}, target: "localhost:{port}", wantVia: "direct", wantListen: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			s := newEnvServers(t, tt.env)
			target := s.expand(tt.target)
			if target == "" {
				target = net.JoinHostPort(echoName, s.port)
			}

			fwd := newRecorder()
			d, err := FromEnvironmentUsing(fwd)
			plain, plainErr := FromEnvironment()
			if tt.wantConfigErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "proxyext: ")
				assert.Contains(t, err.Error(), tt.wantConfigErr)
				assertNoSecret(t, secret, err)
				assert.Equal(t, err.Error(), plainErr.Error())
				return
			}
			require.NoError(t, err)
			require.NoError(t, plainErr)
			assertNoSecret(t, secret, d)
			cd, ok := d.(proxy.ContextDialer)
			require.True(t, ok, "%T is a ContextDialer", d)
			_, listens := d.(ListenDialer)
			assert.Equal(t, tt.wantListen, listens, "a ListenDialer")
			if len(tt.env) == 0 || tt.env["ALL_PROXY"]+tt.env["all_proxy"] == "" {
				assert.Same(t, fwd, d, "no proxy: the forward dialer itself")
				assert.Equal(t, proxy.Direct, plain, "no proxy and no forward: proxy.Direct")
			}
			if tt.wantType == kindIPv4 {
				withResolver(t, d, (&fakeResolver{hosts: map[string]netip.Addr{echoName: loopback4}}).resolver())
			}
			if tt.wantVia == "https" {
				trustTestCA(t, d)
			}

			c, err := cd.DialContext(context.Background(), "tcp", target)
			if tt.wantDialErr != nil {
				require.Error(t, err)
				assert.ErrorIs(t, err, tt.wantDialErr)
				assertNoSecret(t, secret, err)
				return
			}
			if tt.target == "" || tt.wantVia != "direct" {
				require.NoError(t, err)
				defer c.Close()
				assertEcho(t, c)
			} else if err == nil {
				// 192.0.2.1 is not this host: only where the dial went
				// matters.
				c.Close()
			}

			if tt.wantVia == "direct" {
				assert.Empty(t, s.saw(), "no proxy saw the request")
				assert.Equal(t, []string{target}, fwd.Addresses(), "the forward dialer dialed the target")
				return
			}
			assert.Equal(t, []string{tt.wantVia}, s.saw())
			switch tt.wantVia {
			case "socks", "socks2", "socksAuth":
				req := s.request(t, tt.wantVia)
				assert.Equal(t, tt.wantType, kindOf(req.Dst))
				assert.Equal(t, tt.wantUser, req.User)
				assert.Equal(t, map[string]string{"socks": s.socks.Addr(), "socks2": s.socks2.Addr(), "socksAuth": s.socksAuth.Addr()}[tt.wantVia],
					fwd.Addresses()[0], "the proxy is reached through the forward dialer")
			case "http", "httpAuth", "https":
				srv := map[string]*connectproxy.Server{"http": s.http, "httpAuth": s.httpAuth, "https": s.https}[tt.wantVia]
				reqs := srv.Requests()
				require.Len(t, reqs, 1)
				assert.Equal(t, target, reqs[0].Target)
				assert.Equal(t, tt.wantUser, reqs[0].User)
			}
		})
	}
}

// TestEnvironmentReadAtCallTime checks that nothing is cached.
func TestEnvironmentReadAtCallTime(t *testing.T) {
	clearEnv(t)
	d, err := FromEnvironment()
	require.NoError(t, err)
	assert.Equal(t, proxy.Direct, d)

	for _, all := range []string{"socks5h://127.0.0.1:1081", "http://127.0.0.1:3128"} {
		t.Setenv("ALL_PROXY", all)
		d, err = FromEnvironment()
		require.NoError(t, err)
		assert.Equal(t, all, d.(interface{ String() string }).String())
	}

	t.Setenv("NO_PROXY", "proxyext.test")
	assert.True(t, d.(*envDialer).useProxy(echoName+":80"), "a dialer keeps the NO_PROXY of its call")
	d, err = FromEnvironment()
	require.NoError(t, err)
	assert.False(t, d.(*envDialer).useProxy(echoName+":80"))
}

// A forward dialer without DialContext is given one.
func TestEnvironmentPlainForward(t *testing.T) {
	clearEnv(t)
	fwd := plainDialer{}
	d, err := FromEnvironmentUsing(fwd)
	require.NoError(t, err)
	_, ok := d.(proxy.ContextDialer)
	assert.True(t, ok)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = d.(proxy.ContextDialer).DialContext(ctx, "tcp", "127.0.0.1:9")
	assert.ErrorIs(t, err, context.Canceled)
}

type plainDialer struct{}

func (plainDialer) Dial(network, address string) (net.Conn, error) {
	return net.Dial(network, address)
}

func TestListen(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		proxy   bool   // ListenProxy instead of Listen
		address string // default ":{free port}"

		wantVia   string // the SOCKS server that BINDs, or "local"
		wantUser  string
		wantErrIs error
		wantErr   string
	}{
		{name: "unset", wantVia: "local", address: "127.0.0.1:0"},
		{name: "unset, any address", wantVia: "local", address: ":0"},
		{name: "unset, no fallback", proxy: true, wantErrIs: socksbind.ErrNoProxy, wantErr: "no proxy configured"},
		{name: "socks5h credentials", env: map[string]string{"ALL_PROXY": "socks5h://user:" + secret + "@{socksAuth}"}, wantVia: "socksAuth", wantUser: "user"},
		{name: "socks5h credentials, no fallback", proxy: true, env: map[string]string{"ALL_PROXY": "socks5h://user:" + secret + "@{socksAuth}"}, wantVia: "socksAuth", wantUser: "user"},
		{name: "socks5", env: map[string]string{"ALL_PROXY": "socks5://{socks}"}, wantVia: "socks"},
		{name: "socks5h lower case", env: map[string]string{"all_proxy": "socks5h://{socks}"}, wantVia: "socks"},
		{name: "socks5h port 0", env: map[string]string{"ALL_PROXY": "socks5h://{socks}"}, address: ":0", wantVia: "socks"},
		{name: "NO_PROXY does not apply", env: map[string]string{"ALL_PROXY": "socks5h://{socks}", "NO_PROXY": "*"}, wantVia: "socks"},
		{name: "http", env: map[string]string{"ALL_PROXY": "http://user:" + secret + "@{http}"}, wantErrIs: socksbind.ErrCommandNotSupported, wantErr: "cannot listen"},
		{name: "https", env: map[string]string{"ALL_PROXY": "https://{https}"}, wantErrIs: socksbind.ErrCommandNotSupported, wantErr: "cannot listen"},
		{name: "malformed", env: map[string]string{"ALL_PROXY": "socks5h://user:" + secret + "@[bad"}, wantErr: "invalid proxy URL"},
		{name: "wrong credentials", env: map[string]string{"ALL_PROXY": "socks5h://user:x" + secret + "@{socksAuth}"}, wantErrIs: socksbind.ErrAuthRejected},
		{name: "refused", env: map[string]string{"ALL_PROXY": "socks5h://{socksNoBind}"}, wantErrIs: socksbind.ErrNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			s := newEnvServers(t, tt.env)
			listen := Listen
			if tt.proxy {
				listen = ListenProxy
			}
			ctx := context.Background()
			var ln net.Listener
			var err error
			if tt.address == "" {
				ln, err = listenFreePort(t, func(address string) (net.Listener, error) {
					return listen(ctx, "tcp", address)
				})
			} else {
				ln, err = listen(ctx, "tcp", tt.address)
			}
			if tt.wantErrIs != nil || tt.wantErr != "" {
				require.Error(t, err)
				var oe *net.OpError
				assert.ErrorAs(t, err, &oe, "a *net.OpError")
				if tt.wantErrIs != nil {
					assert.ErrorIs(t, err, tt.wantErrIs)
				}
				assert.Contains(t, err.Error(), tt.wantErr)
				assertNoSecret(t, secret, err)
				return
			}
			require.NoError(t, err)
			if tt.wantVia == "local" {
				_, ok := ln.(*net.TCPListener)
				assert.True(t, ok, "%T", ln)
				assert.Empty(t, s.saw())
				if tt.address == ":0" {
					// A wildcard listener is reached on loopback.
					_, port, _ := net.SplitHostPort(ln.Addr().String())
					serveHTTP(t, &addrListener{Listener: ln, addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: atoi(t, port)}}, 3)
					return
				}
				serveHTTP(t, ln, 3)
				return
			}
			_, ok := ln.(*socksbind.Listener)
			assert.True(t, ok, "%T", ln)
			serveHTTP(t, ln, 3)
			assert.Equal(t, []string{tt.wantVia}, s.saw())
			reqs := map[string]*socks5test.Server{"socks": s.socks, "socksAuth": s.socksAuth}[tt.wantVia].Requests()
			require.NotEmpty(t, reqs)
			for _, r := range reqs {
				assert.Equal(t, socksbind.CmdBind, r.Command)
				assert.Equal(t, tt.wantUser, r.User)
			}
		})
	}
}

// addrListener reports another address than its listener's.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l *addrListener) Addr() net.Addr { return l.addr }

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// TestNoSecretInErrors goes through the error paths that see a URL with a
// password, and checks that none shows it.
func TestNoSecretInErrors(t *testing.T) {
	leakcheck.Check(t)
	clearEnv(t)
	for _, raw := range []string{
		"socks5h://user:" + secret + "@[bad",
		"socks5h://user:" + secret + "@127.0.0.1:0",
		"socks5h://user:" + secret + "@127.0.0.1:99999",
		"socks5h://user:" + secret + "@127.0.0.1:1:2",
		"socks5h://user:" + secret + "%zz@127.0.0.1",
		"socks5h://user:" + secret + "@",
		"socks5h://:" + secret + "@127.0.0.1",
		"socks5h://user:" + strings.Repeat(secret, 40) + "@127.0.0.1",
		"gopher://user:" + secret + "@127.0.0.1",
		"user:" + secret + "@127.0.0.1:1080",
		"http://user:" + secret + "@[::1",
		"http://user:" + secret + "@127.0.0.1:70000",
	} {
		t.Setenv("ALL_PROXY", raw)
		_, err := FromEnvironment()
		require.Error(t, err, raw)
		assertNoSecret(t, secret, err)
		_, err = Listen(context.Background(), "tcp", ":0")
		require.Error(t, err, raw)
		assertNoSecret(t, secret, err)
		if u, perr := url.Parse(raw); perr == nil {
			_, err := FromURL(u, nil)
			if err != nil {
				assertNoSecret(t, secret, err)
			}
		}
	}

	// Dial errors of well-formed URLs name the proxy by address only.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	ln.Close()
	for _, scheme := range []string{"socks5", "socks5h", "http", "https"} {
		t.Setenv("ALL_PROXY", scheme+"://user:"+secret+"@"+closed)
		d, err := FromEnvironment()
		require.NoError(t, err)
		assertNoSecret(t, secret, d)
		_, err = d.Dial("tcp", echoName+":80")
		require.Error(t, err)
		assertNoSecret(t, secret, err)
		_, err = Listen(context.Background(), "tcp", ":0")
		require.Error(t, err)
		assertNoSecret(t, secret, err)
		var ne net.Error
		assert.True(t, errors.As(err, &ne))
	}
}

// An error of the proxy that ALL_PROXY names says so, with the URL
// redacted, and still matches what it matched.
func TestEnvironmentErrorNamesVariable(t *testing.T) {
	addr := refusedAddr(t)
	t.Setenv("ALL_PROXY", "socks5h://user:"+secret+"@"+addr)
	t.Setenv("NO_PROXY", "")
	d, err := FromEnvironment()
	require.NoError(t, err)
	_, err = d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", "api.example:443")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "via ALL_PROXY=socks5h://user:xxxxx@"+addr+": ")
	assertNoSecret(t, secret, err)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	var op *net.OpError
	assert.ErrorAs(t, err, &op)

	_, err = d.(ListenDialer).Listen(context.Background(), "tcp", ":0")
	assert.Contains(t, err.Error(), "via ALL_PROXY=")
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
}

// Errors of a dialer made from a URL name the URL, redacted.
func TestURLDialerErrorNamesURL(t *testing.T) {
	addr := refusedAddr(t)
	for _, scheme := range []string{"socks5h", "http"} {
		u := mustParse(t, scheme+"://user:"+secret+"@"+addr)
		d, err := FromURL(u, nil)
		require.NoError(t, err)
		_, err = d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", "api.example:443")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "via "+scheme+"://user:xxxxx@"+addr+": ")
		assertNoSecret(t, secret, err)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	}
}
