package socks5test_test

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

func TestFaultStages(t *testing.T) {
	// A Fault that returns false sees every stage and changes nothing.
	var mu sync.Mutex
	stages := map[socksbind.Command][]socks5test.Stage{}
	srv := testkit.Proxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, _ net.Conn, req *socks5test.Request) bool {
			if stage == socks5test.StageGreeting {
				assert.Nil(t, req)
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			stages[req.Command] = append(stages[req.Command], stage)
			return false
		}
	})
	echo := testkit.Echo(t, "tcp4")
	c, rep, _ := request(t, srv, socksbind.CmdConnect, addr(ip4, uint16(echo.Port())))
	require.Equal(t, socksbind.ReplySucceeded, rep)
	echoed(t, c)

	c, bnd := bind(t, srv, addr(any4, 0))
	peer := dial(t, bnd.String())
	rep, _ = readReply(t, c)
	require.Equal(t, socksbind.ReplySucceeded, rep)
	exchange(t, c, peer)

	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []socks5test.Stage{socks5test.StageRequest}, stages[socksbind.CmdConnect])
	assert.Equal(t, []socks5test.Stage{socks5test.StageRequest, socks5test.StageBindReply}, stages[socksbind.CmdBind])
}

// faultAt returns a server whose Fault hook runs f at stage and takes the
// connection over.
func faultAt(t *testing.T, stage socks5test.Stage, f func(conn net.Conn, req *socks5test.Request)) *socks5test.Server {
	t.Helper()
	return testkit.Proxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(st socks5test.Stage, conn net.Conn, req *socks5test.Request) bool {
			if st != stage {
				return false
			}
			f(conn, req)
			return true
		}
	})
}

func TestFaultGreeting(t *testing.T) {
	t.Run("malformed method selection", func(t *testing.T) {
		srv := faultAt(t, socks5test.StageGreeting, func(conn net.Conn, req *socks5test.Request) {
			assert.Nil(t, req)
			conn.Write([]byte{0x04, 0x00})
		})
		c := dial(t, srv.Addr())
		_, err := c.Write(greeting(socksbind.AuthNone))
		require.NoError(t, err)
		got, err := io.ReadAll(c)
		assert.NoError(t, err)
		assert.Equal(t, []byte{0x04, 0x00}, got)
	})

	t.Run("close early", func(t *testing.T) {
		srv := faultAt(t, socks5test.StageGreeting, func(net.Conn, *socks5test.Request) {})
		c := dial(t, srv.Addr())
		_, err := c.Write(greeting(socksbind.AuthNone))
		require.NoError(t, err)
		_, err = readPair(c, srvwire.Version)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})
}

func TestFaultRequest(t *testing.T) {
	t.Run("truncated reply", func(t *testing.T) {
		srv := faultAt(t, socks5test.StageRequest, func(conn net.Conn, req *socks5test.Request) {
			assert.Equal(t, socksbind.CmdConnect, req.Command)
			conn.Write([]byte{0x05, 0x00, 0x00, 0x01, 127})
		})
		c := open(t, srv)
		sendRequest(t, c, socksbind.CmdConnect, addr(ip4, 1))
		_, _, err := srvwire.ReadMessage(c)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		// The request was recorded before the hook ran.
		require.Len(t, srv.Requests(), 1)
	})

	t.Run("stall until closed", func(t *testing.T) {
		entered := make(chan struct{})
		srv := faultAt(t, socks5test.StageRequest, func(conn net.Conn, _ *socks5test.Request) {
			close(entered)
			io.Copy(io.Discard, conn)
		})
		c := open(t, srv)
		sendRequest(t, c, socksbind.CmdBind, addr(any4, 0))
		<-entered
		assert.Zero(t, srv.ActiveBinds(), "no BIND before the hook")
		srv.Close()
		expectEOF(t, c)
	})
}

func TestFaultBindReply(t *testing.T) {
	t.Run("reply 2 and data in one segment", func(t *testing.T) {
		peers := make(chan net.Addr, 1)
		srv := faultAt(t, socks5test.StageBindReply, func(conn net.Conn, _ *socks5test.Request) {
			b := srvwire.AppendReply(nil, socksbind.ReplySucceeded, wireAddr(<-peers))
			conn.Write(append(b, "data right behind"...))
		})
		c, bnd := bind(t, srv, addr(any4, 0))
		peer := dial(t, bnd.String())
		peers <- peer.LocalAddr()
		rep, peerAddr := readReply(t, c)
		require.Equal(t, socksbind.ReplySucceeded, rep)
		assert.Equal(t, wireAddr(peer.LocalAddr()), peerAddr)
		got, err := io.ReadAll(c)
		assert.NoError(t, err)
		assert.Equal(t, "data right behind", string(got))
		// The server closed the peer it held for the connection.
		expectEOF(t, peer)
		assert.Zero(t, srv.ActiveBinds())
	})

	t.Run("close before reply 2", func(t *testing.T) {
		srv := faultAt(t, socks5test.StageBindReply, func(net.Conn, *socks5test.Request) {})
		c, bnd := bind(t, srv, addr(any4, 0))
		peer := dial(t, bnd.String())
		_, _, err := srvwire.ReadMessage(c)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		expectEOF(t, peer)
	})
}
