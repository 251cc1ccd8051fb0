package socksbind_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

func muxProxy(t *testing.T, setup func(*socks5test.Server)) *socks5test.Server {
	t.Helper()
	return newProxy(t, func(s *socks5test.Server) {
		s.Multiplex = true
		if setup != nil {
			setup(s)
		}
	})
}

func commands(srv *socks5test.Server) []socksbind.Command {
	var cmds []socksbind.Command
	for _, r := range srv.Requests() {
		cmds = append(cmds, r.Command)
	}
	return cmds
}

// Many peers at once on one address, each its own connection.
func TestMultiplexAccept(t *testing.T) {
	srv := muxProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
	addr := ln.Addr()
	assert.Equal(t, "127.0.0.1", addr.(*net.TCPAddr).IP.String())
	assert.Equal(t, []socksbind.Command{socksbind.CmdMultiplexBind}, commands(srv))

	const n = 20
	peers := make(map[string]net.Conn)
	for range n {
		p := dialPeer(t, addr)
		peers[p.LocalAddr().String()] = p
	}
	for range n {
		c := accept(t, ln)
		p, ok := peers[c.RemoteAddr().String()]
		require.True(t, ok, "unknown peer %v", c.RemoteAddr())
		delete(peers, c.RemoteAddr().String())
		assert.Equal(t, addr.String(), c.LocalAddr().String())
		msg := "to " + c.RemoteAddr().String()
		_, err := io.WriteString(c, msg)
		require.NoError(t, err)
		buf := make([]byte, len(msg))
		_, err = io.ReadFull(p, buf)
		require.NoError(t, err)
		assert.Equal(t, msg, string(buf))
		_, err = p.Write([]byte("back"))
		require.NoError(t, err)
		_, err = io.ReadFull(c, buf[:4])
		require.NoError(t, err)
		assert.Equal(t, "back", string(buf[:4]))
	}
	assert.Equal(t, addr.String(), ln.Addr().String(), "the address never changes")
	assert.Len(t, srv.Requests(), 1, "one request for every peer")
	assert.Equal(t, 1, srv.ActiveBinds())
}

// http.Serve behind a multiplexed listener serves concurrent clients.
func TestMultiplexHTTPServe(t *testing.T) {
	srv := muxProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
	served := make(chan error, 1)
	go func() {
		served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.URL.Path, r.RemoteAddr)
		}))
	}()
	for _, keepAlive := range []bool{false, true} {
		tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 10}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for w := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20 {
					path := fmt.Sprintf("/%d/%d", w, i)
					resp, err := client.Get("http://" + ln.Addr().String() + path)
					if err != nil {
						errs <- err
						return
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || !strings.HasPrefix(string(body), path+" 127.0.0.1:") {
						errs <- fmt.Errorf("%s: %q %v", path, body, err)
					}
				}
			}()
		}
		wg.Wait()
		tr.CloseIdleConnections()
		close(errs)
		for err := range errs {
			t.Errorf("keep-alive %v: %v", keepAlive, err)
		}
	}
	require.NoError(t, ln.Close())
	assert.ErrorIs(t, <-served, net.ErrClosed)
}

// Close of a multiplexed listener with 100 streams open returns at once,
// ends the session and its streams, and the proxy stops listening.
func TestMultiplexClose(t *testing.T) {
	srv := muxProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
	addr := ln.Addr()
	var conns []net.Conn
	for range 100 {
		dialPeer(t, addr)
		conns = append(conns, accept(t, ln))
	}
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	waitBlocked(t, 1)
	start := time.Now()
	require.NoError(t, ln.Close())
	assert.Less(t, time.Since(start), 100*time.Millisecond)
	assert.ErrorIs(t, <-errc, net.ErrClosed)
	for _, c := range conns {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		_, err := c.Read(make([]byte, 1))
		assert.Error(t, err, "an accepted stream outlived its session")
		assert.False(t, testkit.IsTimeout(err), "an accepted stream outlived its session")
	}
	require.Eventually(t, func() bool { return srv.ActiveBinds() == 0 }, 10*time.Second, time.Millisecond)
	_, err := net.Dial("tcp", addr.String())
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
}

// Proxies without MBIND: MultiplexOn fails with ErrCommandNotSupported;
// MultiplexAuto falls back to BIND and remembers.
func TestMultiplexUnsupported(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(*socks5test.Server)
	}{
		{"closes without a reply", nil}, // as Dante does
		{"reply 7", func(s *socks5test.Server) {
			s.Rules = []socks5test.Rule{socks5test.RefuseCommand(socksbind.CmdMultiplexBind, socksbind.ReplyCommandNotSupported)}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newProxy(t, tt.setup)
			d := newDialer(t, srv)
			lc := socksbind.ListenConfig{Dialer: d, Multiplex: socksbind.MultiplexOn}
			_, err := lc.Listen(context.Background(), "tcp", ":0")
			assert.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
			assert.ErrorIs(t, err, syscall.EOPNOTSUPP)

			d = newDialer(t, srv)
			lc = socksbind.ListenConfig{Dialer: d, Multiplex: socksbind.MultiplexAuto}
			before := len(srv.Requests())
			for range 2 {
				ln := listen(t, srv, lc, ":0")
				dialPeer(t, ln.Addr())
				accept(t, ln)
				require.NoError(t, ln.Close())
			}
			assert.Equal(t, []socksbind.Command{socksbind.CmdMultiplexBind, socksbind.CmdBind, socksbind.CmdBind},
				commands(srv)[before:before+3], "one probe per Dialer, then BIND")
		})
	}
}

// MultiplexAuto picks MBIND where the proxy has it.
func TestMultiplexAuto(t *testing.T) {
	srv := muxProxy(t, nil)
	d := newDialer(t, srv)
	for range 2 {
		ln := listen(t, srv, socksbind.ListenConfig{Dialer: d, Multiplex: socksbind.MultiplexAuto}, ":0")
		for range 3 {
			dialPeer(t, ln.Addr())
		}
		for range 3 {
			accept(t, ln)
		}
		require.NoError(t, ln.Close())
	}
	assert.Equal(t, []socksbind.Command{socksbind.CmdMultiplexBind, socksbind.CmdMultiplexBind}, commands(srv))
}

// A refusal by policy is not taken for a missing MBIND: Auto asks BIND,
// whose answer is the listener's.
func TestMultiplexAutoRefused(t *testing.T) {
	srv := muxProxy(t, func(s *socks5test.Server) {
		s.Rules = []socks5test.Rule{
			socks5test.RefuseCommand(socksbind.CmdMultiplexBind, socksbind.ReplyNotAllowed),
			socks5test.RefuseCommand(socksbind.CmdBind, socksbind.ReplyNotAllowed),
		}
	})
	d := newDialer(t, srv)
	lc := socksbind.ListenConfig{Dialer: d, Multiplex: socksbind.MultiplexAuto}
	_, err := lc.Listen(context.Background(), "tcp", ":0")
	assert.ErrorIs(t, err, socksbind.ErrNotAllowed)
	assert.Equal(t, []socksbind.Command{socksbind.CmdMultiplexBind, socksbind.CmdBind}, commands(srv))
}

// Read deadlines work on a connection accepted through MBIND: set before
// a Read, while it blocks, and in the past; a write deadline in the future
// lets writes through.
func TestMultiplexConnDeadlines(t *testing.T) {
	srv := muxProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
	peer := dialPeer(t, ln.Addr())
	c := accept(t, ln)

	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err := c.Read(make([]byte, 1))
	assert.True(t, testkit.IsTimeout(err), "%v", err)

	require.NoError(t, c.SetReadDeadline(time.Time{}))
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
	time.Sleep(20 * time.Millisecond) // let the Read block
	require.NoError(t, c.SetReadDeadline(time.Now()))
	select {
	case err := <-errc:
		assert.True(t, testkit.IsTimeout(err), "%v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a deadline set while Read blocked did not end it")
	}

	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Write([]byte("still works"))
	require.NoError(t, err)
	buf := make([]byte, 11)
	_, err = io.ReadFull(peer, buf)
	require.NoError(t, err)
	_, err = peer.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, buf[:1])
	require.NoError(t, err, "the deadlines that passed left the stream usable")
}

// Closing one accepted stream leaves the others and the listener alone.
func TestMultiplexCloseOneStream(t *testing.T) {
	srv := muxProxy(t, nil)
	ln := listen(t, srv, socksbind.ListenConfig{Multiplex: socksbind.MultiplexOn}, ":0")
	p1 := dialPeer(t, ln.Addr())
	c1 := accept(t, ln)
	p2 := dialPeer(t, ln.Addr())
	c2 := accept(t, ln)
	if c1.RemoteAddr().String() != p1.LocalAddr().String() {
		p1, p2 = p2, p1
	}
	require.NoError(t, c1.Close())
	require.NoError(t, p1.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := io.ReadAll(p1)
	assert.NoError(t, err, "the peer of the closed stream reads EOF")
	_, err = p2.Write([]byte("still here"))
	require.NoError(t, err)
	buf := make([]byte, 10)
	_, err = io.ReadFull(c2, buf)
	require.NoError(t, err)
	assert.Equal(t, "still here", string(buf))
	p3 := dialPeer(t, ln.Addr())
	c3 := accept(t, ln)
	assert.Equal(t, p3.LocalAddr().String(), c3.RemoteAddr().String())
}

// TestMultiplexText checks the one vocabulary of the setting: the texts it
// marshals to read back, "mux" means on, anything else is refused, and a
// flag takes it through flag.TextVar.
func TestMultiplexText(t *testing.T) {
	for _, m := range []socksbind.Multiplex{socksbind.MultiplexOff, socksbind.MultiplexOn, socksbind.MultiplexAuto} {
		text, err := m.MarshalText()
		require.NoError(t, err)
		assert.Equal(t, m.String(), string(text))
		var back socksbind.Multiplex
		require.NoError(t, back.UnmarshalText(text))
		assert.Equal(t, m, back)
	}
	var m socksbind.Multiplex
	require.NoError(t, m.UnmarshalText([]byte("mux")))
	assert.Equal(t, socksbind.MultiplexOn, m)
	for _, bad := range []string{"", "MUX", "On", "yes", "1", "mux "} {
		m := socksbind.MultiplexAuto
		err := m.UnmarshalText([]byte(bad))
		require.Error(t, err, "%q", bad)
		assert.Equal(t, fmt.Sprintf("socksbind: unknown multiplex mode %q: want off, on or auto", bad), err.Error())
		assert.Equal(t, socksbind.MultiplexAuto, m, "a refused text leaves the value alone")
	}
	_, err := socksbind.Multiplex(7).MarshalText()
	assert.EqualError(t, err, "socksbind: unknown multiplex 7")

	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.TextVar(&m, "mux", socksbind.MultiplexAuto, "")
	assert.Equal(t, "auto", fs.Lookup("mux").DefValue)
	require.NoError(t, fs.Parse([]string{"-mux", "off"}))
	assert.Equal(t, socksbind.MultiplexOff, m)
	assert.ErrorContains(t, fs.Parse([]string{"-mux", "yes"}), `unknown multiplex mode "yes"`)
}
