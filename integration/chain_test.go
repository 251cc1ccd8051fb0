package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/proxyext"
)

// TestChainTinyproxyDante runs CONNECT and BIND through a chain: tinyproxy
// (HTTP CONNECT, from proxyext) in front of Dante.
func TestChainTinyproxyDante(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{})
	tiny := startTinyproxy(t)
	echo := testkit.Echo(t, "tcp4")

	hop, err := proxyext.FromURL(&url.URL{Scheme: "http", Host: tiny.Addr}, nil)
	require.NoError(t, err)
	require.Implements(t, (*proxy.ContextDialer)(nil), hop)
	d := newDialer(t, dante.Addr, nil, hop)

	// throughTinyproxy checks that c runs over a tunnel of tinyproxy.
	throughTinyproxy := func(t *testing.T, c *socksbind.Conn) {
		t.Helper()
		assert.Equal(t, tiny.Addr, c.NetConn().RemoteAddr().String(), "the connection to Dante is a tunnel of tinyproxy")
	}

	t.Run("Connect", func(t *testing.T) {
		c, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		sc := asConn(t, c)
		throughTinyproxy(t, sc)
		assert.Equal(t, "through two hops", exchange(t, sc, "through two hops"))
		assert.Equal(t, nextPeer(t, echo.Peers), netutil.AddrPort(sc.LocalAddr()), "LocalAddr is Dante's outgoing address")
	})

	t.Run("Bind", func(t *testing.T) {
		ln := listen(t, d, socksbind.ListenConfig{}, ":0")
		bound := ln.Addr() // the listener moves on once it has a peer
		assert.Equal(t, loopback4, netutil.AddrPort(bound).Addr())
		peer := dialPeer(t, "127.0.0.1", bound)
		c := accept(t, ln)
		throughTinyproxy(t, c)
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
		assert.Equal(t, netutil.AddrPort(bound), netutil.AddrPort(c.LocalAddr()))
		bothWays(t, c, peer)
	})

	t.Run("HTTPFollow", func(t *testing.T) {
		testHTTPFollow(t, d)
	})

	t.Run("URLs", func(t *testing.T) {
		// The same chain, both hops from URLs.
		sd, err := proxyext.FromURL(&url.URL{Scheme: "socks5h", Host: dante.Addr}, hop)
		require.NoError(t, err)
		ld, ok := sd.(proxyext.ListenDialer)
		require.True(t, ok, "a socks5h dialer can listen: %T", sd)

		ln, err := ld.Listen(testContext(t), "tcp", ":0")
		require.NoError(t, err)
		defer ln.Close()
		require.IsType(t, (*socksbind.Listener)(nil), ln)
		peer := dialPeer(t, "127.0.0.1", ln.Addr())
		c := accept(t, ln)
		throughTinyproxy(t, c)
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
		bothWays(t, c, peer)

		cc, err := ld.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.NoError(t, err)
		defer cc.Close()
		throughTinyproxy(t, asConn(t, cc))
		assert.Equal(t, "socks5h over http", exchange(t, cc, "socks5h over http"))
	})

	// tinyproxy saw a CONNECT to Dante for each of them.
	assert.Contains(t, tiny.logText(), "CONNECT "+dante.Addr)
}

// TestProxyextListenDante checks proxyext.Listen with ALL_PROXY naming Dante
// (with credentials): the listener is a BIND of Dante's, and an unchanged
// http.Serve answers through it.
func TestProxyextListenDante(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{Username: true})
	proxyURL := &url.URL{Scheme: "socks5h", User: url.UserPassword(TestUser, TestPassword), Host: dante.Addr}
	t.Setenv("ALL_PROXY", proxyURL.String())
	t.Setenv("all_proxy", "")
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	t.Run("Accept", func(t *testing.T) {
		ln, err := proxyext.Listen(testContext(t), "tcp", ":0")
		require.NoError(t, err)
		defer ln.Close()
		require.IsType(t, (*socksbind.Listener)(nil), ln)
		bound := ln.Addr() // the listener moves on once it has a peer
		assert.Equal(t, loopback4, netutil.AddrPort(bound).Addr())

		peer := dialPeer(t, "127.0.0.1", bound)
		c := accept(t, ln)
		assert.Equal(t, dante.Addr, c.NetConn().RemoteAddr().String())
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
		assert.Equal(t, netutil.AddrPort(bound), netutil.AddrPort(c.LocalAddr()))
		bothWays(t, c, peer)
	})

	t.Run("HTTPServe", func(t *testing.T) {
		ln, err := proxyext.Listen(testContext(t), "tcp", ":0")
		require.NoError(t, err)
		addr := ln.Addr()
		served := make(chan error, 1)
		go func() {
			served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "hello %s", r.URL.Path)
			}))
		}()
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: testTimeout}
		resp, err := client.Get("http://" + addr.String() + "/from-env")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "hello /from-env", string(body))

		require.NoError(t, ln.Close())
		select {
		case err := <-served:
			assert.ErrorIs(t, err, net.ErrClosed)
		case <-time.After(testTimeout):
			require.FailNow(t, "http.Serve did not return after Close")
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		bad := *proxyURL
		bad.User = url.UserPassword(TestUser, "wrong-"+TestPassword)
		t.Setenv("ALL_PROXY", bad.String())
		ln, err := proxyext.Listen(testContext(t), "tcp", ":0")
		assert.Nil(t, ln)
		require.ErrorIs(t, err, socksbind.ErrAuthRejected)
		assert.NotContains(t, err.Error(), "wrong-"+TestPassword, "no password in the error")
	})
}
