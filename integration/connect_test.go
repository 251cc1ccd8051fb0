package integration

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/testkit"
)

// TestConnectDante runs CONNECT through Dante to IPv4, IPv6 and domain
// targets, reaching Dante over IPv4 and IPv6.
func TestConnectDante(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{IPv6: true})
	// "localhost" may resolve to 127.0.0.1 or ::1: the IPv4 target
	// listens on both.
	echo4 := startEchoBoth(t)
	echo6 := testkit.Echo(t, "tcp6")

	for _, tc := range []struct {
		name    string
		proxy   string
		network string
		target  string
		addr    netip.AddrPort  // the target's own address
		peers   <-chan net.Addr // where the target reports its peers
	}{
		{"IPv4", dante.Addr, "tcp", echo4.addr.String(), echo4.addr, echo4.peers},
		{"IPv4Only", dante.Addr, "tcp4", echo4.addr.String(), echo4.addr, echo4.peers},
		{"IPv6", dante.Addr, "tcp6", echo6.Addr().String(), netutil.AddrPort(echo6.Addr()), echo6.Peers},
		{"ProxyOverIPv6", dante.Addr6, "tcp", echo4.addr.String(), echo4.addr, echo4.peers},
		{"Domain", dante.Addr, "tcp", fmt.Sprintf("localhost:%d", echo4.addr.Port()), echo4.addr, echo4.peers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDialer(t, tc.proxy, nil, nil)
			c, err := d.DialContext(testContext(t), tc.network, tc.target)
			require.NoError(t, err)
			defer c.Close()
			sc := asConn(t, c)

			msg := "hello over " + tc.name
			assert.Equal(t, msg, roundTrip(t, sc, msg), "echo, after a half-close")

			// Dante reports the address of its own socket to the target:
			// the address the target sees the connection coming from.
			seen := nextPeer(t, tc.peers)
			assert.Equal(t, seen, netutil.AddrPort(sc.LocalAddr()), "LocalAddr is the proxy's outgoing address")
			assert.Equal(t, tc.target, sc.RemoteAddr().String(), "RemoteAddr is the target as given")
			if tc.name == "Domain" {
				// The name went to the proxy: nothing resolved it here.
				_, isIP := sc.RemoteAddr().(*net.TCPAddr)
				assert.False(t, isIP, "RemoteAddr of a name target is %T", sc.RemoteAddr())
				assert.True(t, seen.Addr().IsLoopback(), "Dante resolved the name to %v", seen.Addr())
			} else {
				assert.Equal(t, tc.addr.Addr(), seen.Addr(), "Dante leaves from the external address of the target's family")
			}
			assert.Equal(t, tc.proxy, sc.NetConn().RemoteAddr().String(), "the relay runs over the connection to the proxy")
		})
	}
}

// TestConnectDanteRefused checks that a target port where nothing listens
// gives reply 5, as ErrConnectionRefused and ECONNREFUSED.
func TestConnectDanteRefused(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{})
	port := refusedPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	d := newDialer(t, dante.Addr, nil, nil)
	c, err := d.DialContext(testContext(t), "tcp", addr)
	assert.Nil(t, c)
	re := requireReplyError(t, err, "socks connect", socksbind.CmdConnect, socksbind.ReplyConnectionRefused,
		socksbind.ErrConnectionRefused, syscall.ECONNREFUSED)
	assert.NotErrorIs(t, err, socksbind.ErrNotAllowed)
	t.Logf("Dante's refusal reply carried %v", re.Addr)

	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, addr, oe.Addr.String(), "OpError.Addr is the target")
	assert.Equal(t, dante.Addr, oe.Source.String(), "OpError.Source is the proxy")
}

// TestConnectDanteNotAllowed checks that Dante's deny rule for one port gives
// reply 2, as ErrNotAllowed and EACCES, without reaching the target, while
// another port still works.
func TestConnectDanteNotAllowed(t *testing.T) {
	leakcheck.Check(t)
	blocked := testkit.Echo(t, "tcp4")
	allowed := testkit.Echo(t, "tcp4")
	dante := startDante(t, DanteConfig{BlockConnectPort: blocked.Port()})
	d := newDialer(t, dante.Addr, nil, nil)

	c, err := d.DialContext(testContext(t), "tcp", blocked.Addr().String())
	assert.Nil(t, c)
	requireReplyError(t, err, "socks connect", socksbind.CmdConnect, socksbind.ReplyNotAllowed,
		socksbind.ErrNotAllowed, syscall.EACCES)
	assert.NotErrorIs(t, err, socksbind.ErrConnectionRefused)

	c, err = d.DialContext(testContext(t), "tcp", allowed.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "allowed", roundTrip(t, asConn(t, c), "allowed"))
	assert.Empty(t, blocked.Peers, "the blocked target was never connected to")
}

// TestConnectDanteCredentials checks RFC 1929 against Dante's username
// method: the right password works, a wrong one is ErrAuthRejected, and no
// credentials at all is ErrNoAcceptableAuth.
func TestConnectDanteCredentials(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{Username: true})
	echo := testkit.Echo(t, "tcp4")

	t.Run("Good", func(t *testing.T) {
		d := newDialer(t, dante.Addr, &proxy.Auth{User: TestUser, Password: TestPassword}, nil)
		c, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, "authenticated", roundTrip(t, asConn(t, c), "authenticated"))
	})

	t.Run("BadPassword", func(t *testing.T) {
		d := newDialer(t, dante.Addr, &proxy.Auth{User: TestUser, Password: "wrong-" + TestPassword}, nil)
		c, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		assert.Nil(t, c)
		require.ErrorIs(t, err, socksbind.ErrAuthRejected)
		var oe *net.OpError
		require.ErrorAs(t, err, &oe)
		assert.Equal(t, "socks connect", oe.Op)
		var re *socksbind.ReplyError
		assert.NotErrorAs(t, err, &re, "a rejected login is not a reply")
		assert.NotContains(t, err.Error(), TestPassword, "the password stays out of the error")
	})

	t.Run("BadUser", func(t *testing.T) {
		d := newDialer(t, dante.Addr, &proxy.Auth{User: "nosuchuser", Password: TestPassword}, nil)
		_, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.ErrorIs(t, err, socksbind.ErrAuthRejected)
	})

	t.Run("NoCredentials", func(t *testing.T) {
		d := newDialer(t, dante.Addr, nil, nil)
		_, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.ErrorIs(t, err, socksbind.ErrNoAcceptableAuth)
		assert.NotErrorIs(t, err, socksbind.ErrAuthRejected)
	})

	t.Run("BindWithCredentials", func(t *testing.T) {
		d := newDialer(t, dante.Addr, &proxy.Auth{User: TestUser, Password: TestPassword}, nil)
		ln, err := d.Listen(testContext(t), "tcp", ":0")
		require.NoError(t, err)
		defer ln.Close()
		peer := dialPeer(t, "127.0.0.1", ln.Addr())
		c, err := ln.Accept()
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, netutil.AddrPort(peer.LocalAddr()), netutil.AddrPort(c.RemoteAddr()))
	})
}

// TestConnectInterop is the baseline: golang.org/x/net/proxy's SOCKS5
// client and this library CONNECT through the same Dante to the same target
// in one test, so that a failure on our side alone is told apart from a
// change of the server.
func TestConnectInterop(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{})
	echo := testkit.Echo(t, "tcp4")
	refused := fmt.Sprintf("127.0.0.1:%d", refusedPort(t))

	xd, err := proxy.SOCKS5("tcp", dante.Addr, nil, proxy.Direct)
	require.NoError(t, err)
	ours := newDialer(t, dante.Addr, nil, nil)

	for _, tc := range []struct {
		name string
		d    proxy.ContextDialer
	}{
		{"XNetProxy", xd.(proxy.ContextDialer)},
		{"Socksbind", ours},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.d.DialContext(testContext(t), "tcp", echo.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			msg := "baseline through " + tc.name
			assert.Equal(t, msg, exchange(t, c, msg))
			assert.Equal(t, netip.MustParseAddr("127.0.0.1"), nextPeer(t, echo.Peers).Addr())

			_, err = tc.d.DialContext(testContext(t), "tcp", refused)
			require.Error(t, err, "CONNECT to a closed port")
			assert.Contains(t, err.Error(), "refused")
		})
	}
	_, err = ours.DialContext(testContext(t), "tcp", refused)
	assert.ErrorIs(t, err, socksbind.ErrConnectionRefused)
}

// TestMicrosocks checks the CONNECT-only server: BIND is answered promptly
// with reply 7, CONNECT works with the default settings, and credentials are
// checked.
func TestMicrosocks(t *testing.T) {
	leakcheck.Check(t)
	echo := testkit.Echo(t, "tcp4")

	t.Run("NoAuth", func(t *testing.T) {
		ms := startMicrosocks(t, "", "")
		d := newDialer(t, ms.Addr, nil, nil)

		began := time.Now()
		ln, err := d.Listen(testContext(t), "tcp", ":0")
		assert.Less(t, time.Since(began), 2*time.Second, "the refusal comes at once")
		assert.Nil(t, ln)
		requireReplyError(t, err, "socks bind", socksbind.CmdBind, socksbind.ReplyCommandNotSupported,
			socksbind.ErrCommandNotSupported, syscall.EOPNOTSUPP)

		c, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		sc := asConn(t, c)
		// microsocks does not relay a half-close: on the client's EOF it
		// closes both directions, so the echo is read before.
		assert.Equal(t, "via microsocks", exchange(t, sc, "via microsocks"))
		assert.Equal(t, echo.Addr().String(), sc.RemoteAddr().String())
		// microsocks reports 0.0.0.0:0 as the bound address of every
		// CONNECT.
		assert.Equal(t, netip.MustParseAddrPort("0.0.0.0:0"), netutil.AddrPort(sc.LocalAddr()))
		assert.Equal(t, netip.MustParseAddr("127.0.0.1"), nextPeer(t, echo.Peers).Addr())

		refused := fmt.Sprintf("127.0.0.1:%d", refusedPort(t))
		_, err = d.DialContext(testContext(t), "tcp", refused)
		requireReplyError(t, err, "socks connect", socksbind.CmdConnect, socksbind.ReplyConnectionRefused,
			socksbind.ErrConnectionRefused, syscall.ECONNREFUSED)
	})

	t.Run("Username", func(t *testing.T) {
		ms := startMicrosocks(t, "alice", "secret")

		d := newDialer(t, ms.Addr, &proxy.Auth{User: "alice", Password: "secret"}, nil)
		c, err := d.DialContext(testContext(t), "tcp", echo.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, "alice was here", exchange(t, c, "alice was here"))

		d = newDialer(t, ms.Addr, &proxy.Auth{User: "alice", Password: "wrong"}, nil)
		_, err = d.DialContext(testContext(t), "tcp", echo.Addr().String())
		assert.ErrorIs(t, err, socksbind.ErrAuthRejected)
	})
}
