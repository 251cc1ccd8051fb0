package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/socks5test"
)

// The tests run the client against socks5test, whose BIND filters peers as
// Dante does, and a small FTP server of their own. The integration tests run
// the program against Dante and pyftpdlib.

const testTimeout = 10 * time.Second

func TestAnnounce(t *testing.T) {
	tests := []struct {
		addr string
		eprt bool
		want string
	}{
		{"127.0.0.1:40000", false, "PORT 127,0,0,1,156,64"},
		{"192.0.2.200:65535", false, "PORT 192,0,2,200,255,255"},
		{"10.1.2.3:1", false, "PORT 10,1,2,3,0,1"},
		{"127.0.0.1:40000", true, "EPRT |1|127.0.0.1|40000|"},
		{"[::ffff:127.0.0.1]:40000", false, "PORT 127,0,0,1,156,64"},
		{"[::1]:40000", false, "EPRT |2|::1|40000|"}, // PORT cannot carry IPv6
		{"[2001:db8::7]:2121", true, "EPRT |2|2001:db8::7|2121|"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, announce(netip.MustParseAddrPort(tt.addr), tt.eprt), "%s eprt=%v", tt.addr, tt.eprt)
	}
}

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.10":      "192.0.2.10:21",
		"192.0.2.10:2121": "192.0.2.10:2121",
		"ftp.example":     "ftp.example:21",
		"ftp.example:990": "ftp.example:990",
		"::1":             "[::1]:21",
		"[::1]:2121":      "[::1]:2121",
	} {
		assert.Equal(t, want, withDefaultPort(in), in)
	}
}

func TestParseCommand(t *testing.T) {
	good := map[string]command{
		"ls":                      {verb: "ls"},
		"ls pub":                  {verb: "ls", remote: "pub"},
		"get pub/a.txt":           {verb: "get", remote: "pub/a.txt", local: "a.txt"},
		"get pub/a.txt b.txt":     {verb: "get", remote: "pub/a.txt", local: "b.txt"},
		"put /tmp/a.txt":          {verb: "put", local: "/tmp/a.txt", remote: "a.txt"},
		"put /tmp/a.txt up/b.txt": {verb: "put", local: "/tmp/a.txt", remote: "up/b.txt"},
	}
	for line, want := range good {
		got, err := parseCommand(strings.Fields(line))
		if assert.NoError(t, err, line) {
			assert.Equal(t, want, got, line)
		}
	}
	for _, line := range []string{"", "ls a b", "get", "get a b c", "put", "mget a"} {
		_, err := parseCommand(strings.Fields(line))
		assert.Error(t, err, line)
	}
}

func TestClient(t *testing.T) {
	leakcheck.Check(t)
	proxy := socks5test.NewServer()
	t.Cleanup(proxy.Close)
	d, err := socksbind.SOCKS5("tcp", proxy.Addr(), nil, nil)
	require.NoError(t, err)
	content := bytes.Repeat([]byte("active mode through SOCKS5\n"), 40000) // 1 MiB and more

	for _, eprt := range []bool{false, true} {
		t.Run(fmt.Sprintf("eprt=%v", eprt), func(t *testing.T) {
			srv := startFakeFTP(t, content, false)
			c := dialClient(t, d, srv.addr, options{EPRT: eprt})
			require.NoError(t, c.login("user", "secret"))

			var listing bytes.Buffer
			_, err := c.list("", &listing)
			require.NoError(t, err)
			assert.Equal(t, "file.bin\r\n", listing.String())

			for range 3 {
				var got bytes.Buffer
				n, err := c.retrieve("file.bin", &got)
				require.NoError(t, err)
				assert.Equal(t, int64(len(content)), n)
				assert.True(t, bytes.Equal(content, got.Bytes()), "RETR data")
			}

			n, err := c.store("up.bin", bytes.NewReader(content))
			require.NoError(t, err)
			assert.Equal(t, int64(len(content)), n)
			assert.True(t, bytes.Equal(content, srv.stored("up.bin")), "STOR data")
			require.NoError(t, c.quit())

			verb := "PORT"
			if eprt {
				verb = "EPRT"
			}
			assert.Equal(t, []string{"USER", "PASS", "TYPE", verb, "LIST", verb, "RETR", verb, "RETR",
				verb, "RETR", verb, "STOR", "QUIT"}, srv.verbs())
		})
	}

	t.Run("WrongPeer", func(t *testing.T) {
		// The server connects from 127.0.0.1 and the proxy expects
		// 127.0.0.2: it turns the connection away, the server answers
		// 425, and the error says both, the proxy's refusal first.
		srv := startFakeFTP(t, content, true)
		c := dialClient(t, d, srv.addr, options{ExpectPeer: netip.MustParseAddr("127.0.0.2")})
		require.NoError(t, c.login("user", "secret"))
		_, err := c.retrieve("file.bin", io.Discard)
		require.Error(t, err)
		assert.ErrorIs(t, err, socksbind.ErrNotAllowed)
		var re *socksbind.ReplyError
		if assert.ErrorAs(t, err, &re) {
			assert.Equal(t, socksbind.CmdBind, re.Command)
			assert.Equal(t, "127.0.0.1", addrOf(re.Addr).String(), "the peer the proxy turned away")
		}
		var te *textproto.Error
		if assert.ErrorAs(t, err, &te) {
			assert.Equal(t, 425, te.Code)
		}
	})

	t.Run("NameResolvedByProxy", func(t *testing.T) {
		// With the name sent to the proxy, the server's IP is unknown
		// unless the expected peer is given.
		named := socks5test.NewUnstartedServer()
		named.Hosts = map[string]netip.Addr{"ftp.test": netip.MustParseAddr("127.0.0.1")}
		named.Start()
		t.Cleanup(named.Close)
		d, err := socksbind.SOCKS5("tcp", named.Addr(), nil, nil)
		require.NoError(t, err)
		byName := func(srv *fakeFTP) string {
			return net.JoinHostPort("ftp.test", strconv.Itoa(int(srv.addr.Port())))
		}

		_, err = dial(context.Background(), d, byName(startFakeFTP(t, content, false)), options{Timeout: testTimeout})
		assert.ErrorContains(t, err, "the proxy resolved ftp.test")

		address := byName(startFakeFTP(t, content, false))
		c := dialClient(t, d, address, options{ExpectPeer: netip.MustParseAddr("127.0.0.1")})
		require.NoError(t, c.login("user", "secret"))
		var got bytes.Buffer
		_, err = c.retrieve("file.bin", &got)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(content, got.Bytes()), "RETR data")
	})
}

// dialClient dials the FTP server at addr through d, and closes the client
// when the test ends.
func dialClient(t *testing.T, d *socksbind.Dialer, addr any, opts options) *client {
	t.Helper()
	opts.Timeout = testTimeout
	var trace bytes.Buffer
	opts.Trace = &trace
	c, err := dial(context.Background(), d, fmt.Sprint(addr), opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("control dialogue:\n%s", trace.String())
		}
	})
	return c
}

// fakeFTP is an FTP server for one control connection: enough of RFC 959
// and RFC 2428 for the client, in active mode only. It serves one file,
// file.bin, and keeps what is stored in memory. Like pyftpdlib, it connects
// to the data address when it gets PORT or EPRT.
type fakeFTP struct {
	addr    netip.AddrPort
	content []byte
	// turnedAway makes the server expect the proxy to turn its data
	// connections away: it waits for the proxy to close one, and
	// answers the command that would use it with 425, as pyftpdlib can.
	turnedAway bool
	wg         sync.WaitGroup

	mu    sync.Mutex // guards the fields below
	files map[string][]byte
	log   []string // the verbs received
}

func startFakeFTP(t *testing.T, content []byte, turnedAway bool) *fakeFTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &fakeFTP{addr: ln.Addr().(*net.TCPAddr).AddrPort(), content: content, turnedAway: turnedAway, files: map[string][]byte{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		s.serve(t, textproto.NewConn(c))
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// serve runs the control connection. It reports trouble with assert, which
// may be called from any goroutine.
func (s *fakeFTP) serve(t *testing.T, ctl *textproto.Conn) {
	// A multi-line greeting, with a line that does not start with the
	// code (RFC 959, 4.2).
	ctl.PrintfLine("220-fake FTP server\r\n  for the tests\r\n220 ready")
	var data net.Conn
	defer func() {
		if data != nil {
			data.Close()
		}
	}()
	for {
		line, err := ctl.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		s.mu.Lock()
		s.log = append(s.log, verb)
		s.mu.Unlock()
		switch verb {
		case "USER":
			ctl.PrintfLine("331 password, please")
		case "PASS":
			ctl.PrintfLine("230 in")
		case "TYPE":
			ctl.PrintfLine("200 binary")
		case "PORT", "EPRT":
			a, err := parseDataAddr(verb, arg)
			if !assert.NoError(t, err) {
				ctl.PrintfLine("501 %v", err)
				continue
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: testTimeout}
			data, err = d.Dial("tcp", a.String())
			if !assert.NoError(t, err) {
				ctl.PrintfLine("425 can't connect")
				continue
			}
			ctl.PrintfLine("200 connected")
		case "LIST", "RETR", "STOR":
			if s.turnedAway {
				_, err := io.Copy(io.Discard, data)
				assert.NoError(t, err, "the proxy closes the connection it turned away")
				data.Close()
				data = nil
			}
			if data == nil {
				ctl.PrintfLine("425 Can't open data connection.")
				continue
			}
			ctl.PrintfLine("125 transfer starting")
			switch verb {
			case "LIST":
				io.WriteString(data, "file.bin\r\n")
			case "RETR":
				data.Write(s.content)
			case "STOR":
				b, err := io.ReadAll(data)
				assert.NoError(t, err)
				s.mu.Lock()
				s.files[arg] = b
				s.mu.Unlock()
			}
			data.Close()
			data = nil
			ctl.PrintfLine("226 done")
		case "QUIT":
			ctl.PrintfLine("221 bye")
			return
		default:
			ctl.PrintfLine("502 not implemented")
		}
	}
}

func (s *fakeFTP) stored(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.files[name]
}

func (s *fakeFTP) verbs() []string {
	s.wg.Wait() // the session is over
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log
}

// parseDataAddr reads the argument of PORT or EPRT.
func parseDataAddr(verb, arg string) (netip.AddrPort, error) {
	if verb == "PORT" {
		var h [4]byte
		var p1, p2 uint16
		_, err := fmt.Sscanf(arg, "%d,%d,%d,%d,%d,%d", &h[0], &h[1], &h[2], &h[3], &p1, &p2)
		if err != nil || p1 > 255 || p2 > 255 {
			return netip.AddrPort{}, fmt.Errorf("bad PORT %q", arg)
		}
		return netip.AddrPortFrom(netip.AddrFrom4(h), p1<<8|p2), nil
	}
	f := strings.Split(arg, "|")
	if len(f) != 5 || f[0] != "" || f[4] != "" || (f[1] != "1" && f[1] != "2") {
		return netip.AddrPort{}, fmt.Errorf("bad EPRT %q", arg)
	}
	ip, err := netip.ParseAddr(f[2])
	if err != nil || ip.Is4() != (f[1] == "1") {
		return netip.AddrPort{}, fmt.Errorf("bad EPRT %q", arg)
	}
	port, err := strconv.ParseUint(f[3], 10, 16)
	if err != nil {
		return netip.AddrPort{}, errors.New("bad EPRT port")
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}
