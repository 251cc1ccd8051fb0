package socksbind_test

// Scripted proxies that answer, byte for byte, as servers the integration
// tests do not run: OpenSSH's ssh -D and tor (see SOCKS-NOTES, "Other
// servers tried").

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/hostile"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/proxyext"
	"github.com/socksbind/socksbind/socks5test"
)

// scriptedProxy starts a hostile server that plays script on every
// connection, and closes it when the test ends.
func scriptedProxy(t *testing.T, script ...hostile.Step) *hostile.Server {
	t.Helper()
	leakcheck.Check(t)
	srv := hostile.NewServer(script...)
	t.Cleanup(srv.Close)
	return srv
}

// commandLog is a step that reads a request and records its command.
type commandLog struct {
	mu   sync.Mutex
	cmds []socksbind.Command
}

func (l *commandLog) readRequest() hostile.Step {
	return func(c *hostile.Conn) error {
		cmd, _, err := srvwire.ReadRequest(c)
		if err != nil {
			return err
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.cmds = append(l.cmds, socksbind.Command(cmd))
		return nil
	}
}

func (l *commandLog) commands() []socksbind.Command {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]socksbind.Command(nil), l.cmds...)
}

// sshDashD is OpenSSH's dynamic forwarding (ssh -D): it chooses "no
// authentication", reads the request, and closes without a reply to any
// command but CONNECT.
func sshDashD(requests *commandLog) []hostile.Step {
	return []hostile.Step{hostile.ReadGreeting(), hostile.Write([]byte{5, 0}), requests.readRequest(), hostile.Cut()}
}

// torPipelined is tor 0.4.9 given a greeting and a command it lacks in one
// write: the 10-byte failure reply "command not supported" alone, with no
// method selection before it, and a close.
func torPipelined(requests *commandLog) []hostile.Step {
	return []hostile.Step{hostile.ReadGreeting(), requests.readRequest(),
		hostile.Write([]byte{5, 7, 0, 1, 0, 0, 0, 0, 0, 0}), hostile.Cut()}
}

// testContext bounds an operation of a test by 10 s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// BIND through ssh -D, which closes without a reply, fails as a proxy's
// reply 7 would: with an error matching ErrCommandNotSupported, as MBIND's
// same case does, whatever the Multiplex setting and with or without
// pipelining.
func TestSSHDashDBind(t *testing.T) {
	for _, pipeline := range []bool{false, true} {
		for _, mux := range []socksbind.Multiplex{socksbind.MultiplexOff, socksbind.MultiplexOn, socksbind.MultiplexAuto} {
			t.Run(mux.String()+map[bool]string{false: "", true: "/pipelined"}[pipeline], func(t *testing.T) {
				var requests commandLog
				srv := scriptedProxy(t, sshDashD(&requests)...)
				d := &socksbind.Dialer{ProxyAddress: srv.Addr(), Pipeline: pipeline}
				lc := socksbind.ListenConfig{Dialer: d, Multiplex: mux}
				ln, err := lc.Listen(testContext(t), "tcp", ":0")
				if ln != nil {
					ln.Close()
				}
				require.Error(t, err)
				assert.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the cause is kept")
				var op *net.OpError
				require.ErrorAs(t, err, &op)
				want := map[socksbind.Multiplex][]socksbind.Command{
					socksbind.MultiplexOff:  {socksbind.CmdBind},
					socksbind.MultiplexOn:   {socksbind.CmdMultiplexBind},
					socksbind.MultiplexAuto: {socksbind.CmdMultiplexBind, socksbind.CmdBind},
				}[mux]
				assert.Equal(t, want, requests.commands())
				assert.Equal(t, "socks "+want[len(want)-1].String(), op.Op)
				t.Log(err)
			})
		}
	}
}

// A BIND listener whose proxy closes a re-arm without a reply keeps going:
// that proxy has the command, and the close is trouble that may pass.
func TestRearmClosedWithoutReply(t *testing.T) {
	srv := newProxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = closeBind(2)
	})
	var retries retryLog
	armed, hook := armedHook()
	ln := listen(t, srv, socksbind.ListenConfig{Armed: hook, Retrying: retries.hook}, ":0")
	dialPeer(t, ln.Addr())
	accept(t, ln)
	a := waitArmed(t, armed)
	dialPeer(t, a)
	accept(t, ln)
	errs, _ := retries.snapshot()
	require.Len(t, errs, 1, "one re-arm closed without a reply")
	assert.ErrorIs(t, errs[0], io.ErrUnexpectedEOF)
	assert.NotErrorIs(t, errs[0], socksbind.ErrCommandNotSupported)
}

// closeBind makes the server close, with no reply, the BIND request whose
// number (from 1) is n.
func closeBind(n int) func(socks5test.Stage, net.Conn, *socks5test.Request) bool {
	var mu sync.Mutex
	seen := 0
	return func(stage socks5test.Stage, _ net.Conn, req *socks5test.Request) bool {
		if stage != socks5test.StageRequest || req.Command != socksbind.CmdBind {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		return seen == n
	}
}

// Tor's failure reply to a pipelined handshake is read as the reply it is,
// not as a method choice, so ?bind=auto&pipeline=1 falls back from MBIND to
// BIND, and both failures match ErrCommandNotSupported.
func TestTorPipelined(t *testing.T) {
	t.Run("dialer", func(t *testing.T) {
		for _, cmd := range []socksbind.Multiplex{socksbind.MultiplexOff, socksbind.MultiplexOn} {
			t.Run(cmd.String(), func(t *testing.T) {
				var requests commandLog
				srv := scriptedProxy(t, torPipelined(&requests)...)
				d := &socksbind.Dialer{ProxyAddress: srv.Addr(), Pipeline: true}
				lc := socksbind.ListenConfig{Dialer: d, Multiplex: cmd}
				_, err := lc.Listen(testContext(t), "tcp", ":0")
				require.Error(t, err)
				var re *socksbind.ReplyError
				require.ErrorAs(t, err, &re, "%v", err)
				assert.Equal(t, socksbind.ReplyCommandNotSupported, re.Reply)
				assert.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
				assert.NotErrorIs(t, err, socksbind.ErrProtocolViolation)
			})
		}
	})
	t.Run("bind=auto&pipeline=1", func(t *testing.T) {
		var requests commandLog
		srv := scriptedProxy(t, torPipelined(&requests)...)
		u, err := url.Parse("socks5h://" + srv.Addr() + "?bind=auto&pipeline=1")
		require.NoError(t, err)
		pd, err := proxyext.FromURL(u, nil)
		require.NoError(t, err)
		_, err = pd.(proxyext.ListenDialer).Listen(testContext(t), "tcp", ":0")
		require.Error(t, err)
		assert.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
		var op *net.OpError
		require.ErrorAs(t, err, &op)
		assert.Equal(t, "socks bind", op.Op, "the error is that of the BIND fallen back to")
		assert.Equal(t, []socksbind.Command{socksbind.CmdMultiplexBind, socksbind.CmdBind}, requests.commands())
	})
}

// A proxy that chose a method that was not offered, and waits for it,
// still fails at once with ErrProtocolViolation, even when that method's
// number is also a reply code: what follows is no reply.
func TestPipelineUnofferedMethod(t *testing.T) {
	// GSSAPI (1) chosen for a greeting that offered "no authentication";
	// the proxy then reads the GSSAPI message it expects, finds the
	// pipelined request instead, and closes.
	srv := scriptedProxy(t, hostile.ReadGreeting(), hostile.Write([]byte{5, 1}), hostile.ReadRequest(), hostile.Cut())
	d := &socksbind.Dialer{ProxyAddress: srv.Addr(), Pipeline: true}
	_, err := d.DialContext(testContext(t), "tcp", "127.0.0.1:9")
	require.Error(t, err)
	assert.ErrorIs(t, err, socksbind.ErrProtocolViolation)
	assert.Contains(t, err.Error(), "proxy chose GSSAPI")
}
