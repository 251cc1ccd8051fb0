package socks5test_test

import (
	"io"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

func TestServerAddresses(t *testing.T) {
	srv := testkit.Proxy(t, nil)
	ap, err := netip.ParseAddrPort(srv.Addr())
	require.NoError(t, err)
	assert.Equal(t, ip4, ap.Addr())
	assert.NotZero(t, ap.Port())
	assert.Equal(t, "socks5://"+srv.Addr(), srv.URL)

	u, err := url.Parse(srv.URLWithUser("al ice", "p@ss:word"))
	require.NoError(t, err)
	assert.Equal(t, "socks5", u.Scheme)
	assert.Equal(t, srv.Addr(), u.Host)
	assert.Equal(t, "al ice", u.User.Username())
	pass, _ := u.User.Password()
	assert.Equal(t, "p@ss:word", pass)
}

func TestStartTwicePanics(t *testing.T) {
	srv := testkit.Proxy(t, nil)
	assert.Panics(t, srv.Start)
}

func TestCloseUnstarted(t *testing.T) {
	srv := socks5test.NewUnstartedServer()
	srv.Close()
	srv.Close()
	_, err := srv.Listener.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
}

// A Server may be made as a struct literal with a Listener, as an
// httptest.Server may.
func TestServerLiteral(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &socks5test.Server{Listener: ln}
	srv.Start()
	defer srv.Close()
	echo := testkit.Echo(t, "tcp4")
	c, rep, _ := request(t, srv, socksbind.CmdConnect, addr(ip4, uint16(echo.Port())))
	require.Equal(t, socksbind.ReplySucceeded, rep)
	echoed(t, c)

	ln, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := &socks5test.Server{Listener: ln}
	closed.Close()
	assert.Panics(t, closed.Start, "Start after Close")
}

func TestGreeting(t *testing.T) {
	t.Run("no acceptable method without users", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		c := dial(t, srv.Addr())
		assert.Equal(t, socksbind.AuthNoAcceptable, greet(t, c, socksbind.AuthMethod(1), socksbind.AuthUsernamePassword))
		expectEOF(t, c)
	})
	t.Run("no acceptable method with users", func(t *testing.T) {
		srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Users = map[string]string{"u": "p"} })
		c := dial(t, srv.Addr())
		assert.Equal(t, socksbind.AuthNoAcceptable, greet(t, c, socksbind.AuthNone))
		expectEOF(t, c)
	})
	t.Run("no methods at all", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		c := dial(t, srv.Addr())
		assert.Equal(t, socksbind.AuthNoAcceptable, greet(t, c))
		expectEOF(t, c)
	})
	t.Run("none chosen among several", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		c := dial(t, srv.Addr())
		assert.Equal(t, socksbind.AuthNone, greet(t, c, socksbind.AuthMethod(1), socksbind.AuthUsernamePassword, socksbind.AuthNone))
	})
}

func TestUserPass(t *testing.T) {
	users := map[string]string{"alice": "secret", "bob": "hunter2"}
	srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Users = users })
	echo := testkit.Echo(t, "tcp4")

	login := func(t *testing.T, user, pass string) (net.Conn, byte) {
		c := dial(t, srv.Addr())
		require.Equal(t, socksbind.AuthUsernamePassword, greet(t, c, socksbind.AuthNone, socksbind.AuthUsernamePassword))
		b := append([]byte{srvwire.UserPassVersion, byte(len(user))}, user...)
		_, err := c.Write(append(append(b, byte(len(pass))), pass...))
		require.NoError(t, err)
		status, err := readPair(c, srvwire.UserPassVersion)
		require.NoError(t, err)
		return c, status
	}

	t.Run("good", func(t *testing.T) {
		c, status := login(t, "bob", "hunter2")
		require.Equal(t, byte(0), status)
		sendRequest(t, c, socksbind.CmdConnect, addr(ip4, uint16(echo.Port())))
		rep, _ := readReply(t, c)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		echoed(t, c)
		reqs := srv.Requests()
		require.NotEmpty(t, reqs)
		assert.Equal(t, "bob", reqs[len(reqs)-1].User)
	})
	for _, tc := range []struct{ name, user, pass string }{
		{"bad password", "alice", "hunter2"},
		{"unknown user", "mallory", "secret"},
		{"empty password", "alice", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, status := login(t, tc.user, tc.pass)
			assert.NotEqual(t, byte(0), status)
			expectEOF(t, c)
		})
	}
}

func TestRules(t *testing.T) {
	echo := testkit.Echo(t, "tcp4")
	custom := func(req *socks5test.Request) socksbind.Reply {
		if req.Dst.IP.Is6() {
			return socksbind.ReplyAddressTypeNotSupported
		}
		return socksbind.ReplySucceeded
	}
	for _, tc := range []struct {
		name  string
		rules []socks5test.Rule
		cmd   socksbind.Command
		dst   socksbind.Addr
		want  socksbind.Reply
	}{
		{"command", []socks5test.Rule{socks5test.RefuseCommand(socksbind.CmdConnect, socksbind.ReplyNotAllowed)},
			socksbind.CmdConnect, addr(ip4, uint16(echo.Port())), socksbind.ReplyNotAllowed},
		{"command bind refused in reply 1", []socks5test.Rule{socks5test.RefuseCommand(socksbind.CmdBind, socksbind.ReplyNotAllowed)},
			socksbind.CmdBind, addr(any4, 0), socksbind.ReplyNotAllowed},
		{"port", []socks5test.Rule{socks5test.RefusePort(uint16(echo.Port()), socksbind.ReplyConnectionRefused)},
			socksbind.CmdConnect, addr(ip4, uint16(echo.Port())), socksbind.ReplyConnectionRefused},
		{"bind port", []socks5test.Rule{socks5test.RefusePort(4242, socksbind.ReplyNotAllowed)},
			socksbind.CmdBind, addr(any4, 4242), socksbind.ReplyNotAllowed},
		{"mbind port, as GOST refuses a taken one", []socks5test.Rule{socks5test.RefusePort(4242, socksbind.ReplyGeneralFailure)},
			socksbind.CmdMultiplexBind, addr(any4, 4242), socksbind.ReplyGeneralFailure},
		{"host ip", []socks5test.Rule{socks5test.RefuseHost("127.0.0.1", socksbind.ReplyHostUnreachable)},
			socksbind.CmdConnect, addr(ip4, uint16(echo.Port())), socksbind.ReplyHostUnreachable},
		{"host name", []socks5test.Rule{socks5test.RefuseHost("localhost", socksbind.ReplyNetworkUnreachable)},
			socksbind.CmdConnect, socksbind.Addr{Name: "localhost", Port: uint16(echo.Port())}, socksbind.ReplyNetworkUnreachable},
		{"first refusal wins", []socks5test.Rule{
			socks5test.RefusePort(1, socksbind.ReplyGeneralFailure),
			custom,
			socks5test.RefuseCommand(socksbind.CmdConnect, socksbind.ReplyNotAllowed),
		}, socksbind.CmdConnect, addr(ip6, uint16(echo.Port())), socksbind.ReplyAddressTypeNotSupported},
		{"rules run before unsupported commands", []socks5test.Rule{socks5test.RefuseCommand(socksbind.CmdUDPAssociate, socksbind.ReplyTTLExpired)},
			socksbind.CmdUDPAssociate, addr(any4, 0), socksbind.ReplyTTLExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Rules = tc.rules })
			c, rep, bnd := request(t, srv, tc.cmd, tc.dst)
			assert.Equal(t, tc.want, rep)
			assert.Equal(t, addr(any4, 0), bnd)
			expectEOF(t, c)
			assert.Zero(t, srv.ActiveBinds())
		})
	}

	t.Run("no refusal", func(t *testing.T) {
		srv := testkit.Proxy(t, func(s *socks5test.Server) {
			s.Rules = []socks5test.Rule{
				socks5test.RefuseCommand(socksbind.CmdBind, socksbind.ReplyNotAllowed),
				socks5test.RefusePort(uint16(echo.Port())+1, socksbind.ReplyNotAllowed),
				socks5test.RefuseHost("localhost", socksbind.ReplyNotAllowed),
			}
		})
		c, rep, _ := request(t, srv, socksbind.CmdConnect, addr(ip4, uint16(echo.Port())))
		require.Equal(t, socksbind.ReplySucceeded, rep)
		echoed(t, c)
	})
}

func TestConnect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network string
		dst     func(port uint16) socksbind.Addr
		ipv6    bool
	}{
		{"ipv4", "tcp4", func(p uint16) socksbind.Addr { return addr(ip4, p) }, false},
		{"ipv6", "tcp6", func(p uint16) socksbind.Addr { return addr(ip6, p) }, true},
		{"localhost", "tcp4", func(p uint16) socksbind.Addr { return socksbind.Addr{Name: "localhost", Port: p} }, false},
		{"name from Hosts", "tcp4", func(p uint16) socksbind.Addr { return socksbind.Addr{Name: "api.example", Port: p} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ipv6 {
				requireIPv6(t)
			}
			srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Hosts = map[string]netip.Addr{"api.example": ip4} })
			echo := testkit.Echo(t, tc.network)
			c, rep, bnd := request(t, srv, socksbind.CmdConnect, tc.dst(uint16(echo.Port())))
			require.Equal(t, socksbind.ReplySucceeded, rep)
			// BND is the local address of the server's outbound
			// connection: what the target sees as its peer.
			assert.Equal(t, wireAddr(<-echo.Peers), bnd)
			echoed(t, c)
		})
	}

	t.Run("report unspecified", func(t *testing.T) {
		srv := testkit.Proxy(t, func(s *socks5test.Server) { s.ReportUnspecified = true })
		echo := testkit.Echo(t, "tcp4")
		c, rep, bnd := request(t, srv, socksbind.CmdConnect, addr(ip4, uint16(echo.Port())))
		require.Equal(t, socksbind.ReplySucceeded, rep)
		assert.Equal(t, addr(any4, wireAddr(<-echo.Peers).Port), bnd)
		echoed(t, c)
	})

	t.Run("connection refused", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		c, rep, bnd := request(t, srv, socksbind.CmdConnect, addr(ip4, closedPort(t)))
		assert.Equal(t, socksbind.ReplyConnectionRefused, rep)
		assert.Equal(t, addr(any4, 0), bnd)
		expectEOF(t, c)
	})

	t.Run("pipelined", func(t *testing.T) {
		// Greeting, request and payload in one write: the server reads
		// each message to its exact length and relays the rest.
		srv := testkit.Proxy(t, nil)
		echo := testkit.Echo(t, "tcp4")
		c := dial(t, srv.Addr())
		b := srvwire.AppendMessage(greeting(socksbind.AuthNone), byte(socksbind.CmdConnect), addr(ip4, uint16(echo.Port())))
		_, err := c.Write(append(b, "payload"...))
		require.NoError(t, err)
		m, err := readPair(c, srvwire.Version)
		require.NoError(t, err)
		require.Equal(t, byte(socksbind.AuthNone), m)
		rep, _ := readReply(t, c)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		got := make([]byte, len("payload"))
		_, err = io.ReadFull(c, got)
		require.NoError(t, err)
		assert.Equal(t, "payload", string(got))
	})
}

func TestUnsupported(t *testing.T) {
	srv := testkit.Proxy(t, nil)
	t.Run("udp associate", func(t *testing.T) {
		c, rep, bnd := request(t, srv, socksbind.CmdUDPAssociate, addr(any4, 0))
		assert.Equal(t, socksbind.ReplyCommandNotSupported, rep)
		assert.Equal(t, addr(any4, 0), bnd)
		expectEOF(t, c)
	})
	// Dante answers a command it does not know by closing, with no reply.
	for _, cmd := range []socksbind.Command{0x04, 0x09, 0xff} {
		t.Run(cmd.String(), func(t *testing.T) {
			c := open(t, srv)
			sendRequest(t, c, cmd, addr(any4, 0))
			expectEOF(t, c)
		})
	}
	t.Run("bind to a domain name", func(t *testing.T) {
		c, rep, _ := request(t, srv, socksbind.CmdBind, socksbind.Addr{Name: "localhost", Port: 0})
		assert.Equal(t, socksbind.ReplyAddressTypeNotSupported, rep)
		expectEOF(t, c)
		assert.Zero(t, srv.ActiveBinds())
	})
}

func TestMalformed(t *testing.T) {
	// Each case sends exactly the bytes the server reads before it gives
	// up, then a half-close, so that the server's close is a FIN, not a
	// reset for unread bytes. The server closes without a reply, as Dante
	// does.
	hello := greeting(socksbind.AuthNone)
	for _, tc := range []struct {
		name  string
		users map[string]string
		send  []byte
		// answered is what the server sends before closing.
		answered []byte
	}{
		{"greeting version 4", nil, []byte{0x04, 0x01}, []byte{}},
		{"truncated greeting", nil, []byte{0x05, 0x02, 0x00}, []byte{}},
		{"request version 4", nil, append(slices.Clip(hello), 0x04, 0x01, 0x00, 0x01), []byte{0x05, 0x00}},
		{"unknown address type", nil, append(slices.Clip(hello), 0x05, 0x01, 0x00, 0x05), []byte{0x05, 0x00}},
		{"empty domain name", nil, append(slices.Clip(hello), 0x05, 0x01, 0x00, 0x03, 0x00, 0, 80), []byte{0x05, 0x00}},
		{"truncated request", nil, append(slices.Clip(hello), 0x05, 0x01, 0x00, 0x01, 127, 0), []byte{0x05, 0x00}},
		{"username/password version 5", map[string]string{"u": "p"},
			[]byte{0x05, 0x01, 0x02, 0x05, 0x01}, []byte{0x05, 0x02}},
		{"truncated username/password", map[string]string{"u": "p"},
			[]byte{0x05, 0x01, 0x02, 0x01, 0x01, 'u', 0x01}, []byte{0x05, 0x02}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Users = tc.users })
			c := dial(t, srv.Addr())
			_, err := c.Write(tc.send)
			require.NoError(t, err)
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
			got, err := io.ReadAll(c)
			assert.NoError(t, err)
			assert.Equal(t, tc.answered, got)
			assert.Empty(t, srv.Requests())
		})
	}
}

func TestRequestsRecorded(t *testing.T) {
	requireIPv6(t)
	srv := testkit.Proxy(t, nil)
	echo := testkit.Echo(t, "tcp4")
	dsts := []socksbind.Addr{
		addr(ip4, uint16(echo.Port())),
		addr(ip6, uint16(echo.Port())), // refused: the echo server listens on IPv4 only
		{Name: "localhost", Port: uint16(echo.Port())},
		addr(any4, 0),
	}
	cmds := []socksbind.Command{socksbind.CmdConnect, socksbind.CmdConnect, socksbind.CmdConnect, socksbind.CmdUDPAssociate}
	var clients []net.Addr
	for i, dst := range dsts {
		c, _, _ := request(t, srv, cmds[i], dst)
		clients = append(clients, c.LocalAddr())
	}
	reqs := srv.Requests()
	require.Len(t, reqs, len(dsts))
	for i, req := range reqs {
		assert.Equal(t, cmds[i], req.Command)
		assert.Equal(t, dsts[i], req.Dst)
		assert.Equal(t, clients[i].String(), req.Client.String())
		assert.Empty(t, req.User)
	}
	assert.True(t, reqs[0].Dst.IP.Is4(), "IPv4: %v", reqs[0].Dst)
	assert.True(t, reqs[1].Dst.IP.Is6(), "IPv6: %v", reqs[1].Dst)
	assert.NotEmpty(t, reqs[2].Dst.Name, "a name: %v", reqs[2].Dst)

	// The result is a copy.
	reqs[0].User = "changed"
	assert.Empty(t, srv.Requests()[0].User)
}

func TestXNetProxyInterop(t *testing.T) {
	echo := testkit.Echo(t, "tcp4")
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(uint16(echo.Port()))))

	t.Run("no auth", func(t *testing.T) {
		srv := testkit.Proxy(t, nil)
		d, err := proxy.SOCKS5("tcp", srv.Addr(), nil, proxy.Direct)
		require.NoError(t, err)
		c, err := d.Dial("tcp", target)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		echoed(t, c)
		reqs := srv.Requests()
		require.Len(t, reqs, 1)
		assert.Equal(t, socksbind.CmdConnect, reqs[0].Command)
		assert.Equal(t, addr(ip4, uint16(echo.Port())), reqs[0].Dst)
	})

	t.Run("username/password", func(t *testing.T) {
		srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Users = map[string]string{"alice": "secret"} })
		d, err := proxy.SOCKS5("tcp", srv.Addr(), &proxy.Auth{User: "alice", Password: "secret"}, proxy.Direct)
		require.NoError(t, err)
		c, err := d.Dial("tcp", target)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		echoed(t, c)
		assert.Equal(t, "alice", srv.Requests()[0].User)
	})

	t.Run("url with user", func(t *testing.T) {
		srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Users = map[string]string{"alice": "secret"} })
		u, err := url.Parse(srv.URLWithUser("alice", "secret"))
		require.NoError(t, err)
		d, err := proxy.FromURL(u, proxy.Direct)
		require.NoError(t, err)
		c, err := d.Dial("tcp", target)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		echoed(t, c)
	})

	t.Run("bad password", func(t *testing.T) {
		srv := testkit.Proxy(t, func(s *socks5test.Server) { s.Users = map[string]string{"alice": "secret"} })
		d, err := proxy.SOCKS5("tcp", srv.Addr(), &proxy.Auth{User: "alice", Password: "wrong"}, proxy.Direct)
		require.NoError(t, err)
		_, err = d.Dial("tcp", target)
		assert.Error(t, err)
	})

	t.Run("refused by rule", func(t *testing.T) {
		srv := testkit.Proxy(t, func(s *socks5test.Server) {
			s.Rules = []socks5test.Rule{socks5test.RefusePort(uint16(echo.Port()), socksbind.ReplyNotAllowed)}
		})
		d, err := proxy.SOCKS5("tcp", srv.Addr(), nil, proxy.Direct)
		require.NoError(t, err)
		_, err = d.Dial("tcp", target)
		assert.ErrorContains(t, err, socksbind.ReplyNotAllowed.String())
	})
}

func TestClose(t *testing.T) {
	before := runtime.NumGoroutine()

	var stalled atomic.Bool
	srv := socks5test.NewUnstartedServer()
	srv.Hooks.Fault = func(stage socks5test.Stage, conn net.Conn, req *socks5test.Request) bool {
		if stage != socks5test.StageRequest || req.Command != socksbind.CmdUDPAssociate {
			return false
		}
		// Stall until Close closes the connection.
		io.Copy(io.Discard, conn)
		stalled.Store(true)
		return true
	}
	srv.Start()

	// A client that never greets, one stalled by the hook, a BIND waiting
	// for its peer and a relayed CONNECT.
	idle := dial(t, srv.Addr())
	stall := open(t, srv)
	sendRequest(t, stall, socksbind.CmdUDPAssociate, addr(any4, 0))
	binder, _ := bind(t, srv, addr(any4, 0))
	target, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { target.Close() })
	connector, rep, _ := request(t, srv, socksbind.CmdConnect, wireAddr(target.Addr()))
	require.Equal(t, socksbind.ReplySucceeded, rep)
	outbound, err := target.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { outbound.Close() })
	testkit.Eventually(t, testTimeout, func() bool { return len(srv.Requests()) == 3 }, "requests read")
	require.Equal(t, 1, srv.ActiveBinds())

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(srv.Close)
	}
	wg.Wait()
	assert.True(t, stalled.Load(), "Close returned before the stalled hook")
	assert.Zero(t, srv.ActiveBinds())
	for _, c := range []net.Conn{idle, stall, binder, connector, outbound} {
		expectEOF(t, c)
	}
	_, err = srv.Listener.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	srv.Close()

	testkit.Eventually(t, testTimeout, func() bool { return runtime.NumGoroutine() <= before }, "goroutines left after Close")
}
