package proxyext

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/internal/udptest"
	"github.com/socksbind/socksbind/socks5test"
)

// udpServer starts a socks5test server with UDP ASSOCIATE and UDP-TUN
// (assoc false: UDP-TUN only).
func udpServer(t *testing.T, assoc bool) *socks5test.Server {
	t.Helper()
	return testkit.Proxy(t, func(srv *socks5test.Server) { srv.UDP, srv.UDPTun = assoc, true })
}

// echoThrough sends a datagram to an echo server through pc and checks
// the answer.
func echoThrough(t *testing.T, pc net.PacketConn) {
	t.Helper()
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	require.NoError(t, pc.SetReadDeadline(time.Now().Add(testTimeout)))
	_, err := pc.WriteTo([]byte("ping"), net.UDPAddrFromAddrPort(echo))
	require.NoError(t, err)
	buf := make([]byte, 10)
	n, from, err := pc.ReadFrom(buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf[:n]))
	assert.Equal(t, echo.String(), from.String())
}

func TestFromURLListenPacket(t *testing.T) {
	for _, tt := range []struct {
		query string
		assoc bool // the server has UDP ASSOCIATE
		want  socksbind.UDPMode
	}{
		{"", true, socksbind.UDPAssociate},
		{"udp=tun", true, socksbind.UDPTunnel},
		{"udp=auto", true, socksbind.UDPAssociate},
		{"udp=auto", false, socksbind.UDPTunnel},
	} {
		t.Run(tt.query, func(t *testing.T) {
			leakcheck.Check(t)
			srv := udpServer(t, tt.assoc)
			d, err := FromURL(&url.URL{Scheme: "socks5h", Host: srv.Addr(), RawQuery: tt.query}, nil)
			require.NoError(t, err)
			pl, ok := d.(PacketListener)
			require.True(t, ok)
			pc, err := pl.ListenPacket(context.Background(), "udp", "")
			require.NoError(t, err)
			defer pc.Close()
			assert.Equal(t, tt.want, pc.(*socksbind.PacketConn).Mode())
			echoThrough(t, pc)
		})
	}
}

func TestFromURLUDPBadQuery(t *testing.T) {
	for _, q := range []string{"udp=associate", "udp=TUN", "udp=tun&udp=tun", "udp="} {
		_, err := FromURL(&url.URL{Scheme: "socks5", Host: "127.0.0.1:1080", RawQuery: q}, nil)
		require.Error(t, err, q)
		assert.Contains(t, err.Error(), "udp", q)
	}
}

func TestFromURLDialUDP(t *testing.T) {
	leakcheck.Check(t)
	srv := udpServer(t, true)
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	d, err := FromURL(&url.URL{Scheme: "socks5h", Host: srv.Addr()}, nil)
	require.NoError(t, err)
	c, err := d.Dial("udp", echo.String())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	_, err = c.Write([]byte("hi"))
	require.NoError(t, err)
	buf := make([]byte, 10)
	n, err := c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(buf[:n]))
}

func TestListenPacket(t *testing.T) {
	t.Run("unset", func(t *testing.T) {
		leakcheck.Check(t)
		clearEnv(t)
		pc, err := ListenPacket(context.Background(), "udp", "127.0.0.1:0")
		require.NoError(t, err)
		defer pc.Close()
		_, ok := pc.(*net.UDPConn)
		assert.True(t, ok, "%T", pc)
	})
	t.Run("unset, no fallback", func(t *testing.T) {
		clearEnv(t)
		_, err := ListenPacketProxy(context.Background(), "udp", "")
		require.ErrorIs(t, err, socksbind.ErrNoProxy)
		var oe *net.OpError
		assert.ErrorAs(t, err, &oe)
	})
	t.Run("socks5h", func(t *testing.T) {
		leakcheck.Check(t)
		clearEnv(t)
		srv := udpServer(t, true)
		t.Setenv("ALL_PROXY", "socks5h://"+srv.Addr()+"?udp=tun")
		t.Setenv("NO_PROXY", "*") // does not apply
		for _, listen := range []func(context.Context, string, string) (net.PacketConn, error){ListenPacket, ListenPacketProxy} {
			pc, err := listen(context.Background(), "udp", "")
			require.NoError(t, err)
			assert.Equal(t, socksbind.UDPTunnel, pc.(*socksbind.PacketConn).Mode())
			echoThrough(t, pc)
			pc.Close()
		}
	})
	t.Run("refused names the variable", func(t *testing.T) {
		leakcheck.Check(t)
		clearEnv(t)
		srv := socks5test.NewServer() // no UDP: reply 7
		t.Cleanup(srv.Close)
		t.Setenv("ALL_PROXY", "socks5h://user:"+secret+"@"+srv.Addr())
		_, err := ListenPacket(context.Background(), "udp", "")
		require.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
		assert.Contains(t, err.Error(), "ALL_PROXY")
		assertNoSecret(t, secret, err)
	})
	t.Run("http", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("ALL_PROXY", "http://user:"+secret+"@127.0.0.1:9")
		_, err := ListenPacket(context.Background(), "udp", "")
		require.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
		assert.Contains(t, err.Error(), "cannot relay UDP")
		assertNoSecret(t, secret, err)
	})
}
