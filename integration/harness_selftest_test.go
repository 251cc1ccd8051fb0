package integration

// Tests of the harness itself: each server is driven with raw SOCKS5 and HTTP
// bytes, independent of the library, to show it starts, is configured as
// DanteConfig says, and is gone after the test.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/testkit"
)

// rawTimeout bounds every raw exchange, so a misbehaving server fails the test
// instead of hanging it.
const rawTimeout = 10 * time.Second

var (
	greetingNoAuth   = []byte{0x05, 0x01, 0x00}
	greetingUsername = []byte{0x05, 0x01, 0x02}
	bindAnyIPv4      = []byte{0x05, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0}
)

// rawDial connects to addr with a deadline on the whole exchange.
func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, rawTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(rawTimeout)))
	return c
}

func rawWrite(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	_, err := c.Write(b)
	require.NoError(t, err)
}

func rawRead(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	require.NoError(t, err)
	return b
}

// rawReply reads one SOCKS5 reply to its exact length and returns the reply
// code and the address it carries.
func rawReply(t *testing.T, r io.Reader) (byte, netip.AddrPort) {
	t.Helper()
	head := rawRead(t, r, 4)
	require.Equal(t, byte(0x05), head[0], "reply version")
	var ip netip.Addr
	switch head[3] {
	case 0x01:
		ip = netip.AddrFrom4([4]byte(rawRead(t, r, 4)))
	case 0x04:
		ip = netip.AddrFrom16([16]byte(rawRead(t, r, 16)))
	default:
		require.Failf(t, "unexpected address type", "%#x in reply %x", head[3], head)
	}
	port := binary.BigEndian.Uint16(rawRead(t, r, 2))
	return head[1], netip.AddrPortFrom(ip, port)
}

// rawRequest encodes a SOCKS5 request for cmd to ap.
func rawRequest(cmd byte, ap netip.AddrPort) []byte {
	b := []byte{0x05, cmd, 0x00}
	if ap.Addr().Is4() {
		b = append(b, 0x01)
	} else {
		b = append(b, 0x04)
	}
	b = append(b, ap.Addr().AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// rawGreet sends a no-auth greeting and checks that it is accepted.
func rawGreet(t *testing.T, c net.Conn) {
	t.Helper()
	rawWrite(t, c, greetingNoAuth)
	assert.Equal(t, []byte{0x05, 0x00}, rawRead(t, c, 2), "greeting answer")
}

// rawLogin offers username/password and returns the RFC 1929 status.
func rawLogin(t *testing.T, addr, user, pass string) byte {
	t.Helper()
	c := rawDial(t, addr)
	rawWrite(t, c, greetingUsername)
	require.Equal(t, []byte{0x05, 0x02}, rawRead(t, c, 2), "server must pick username/password")
	msg := []byte{0x01, byte(len(user))}
	msg = append(msg, user...)
	msg = append(msg, byte(len(pass)))
	msg = append(msg, pass...)
	rawWrite(t, c, msg)
	ans := rawRead(t, c, 2)
	require.Equal(t, byte(0x01), ans[0], "auth answer version")
	return ans[1]
}

// rawConnect greets the server at addr without authentication, sends
// CONNECT for target and returns the connection and the reply.
func rawConnect(t *testing.T, addr string, target netip.AddrPort) (net.Conn, byte, netip.AddrPort) {
	t.Helper()
	c := rawDial(t, addr)
	rawGreet(t, c)
	rawWrite(t, c, rawRequest(0x01, target))
	rep, bnd := rawReply(t, c)
	return c, rep, bnd
}

// rawConnectEcho connects through the server at addr to a new echo server,
// checks that "ping" comes back, and returns the address the CONNECT reply
// carried.
func rawConnectEcho(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	c, rep, bnd := rawConnect(t, addr, echoAddr(t))
	require.Equal(t, byte(0x00), rep, "CONNECT reply")
	rawWrite(t, c, []byte("ping"))
	assert.Equal(t, []byte("ping"), rawRead(t, c, 4))
	return bnd
}

// echoAddr starts an echo server on 127.0.0.1 and returns its address.
func echoAddr(t *testing.T) netip.AddrPort {
	return testkit.Echo(t, "tcp4").Addr().(*net.TCPAddr).AddrPort()
}

// rawBind sends BIND for 0.0.0.0:0 on a fresh connection and returns the
// connection and reply 1.
func rawBind(t *testing.T, addr string) (net.Conn, byte, netip.AddrPort) {
	t.Helper()
	c := rawDial(t, addr)
	rawGreet(t, c)
	rawWrite(t, c, bindAnyIPv4)
	rep, bnd := rawReply(t, c)
	return c, rep, bnd
}

// dialFrom connects to ap from the loopback address src.
func dialFrom(t *testing.T, src string, ap netip.AddrPort) net.Conn {
	t.Helper()
	d := net.Dialer{
		Timeout:   rawTimeout,
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)},
	}
	c, err := d.Dial("tcp", ap.String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(rawTimeout)))
	return c
}

// rawPeer connects a peer from the loopback address src to bnd, the address
// a BIND on c is bound to, reads reply 2 on c and checks that it names the
// peer. It returns the peer and the reply code.
func rawPeer(t *testing.T, c net.Conn, src string, bnd netip.AddrPort) (net.Conn, byte) {
	t.Helper()
	peer := dialFrom(t, src, bnd)
	rep, from := rawReply(t, c)
	assert.Equal(t, peer.LocalAddr().(*net.TCPAddr).AddrPort(), from, "reply 2 carries the peer")
	return peer, rep
}

// rawBindPeer sends BIND for 0.0.0.0:0 to the server at addr, requires
// reply 1 to succeed and runs rawPeer. It returns the control connection,
// the bound address, the peer and the code of reply 2.
func rawBindPeer(t *testing.T, addr, src string) (net.Conn, netip.AddrPort, net.Conn, byte) {
	t.Helper()
	c, rep, bnd := rawBind(t, addr)
	require.Equal(t, byte(0x00), rep, "reply 1")
	peer, rep := rawPeer(t, c, src, bnd)
	return c, bnd, peer, rep
}

func TestHarnessDante(t *testing.T) {
	s := startDante(t, DanteConfig{})
	assert.Equal(t, "danted", s.Name)
	assert.Equal(t, "127.0.0.1:"+strconv.Itoa(s.Port), s.Addr)
	assert.Empty(t, s.Addr6)

	t.Run("Greeting", func(t *testing.T) {
		c := rawDial(t, s.Addr)
		rawWrite(t, c, greetingNoAuth)
		assert.Equal(t, []byte{0x05, 0x00}, rawRead(t, c, 2))
	})

	t.Run("Connect", func(t *testing.T) {
		bnd := rawConnectEcho(t, s.Addr)
		assert.Equal(t, netip.MustParseAddr("127.0.0.1"), bnd.Addr())
	})

	t.Run("Bind", func(t *testing.T) {
		c, bnd, peer, rep := rawBindPeer(t, s.Addr, "127.0.0.1")
		require.Equal(t, netip.MustParseAddr("127.0.0.1"), bnd.Addr())
		require.NotZero(t, bnd.Port())
		require.Equal(t, byte(0x00), rep, "reply 2")

		rawWrite(t, peer, []byte("from peer"))
		assert.Equal(t, []byte("from peer"), rawRead(t, c, 9))
		rawWrite(t, c, []byte("to peer"))
		assert.Equal(t, []byte("to peer"), rawRead(t, peer, 7))
	})
}

func TestHarnessDanteBlockBind(t *testing.T) {
	s := startDante(t, DanteConfig{BlockBind: true})
	c, rep, _ := rawBind(t, s.Addr)
	assert.Equal(t, byte(0x02), rep, "reply 1 of a blocked BIND")
	_, err := c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the server closes after refusing")
}

func TestHarnessDanteBlockBindReplyFrom(t *testing.T) {
	s := startDante(t, DanteConfig{BlockBindReplyFrom: "127.0.0.2/32"})

	t.Run("Blocked", func(t *testing.T) {
		_, _, _, rep := rawBindPeer(t, s.Addr, "127.0.0.2")
		assert.Equal(t, byte(0x02), rep, "reply 2 for a blocked peer")
	})

	t.Run("Allowed", func(t *testing.T) {
		_, _, _, rep := rawBindPeer(t, s.Addr, "127.0.0.1")
		assert.Equal(t, byte(0x00), rep, "reply 2 for another peer")
	})
}

func TestHarnessDanteBlockConnectPort(t *testing.T) {
	blocked := echoAddr(t)
	s := startDante(t, DanteConfig{BlockConnectPort: int(blocked.Port())})

	_, rep, _ := rawConnect(t, s.Addr, blocked)
	assert.Equal(t, byte(0x02), rep, "CONNECT to the blocked port")
	_, rep, _ = rawConnect(t, s.Addr, echoAddr(t))
	assert.Equal(t, byte(0x00), rep, "CONNECT to another port")
}

func TestHarnessDanteUsername(t *testing.T) {
	s := startDante(t, DanteConfig{Username: true})

	assert.Equal(t, byte(0x00), rawLogin(t, s.Addr, TestUser, TestPassword), "right password")
	assert.NotEqual(t, byte(0x00), rawLogin(t, s.Addr, TestUser, "wrong-"+TestPassword), "wrong password")

	c := rawDial(t, s.Addr)
	rawWrite(t, c, greetingNoAuth)
	assert.Equal(t, []byte{0x05, 0xff}, rawRead(t, c, 2), "no acceptable method without username")
}

func TestHarnessDanteIPv6(t *testing.T) {
	s := startDante(t, DanteConfig{IPv6: true})
	require.Equal(t, "[::1]:"+strconv.Itoa(s.Port), s.Addr6)

	c := rawDial(t, s.Addr6)
	rawGreet(t, c)
	rawWrite(t, c, rawRequest(0x02, netip.MustParseAddrPort("[::1]:0")))
	rep, bnd := rawReply(t, c)
	require.Equal(t, byte(0x00), rep, "reply 1")
	require.Equal(t, netip.IPv6Loopback(), bnd.Addr())

	_, rep = rawPeer(t, c, "::1", bnd)
	assert.Equal(t, byte(0x00), rep, "reply 2")

	// The IPv4 side stays up as well.
	c4 := rawDial(t, s.Addr)
	rawGreet(t, c4)
}

func TestHarnessMicrosocks(t *testing.T) {
	t.Run("NoAuth", func(t *testing.T) {
		s := startMicrosocks(t, "", "")
		assert.Equal(t, "microsocks", s.Name)

		_, rep, _ := rawBind(t, s.Addr)
		assert.Equal(t, byte(0x07), rep, "BIND is not supported")

		rawConnectEcho(t, s.Addr)
	})

	t.Run("Username", func(t *testing.T) {
		s := startMicrosocks(t, "alice", "secret")
		assert.Equal(t, byte(0x00), rawLogin(t, s.Addr, "alice", "secret"), "right password")
		assert.NotEqual(t, byte(0x00), rawLogin(t, s.Addr, "alice", "wrong"), "wrong password")
	})
}

func TestHarnessTinyproxy(t *testing.T) {
	dante := startDante(t, DanteConfig{})
	s := startTinyproxy(t)
	assert.Equal(t, "tinyproxy", s.Name)

	c := rawDial(t, s.Addr)
	rawWrite(t, c, []byte("CONNECT "+dante.Addr+" HTTP/1.1\r\nHost: "+dante.Addr+"\r\n\r\n"))
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Regexp(t, `^HTTP/1\.[01] 200 `, status)
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if line == "\r\n" {
			break
		}
	}
	require.Zero(t, br.Buffered(), "no bytes after the CONNECT response")

	// A whole BIND through the tunnel.
	rawGreet(t, c)
	rawWrite(t, c, bindAnyIPv4)
	rep, bnd := rawReply(t, c)
	require.Equal(t, byte(0x00), rep, "reply 1 through the tunnel")
	_, rep = rawPeer(t, c, "127.0.0.1", bnd)
	assert.Equal(t, byte(0x00), rep, "reply 2 through the tunnel")
}

func TestHarnessGost(t *testing.T) {
	t.Run("NoAuth", func(t *testing.T) {
		s := startGost(t, GostConfig{})
		assert.Equal(t, "gost", s.Name)
		assert.Equal(t, "127.0.0.1:"+strconv.Itoa(s.Port), s.Addr)

		rawConnectEcho(t, s.Addr)

		// bind=true allows BIND.
		_, bnd, _, rep := rawBindPeer(t, s.Addr, "127.0.0.1")
		require.Equal(t, netip.MustParseAddr("127.0.0.1"), bnd.Addr())
		require.NotZero(t, bnd.Port())
		require.Equal(t, byte(0x00), rep, "reply 2")
	})

	t.Run("Username", func(t *testing.T) {
		s := startGost(t, GostConfig{User: "alice", Password: "s3cret:@/?"})
		assert.Equal(t, byte(0x00), rawLogin(t, s.Addr, "alice", "s3cret:@/?"), "right password")
		assert.NotEqual(t, byte(0x00), rawLogin(t, s.Addr, "alice", "wrong"), "wrong password")

		c := rawDial(t, s.Addr)
		rawWrite(t, c, greetingNoAuth)
		assert.Equal(t, []byte{0x05, 0xff}, rawRead(t, c, 2), "no acceptable method without username")
	})

	t.Run("NoBind", func(t *testing.T) {
		s := startGost(t, GostConfig{NoBind: true})
		c, rep, _ := rawBind(t, s.Addr)
		assert.Equal(t, byte(0x02), rep, "reply 1 of a BIND without bind=true")
		_, err := c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "the server closes after refusing")
	})
}

// TestHarnessGostURL checks the service URLs startGost passes to gost -L.
func TestHarnessGostURL(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  GostConfig
		want string
	}{
		{"Default", GostConfig{}, "socks5://127.0.0.1:1080?bind=true"},
		{"Username", GostConfig{User: "alice", Password: "s3cret:@/?"},
			"socks5://alice:s3cret%3A%40%2F%3F@127.0.0.1:1080?bind=true"},
		{"NoBind", GostConfig{NoBind: true}, "socks5://127.0.0.1:1080"},
		{"Metadata", GostConfig{Metadata: map[string]string{"comp": "true", "mux.version": "2"}},
			"socks5://127.0.0.1:1080?bind=true&comp=true&mux.version=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, gostURL(tc.cfg, 1080))
		})
	}
}

// TestHarnessCleanup checks that a server and every process it forked are gone
// once the test that started it has finished, and that its log is still
// readable at cleanup time.
func TestHarnessCleanup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) *Server
	}{
		{"danted", func(t *testing.T) *Server { return startDante(t, DanteConfig{IPv6: true}) }},
		{"microsocks", func(t *testing.T) *Server { return startMicrosocks(t, "", "") }},
		{"tinyproxy", startTinyproxy},
		{"gost", func(t *testing.T) *Server { return startGost(t, GostConfig{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				s       *Server
				members []int
			)
			t.Run("Run", func(t *testing.T) {
				s = tc.start(t)
				// Something in the log for a failing test to show.
				c := rawDial(t, s.Addr)
				_ = c.Close()
				members = liveGroupMembers(s.pid)
				require.Contains(t, members, s.pid)
				assert.True(t, processAlive(s.pid))
			})
			if s == nil {
				return // skipped
			}
			for _, pid := range members {
				assert.False(t, processAlive(pid), "process %d of %s outlived its test", pid, tc.name)
			}
			assert.Empty(t, liveGroupMembers(s.pid), "process group of %s", tc.name)
			select {
			case <-s.exited:
			default:
				assert.Fail(t, "server not reaped", tc.name)
			}
			_, err := net.DialTimeout("tcp", s.Addr, time.Second)
			assert.Error(t, err, "%s still accepting on %s", tc.name, s.Addr)
			assert.NotEmpty(t, strings.TrimSpace(s.logText()), "captured log of %s", tc.name)
		})
	}
}

// TestHarnessTemplates renders the Dante template with every option and checks
// the rules the harness promises, in the order Dante needs.
func TestHarnessTemplates(t *testing.T) {
	tmpl := parseTemplate(t, "danted.conf.tmpl")
	var buf bytes.Buffer
	require.NoError(t, tmpl.Execute(&buf, danteTemplateData{
		DanteConfig: DanteConfig{
			Username:           true,
			IPv6:               true,
			BlockBind:          true,
			BlockBindReplyFrom: "127.0.0.2/32",
			BlockConnectPort:   4242,
		},
		Port: 1234,
		Root: true,
	}))
	conf := buf.String()
	for _, want := range []string{
		"logoutput: stderr",
		"internal: 127.0.0.1 port = 1234",
		"internal: ::1 port = 1234",
		"external: 127.0.0.1",
		"external: ::1",
		"socksmethod: username",
		"user.privileged: root",
		"user.unprivileged: nobody",
		"command: bind bindreply connect udpassociate udpreply",
	} {
		assert.Contains(t, conf, want)
	}
	pass := strings.Index(conf, "socks pass")
	for _, block := range []string{
		"command: bind\n",
		"from: 127.0.0.2/32 to: 0/0",
		"port = 4242",
	} {
		i := strings.Index(conf, block)
		if assert.GreaterOrEqual(t, i, 0, "missing %q", block) {
			assert.Less(t, i, pass, "%q must come before the pass rule", block)
		}
	}

	buf.Reset()
	require.NoError(t, tmpl.Execute(&buf, danteTemplateData{Port: 1234}))
	conf = buf.String()
	assert.Contains(t, conf, "socksmethod: none")
	assert.NotContains(t, conf, "::1")
	assert.NotContains(t, conf, "user.privileged")
	assert.NotContains(t, conf, "socks block")
}

// TestHarnessPortTaken shows that a start whose port was taken by another
// process in the meantime is retried on a new port, instead of handing the
// test a server address that some other process answers.
func TestHarnessPortTaken(t *testing.T) {
	requireTools(t, "microsocks")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	var attempts int
	s := start(t, "microsocks", readiness{socks: true}, func(attempt int) (int, []string) {
		attempts = attempt
		port := takenPort
		if attempt > 1 {
			port = freePort(t)
		}
		return port, []string{"-i", "127.0.0.1", "-p", strconv.Itoa(port)}
	})
	assert.Equal(t, 2, attempts)
	assert.NotEqual(t, takenPort, s.Port)
	assert.True(t, ownsListener(s.pid, s.Port))
	assert.False(t, ownsListener(s.pid, takenPort))

	c := rawDial(t, s.Addr)
	rawGreet(t, c)
}

// TestHarnessListenSockets checks the reading of /proc/net/tcp that tells
// which address a server listens on.
func TestHarnessListenSockets(t *testing.T) {
	for hexIP, want := range map[string]string{
		"0100007F":                         "127.0.0.1",
		"0200007F":                         "127.0.0.2",
		"00000000":                         "0.0.0.0",
		"00000000000000000000000001000000": "::1",
		"00000000000000000000000000000000": "::",
		"0000000000000000FFFF00000100007F": "127.0.0.1",
	} {
		assert.Equal(t, netip.MustParseAddr(want), procIP(hexIP), hexIP)
	}
	assert.False(t, procIP("zz").IsValid())

	ln, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	defer ln.Close()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	sockets, ok := listenSockets(int(ap.Port()))
	require.True(t, ok, "/proc/net/tcp is readable")
	assert.Contains(t, slices.Collect(maps.Values(sockets)), ap)
}
