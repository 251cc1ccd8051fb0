package proxyext

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/connectproxy"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

// chain is a proxy chain of a test: the dialer of its last hop, and a
// check of what each hop saw.
type chain struct {
	d     ListenDialer
	check func(t *testing.T, target string)
}

// chains builds the chains of the tests; each ends in a SOCKS5 server in
// BindReuse mode, so that a BIND listener keeps its port.
var chains = []struct {
	name  string
	build func(t *testing.T) chain
}{
	{"socks5h over http", func(t *testing.T) chain {
		cp := connectproxy.NewServer()
		t.Cleanup(cp.Close)
		last := startSOCKS(t, nil, socks5test.BindReuse)
		hop, err := FromURL(mustParse(t, cp.URL), nil)
		require.NoError(t, err)
		d, err := FromURL(mustParse(t, "socks5h://"+last.Addr()), hop)
		require.NoError(t, err)
		return chain{d: d.(ListenDialer), check: func(t *testing.T, target string) {
			assertTunnels(t, cp, last.Addr())
			assertSOCKS(t, last, target, "")
		}}
	}},
	{"socks5h over https, both with credentials", func(t *testing.T) chain {
		cp := connectproxy.NewUnstartedServer()
		cp.Users = map[string]string{"hop": "hop-" + secret}
		cp.StartTLS()
		t.Cleanup(cp.Close)
		last := startSOCKS(t, map[string]string{"user": secret}, socks5test.BindReuse)
		hop, err := FromURL(mustParse(t, cp.URLWithUser("hop", "hop-"+secret)), nil)
		require.NoError(t, err)
		trustTestCA(t, hop)
		u := mustParse(t, last.URLWithUser("user", secret))
		u.Scheme = "socks5h"
		d, err := FromURL(u, hop)
		require.NoError(t, err)
		return chain{d: d.(ListenDialer), check: func(t *testing.T, target string) {
			assertTunnels(t, cp, last.Addr())
			for _, r := range cp.Requests() {
				assert.Equal(t, "hop", r.User)
			}
			assertSOCKS(t, last, target, "user")
		}}
	}},
	{"socks5h over socks5h", func(t *testing.T) chain {
		first := startSOCKS(t, map[string]string{"first": secret}, socks5test.BindDante)
		last := startSOCKS(t, nil, socks5test.BindReuse)
		hop, err := FromURL(mustParse(t, "socks5h://first:"+secret+"@"+first.Addr()), nil)
		require.NoError(t, err)
		d, err := FromURL(mustParse(t, "socks5h://"+last.Addr()), hop)
		require.NoError(t, err)
		return chain{d: d.(ListenDialer), check: func(t *testing.T, target string) {
			assertConnects(t, first, last.Addr(), "first")
			assertSOCKS(t, last, target, "")
		}}
	}},
	{"socks5 over socks5", func(t *testing.T) chain {
		first := startSOCKS(t, nil, socks5test.BindDante)
		last := startSOCKS(t, nil, socks5test.BindReuse)
		hop, err := FromURL(mustParse(t, "socks5://"+first.Addr()), nil)
		require.NoError(t, err)
		d, err := FromURL(mustParse(t, "socks5://"+last.Addr()), hop)
		require.NoError(t, err)
		withResolver(t, d, (&fakeResolver{hosts: map[string]netip.Addr{echoName: loopback4}}).resolver())
		return chain{d: d.(ListenDialer), check: func(t *testing.T, target string) {
			assertConnects(t, first, last.Addr(), "")
			assertSOCKS(t, last, target, "")
		}}
	}},
	{"socks5h over socks5h over http", func(t *testing.T) chain {
		cp := connectproxy.NewServer()
		t.Cleanup(cp.Close)
		middle := startSOCKS(t, nil, socks5test.BindDante)
		last := startSOCKS(t, nil, socks5test.BindReuse)
		hop1, err := FromURL(mustParse(t, cp.URL), nil)
		require.NoError(t, err)
		hop2, err := FromURL(mustParse(t, "socks5h://"+middle.Addr()), hop1)
		require.NoError(t, err)
		d, err := FromURL(mustParse(t, "socks5h://"+last.Addr()), hop2)
		require.NoError(t, err)
		return chain{d: d.(ListenDialer), check: func(t *testing.T, target string) {
			assertTunnels(t, cp, middle.Addr())
			assertConnects(t, middle, last.Addr(), "")
			assertSOCKS(t, last, target, "")
		}}
	}},
	{"socks5h over a plain proxy.Dialer", func(t *testing.T) chain {
		last := startSOCKS(t, nil, socks5test.BindReuse)
		fwd := newRecorder()
		d, err := FromURL(mustParse(t, "socks5h://"+last.Addr()), plainOf{fwd})
		require.NoError(t, err)
		return chain{d: d.(ListenDialer), check: func(t *testing.T, target string) {
			for _, a := range fwd.Addresses() {
				assert.Equal(t, last.Addr(), a)
			}
			assertSOCKS(t, last, target, "")
		}}
	}},
}

// plainOf hides DialContext.
type plainOf struct{ d proxy.Dialer }

func (p plainOf) Dial(network, address string) (net.Conn, error) { return p.d.Dial(network, address) }

// assertTunnels checks that every request an HTTP hop saw was a CONNECT to
// next.
func assertTunnels(t *testing.T, cp *connectproxy.Server, next string) {
	t.Helper()
	reqs := cp.Requests()
	require.NotEmpty(t, reqs)
	for _, r := range reqs {
		assert.Equal(t, "CONNECT", r.Method)
		assert.Equal(t, next, r.Target)
	}
}

// assertConnects checks that every request a SOCKS hop saw was a CONNECT to
// next, as an IP address.
func assertConnects(t *testing.T, srv *socks5test.Server, next, user string) {
	t.Helper()
	reqs := srv.Requests()
	require.NotEmpty(t, reqs)
	for _, r := range reqs {
		assert.Equal(t, socksbind.CmdConnect, r.Command)
		assert.Equal(t, next, netip.AddrPortFrom(r.Dst.IP, r.Dst.Port).String())
		assert.Equal(t, user, r.User)
	}
}

// assertSOCKS checks the requests of the last hop: a CONNECT to target
// when target is set, BINDs otherwise.
func assertSOCKS(t *testing.T, srv *socks5test.Server, target, user string) {
	t.Helper()
	reqs := srv.Requests()
	require.NotEmpty(t, reqs)
	for _, r := range reqs {
		assert.Equal(t, user, r.User)
		if target == "" {
			assert.Equal(t, socksbind.CmdBind, r.Command)
			continue
		}
		assert.Equal(t, socksbind.CmdConnect, r.Command)
		host, _, _ := net.SplitHostPort(target)
		if kindOf(r.Dst) == kindDomain {
			assert.Equal(t, host, r.Dst.Name)
		} else {
			assert.Equal(t, loopback4, r.Dst.IP, "resolved locally")
		}
	}
}

func TestChainDial(t *testing.T) {
	for _, tt := range chains {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			target := net.JoinHostPort(echoName, testkit.Port(testkit.Echo(t, "tcp").Addr()))
			ch := tt.build(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			c, err := ch.d.DialContext(ctx, "tcp", target)
			require.NoError(t, err)
			defer c.Close()
			assertEcho(t, c)
			ch.check(t, target)
		})
	}
}

func TestChainListen(t *testing.T) {
	for _, tt := range chains {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Check(t)
			ch := tt.build(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			ln, err := listenFreePort(t, func(address string) (net.Listener, error) {
				return ch.d.Listen(ctx, "tcp", address)
			})
			require.NoError(t, err)
			_, ok := ln.(*socksbind.Listener)
			assert.True(t, ok, "%T", ln)
			serveHTTP(t, ln, 4)
			ch.check(t, "")
		})
	}
}

// TestCancelFirstHop cancels a dial or a listen while the first hop of a
// chain stalls in its handshake, and expects it to return at once.
func TestCancelFirstHop(t *testing.T) {
	stalls := []struct {
		name  string
		build func(t *testing.T, stalled chan<- struct{}) proxy.Dialer
	}{
		{"http CONNECT unanswered", func(t *testing.T, stalled chan<- struct{}) proxy.Dialer {
			cp := connectproxy.NewUnstartedServer()
			cp.Stall = true
			cp.OnRequest = func(connectproxy.Request) { stalled <- struct{}{} }
			cp.Start()
			t.Cleanup(cp.Close)
			hop, err := FromURL(mustParse(t, cp.URL), nil)
			require.NoError(t, err)
			return hop
		}},
		{"https handshake unanswered", func(t *testing.T, stalled chan<- struct{}) proxy.Dialer {
			addr := silentServer(t, stalled)
			hop, err := FromURL(mustParse(t, "https://"+addr), nil)
			require.NoError(t, err)
			return hop
		}},
		{"socks5 greeting unanswered", func(t *testing.T, stalled chan<- struct{}) proxy.Dialer {
			srv := testkit.Proxy(t, func(srv *socks5test.Server) {
				srv.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
					stalled <- struct{}{}
					io.Copy(io.Discard, c)
					return true
				}
			})
			hop, err := FromURL(mustParse(t, "socks5h://"+srv.Addr()), nil)
			require.NoError(t, err)
			return hop
		}},
		{"tcp accept queue", func(t *testing.T, stalled chan<- struct{}) proxy.Dialer {
			// A plain forward dialer whose Dial blocks: the chain
			// gives up on it without waiting.
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			return blockingDialer{stalled: stalled, release: release}
		}},
	}
	ops := []struct {
		name string
		run  func(ctx context.Context, d ListenDialer) error
	}{
		{"dial", func(ctx context.Context, d ListenDialer) error {
			c, err := d.DialContext(ctx, "tcp", echoName+":80")
			if c != nil {
				c.Close()
			}
			return err
		}},
		{"listen", func(ctx context.Context, d ListenDialer) error {
			ln, err := d.Listen(ctx, "tcp", ":0")
			if ln != nil {
				ln.Close()
			}
			return err
		}},
	}
	for _, st := range stalls {
		for _, op := range ops {
			t.Run(st.name+"/"+op.name, func(t *testing.T) {
				leakcheck.Check(t)
				stalled := make(chan struct{}, 1)
				hop := st.build(t, stalled)
				last := startSOCKS(t, nil, socks5test.BindDante)
				d, err := FromURL(mustParse(t, "socks5h://"+last.Addr()), hop)
				require.NoError(t, err)

				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				errc := make(chan error, 1)
				go func() { errc <- op.run(ctx, d.(ListenDialer)) }()
				select {
				case <-stalled:
				case err := <-errc:
					t.Fatalf("returned before the stall: %v", err)
				case <-time.After(testTimeout):
					t.Fatal("the first hop never stalled")
				}
				start := time.Now()
				cancel()
				select {
				case err := <-errc:
					elapsed := time.Since(start)
					assert.Less(t, elapsed, 200*time.Millisecond)
					require.Error(t, err)
					assert.ErrorIs(t, err, context.Canceled)
				case <-time.After(testTimeout):
					t.Fatal("cancellation did not reach the first hop")
				}
				assert.Empty(t, last.Requests(), "the last hop was never reached")
			})
		}
	}
}

// TestDeadlineFirstHop is TestCancelFirstHop with a deadline.
func TestDeadlineFirstHop(t *testing.T) {
	leakcheck.Check(t)
	cp := connectproxy.NewUnstartedServer()
	cp.Stall = true
	cp.Start()
	t.Cleanup(cp.Close)
	hop, err := FromURL(mustParse(t, cp.URL), nil)
	require.NoError(t, err)
	d, err := FromURL(mustParse(t, "socks5h://127.0.0.1:1080"), hop)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = d.(ListenDialer).DialContext(ctx, "tcp", echoName+":80")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 250*time.Millisecond)
}

// silentServer accepts connections and reads them without ever writing,
// until the test ends. It signals each accepted connection.
func silentServer(t *testing.T, accepted chan<- struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		accepted <- struct{}{}
		io.Copy(io.Discard, c)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// blockingDialer is a proxy.Dialer without DialContext whose Dial blocks
// until the test ends.
type blockingDialer struct {
	stalled chan<- struct{}
	release <-chan struct{}
}

func (b blockingDialer) Dial(network, address string) (net.Conn, error) {
	b.stalled <- struct{}{}
	<-b.release
	return nil, io.ErrClosedPipe
}
