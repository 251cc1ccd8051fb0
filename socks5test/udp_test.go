package socks5test_test

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/internal/udptest"
	"github.com/socksbind/socksbind/socks5test"
)

// udpSocket is a client UDP socket on 127.0.0.1, closed at the end of the
// test.
func udpSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// datagram is a datagram to or from a, with the RFC 1928 header.
func datagram(t *testing.T, a netip.AddrPort, data string) []byte {
	t.Helper()
	return append(srvwire.AppendUDPHeader(nil, socksbind.Addr{IP: a.Addr(), Port: a.Port()}), data...)
}

// readDatagram reads a datagram from c within a short wait; ok is false
// when none came.
func readDatagram(t *testing.T, c *net.UDPConn, wait time.Duration) (b []byte, from netip.AddrPort, ok bool) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(wait)))
	buf := make([]byte, 65536)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, from, false
	}
	require.NoError(t, err)
	return buf[:n], from, true
}

func TestUDPAssociate(t *testing.T) {
	srv := testkit.Proxy(t, func(s *socks5test.Server) { s.UDP = true })
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	client := udpSocket(t)
	local := client.LocalAddr().(*net.UDPAddr).AddrPort()

	ctrl, rep, relay := request(t, srv, socksbind.CmdUDPAssociate, addr(netip.IPv4Unspecified(), local.Port()))
	require.Equal(t, socksbind.ReplySucceeded, rep)
	require.Equal(t, "127.0.0.1", relay.IP.String())
	relayAP := netip.AddrPortFrom(relay.IP, relay.Port)

	_, err := client.WriteToUDPAddrPort(datagram(t, echo, "hello"), relayAP)
	require.NoError(t, err)
	b, from, ok := readDatagram(t, client, testTimeout)
	require.True(t, ok)
	assert.Equal(t, relayAP, from, "from the relay")
	assert.Equal(t, datagram(t, echo, "hello"), b, "the echo's address in the header")

	// The relay drops what it cannot relay as it is, and what comes from
	// another socket than the declared one.
	bad := datagram(t, echo, "fragment")
	bad[2] = 1
	client.WriteToUDPAddrPort(bad, relayAP)
	bad = datagram(t, echo, "reserved")
	bad[0] = 1
	client.WriteToUDPAddrPort(bad, relayAP)
	udpSocket(t).WriteToUDPAddrPort(datagram(t, echo, "stranger"), relayAP)
	client.WriteToUDPAddrPort(datagram(t, echo, "last"), relayAP)
	b, _, ok = readDatagram(t, client, testTimeout)
	require.True(t, ok)
	assert.Equal(t, datagram(t, echo, "last"), b)
	_, _, ok = readDatagram(t, client, 50*time.Millisecond)
	assert.False(t, ok, "nothing else came back")

	// The association ends with the control connection: the relay's
	// socket closes, and the kernel refuses what is sent to it.
	ctrl.Close()
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(relayAP))
	require.NoError(t, err)
	defer conn.Close()
	testkit.Eventually(t, testTimeout, func() bool {
		conn.Write([]byte("x"))
		conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := conn.Read(make([]byte, 10))
		return errors.Is(err, syscall.ECONNREFUSED)
	}, "the relay's socket did not close with the control connection")
}

// With port 0 declared, the first datagram from the control connection's
// IP names the client.
func TestUDPAssociateLearnsClient(t *testing.T) {
	srv := testkit.Proxy(t, func(s *socks5test.Server) { s.UDP = true; s.ReportUnspecified = true })
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	_, rep, relay := request(t, srv, socksbind.CmdUDPAssociate, addr(netip.IPv4Unspecified(), 0))
	require.Equal(t, socksbind.ReplySucceeded, rep)
	assert.True(t, relay.IP.IsUnspecified(), "ReportUnspecified")
	relayAP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), relay.Port)
	first, second := udpSocket(t), udpSocket(t)
	first.WriteToUDPAddrPort(datagram(t, echo, "first"), relayAP)
	_, _, ok := readDatagram(t, first, testTimeout)
	require.True(t, ok)
	second.WriteToUDPAddrPort(datagram(t, echo, "second"), relayAP)
	_, _, ok = readDatagram(t, second, 50*time.Millisecond)
	assert.False(t, ok, "a second socket is not the client")
}

func TestUDPTun(t *testing.T) {
	srv := testkit.Proxy(t, func(s *socks5test.Server) { s.UDPTun = true })
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	ctrl, rep, bnd := request(t, srv, socks5test.CmdUDPTun, addr(netip.IPv4Unspecified(), 0))
	require.Equal(t, socksbind.ReplySucceeded, rep)
	assert.True(t, bnd.IP.IsUnspecified(), "GOST's reply: 0.0.0.0 and a port")
	f, err := srvwire.AppendTunHeader(nil, 5, socksbind.Addr{IP: echo.Addr(), Port: echo.Port()})
	require.NoError(t, err)
	_, err = ctrl.Write(append(f, "hello"...))
	require.NoError(t, err)
	src, data, err := srvwire.ReadTunFrame(bufio.NewReader(ctrl), make([]byte, srvwire.MaxTunData))
	require.NoError(t, err)
	assert.Equal(t, "hello", string(data))
	assert.Equal(t, echo, netip.AddrPortFrom(src.IP, src.Port))

	// A non-zero port asks for GOST's UDP BIND, which the server refuses.
	_, rep, _ = request(t, srv, socks5test.CmdUDPTun, addr(netip.IPv4Unspecified(), 5353))
	assert.Equal(t, socksbind.ReplyNotAllowed, rep)
}

func TestUDPTunOff(t *testing.T) {
	srv := testkit.Proxy(t, nil)
	c := open(t, srv)
	sendRequest(t, c, socks5test.CmdUDPTun, addr(netip.IPv4Unspecified(), 0))
	expectEOF(t, c)
}
