package socksbind_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/dnsserver"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/udptest"
	"github.com/socksbind/socksbind/socks5test"
)

// udpProxy starts a socks5test server with UDP ASSOCIATE and UDP-TUN.
func udpProxy(t *testing.T, setup func(*socks5test.Server)) *socks5test.Server {
	t.Helper()
	return newProxy(t, func(s *socks5test.Server) {
		s.UDP, s.UDPTun = true, true
		if setup != nil {
			setup(s)
		}
	})
}

var udpModes = []socksbind.UDPMode{socksbind.UDPAssociate, socksbind.UDPTunnel}

// udpSetup starts a proxy with UDP and a UDP echo server, and makes a
// PacketConn through the proxy with mode.
func udpSetup(t *testing.T, mode socksbind.UDPMode) (*socks5test.Server, netip.AddrPort, *socksbind.PacketConn) {
	t.Helper()
	srv := udpProxy(t, nil)
	return srv, udptest.Echo(t, "udp4", "127.0.0.1:0"), listenPacket(t, srv, mode)
}

// listenPacket makes a PacketConn through srv with mode, closed at the end
// of the test.
func listenPacket(t *testing.T, srv *socks5test.Server, mode socksbind.UDPMode) *socksbind.PacketConn {
	t.Helper()
	return listenPacketWith(t, srv, mode, "udp", "")
}

// listenPacketWith makes a PacketConn through srv with mode on network at
// local, closed at the end of the test.
func listenPacketWith(t *testing.T, srv *socks5test.Server, mode socksbind.UDPMode, network, local string) *socksbind.PacketConn {
	t.Helper()
	d := newDialer(t, srv)
	d.UDP = mode
	pc, err := d.ListenPacket(context.Background(), network, local)
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	return pc.(*socksbind.PacketConn)
}

// echoOnce sends msg to echo and returns what comes back, within 5 s.
func echoOnce(t *testing.T, pc net.PacketConn, echo netip.AddrPort, msg []byte) ([]byte, net.Addr) {
	t.Helper()
	require.NoError(t, pc.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(echo))
	require.NoError(t, err)
	buf := make([]byte, 65536)
	n, from, err := pc.ReadFrom(buf)
	require.NoError(t, err)
	return buf[:n], from
}

func TestUDPEcho(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			leakcheck.Check(t) // before the echo server, which closes first
			echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
			srv := udpProxy(t, func(s *socks5test.Server) {
				s.Hosts = map[string]netip.Addr{"echo.test": echo.Addr()}
			})
			pc := listenPacket(t, srv, mode)
			assert.Equal(t, mode, pc.Mode())
			for _, size := range []int{1, 2, 100, 1400, 4096, 9000, 65000} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				msg[0] = 0xAB
				got, from := echoOnce(t, pc, echo, msg)
				require.Equal(t, msg, got, "size %d", size)
				assert.Equal(t, echo.String(), from.String())
				assert.Equal(t, "udp", from.Network())
			}
			// A destination given by name reaches the proxy as a name.
			_, err := pc.WriteTo([]byte("named"), hostPortAddr(net.JoinHostPort("echo.test", strconv.Itoa(int(echo.Port())))))
			require.NoError(t, err)
			buf := make([]byte, 100)
			n, _, err := pc.ReadFrom(buf)
			require.NoError(t, err)
			assert.Equal(t, "named", string(buf[:n]))
			assert.Equal(t, socksbind.DropCounts{}, pc.Dropped())
		})
	}
}

// hostPortAddr is a net.Addr known by its text only.
type hostPortAddr string

func (a hostPortAddr) Network() string { return "udp" }
func (a hostPortAddr) String() string  { return string(a) }

func TestUDPAddrPortAPI(t *testing.T) {
	_, echo, pc := udpSetup(t, socksbind.UDPAssociate)
	require.NoError(t, pc.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := pc.WriteToUDPAddrPort([]byte("x"), echo)
	require.NoError(t, err)
	buf := make([]byte, 10)
	n, from, err := pc.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	assert.Equal(t, "x", string(buf[:n]))
	assert.Equal(t, echo, from)
}

func TestUDPShortBuffer(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			_, echo, pc := udpSetup(t, mode)
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, err := pc.WriteTo([]byte("0123456789"), net.UDPAddrFromAddrPort(echo))
			require.NoError(t, err)
			buf := make([]byte, 4)
			n, _, err := pc.ReadFrom(buf)
			require.NoError(t, err, "a short buffer gets the first bytes, as on *net.UDPConn")
			assert.Equal(t, "0123", string(buf[:n]))
		})
	}
}

func TestUDPOversized(t *testing.T) {
	for _, tt := range []struct {
		mode socksbind.UDPMode
		size int
	}{
		{socksbind.UDPAssociate, 65507 - 10 + 1},
		{socksbind.UDPTunnel, 65536},
		{socksbind.UDPTunnel, 0},
	} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			_, echo, pc := udpSetup(t, tt.mode)
			n, err := pc.WriteTo(make([]byte, tt.size), net.UDPAddrFromAddrPort(echo))
			assert.Zero(t, n)
			require.ErrorIs(t, err, socksbind.ErrDatagramTooLarge)
			assert.ErrorIs(t, err, syscall.EMSGSIZE)
			var op *net.OpError
			require.ErrorAs(t, err, &op)
			assert.Equal(t, "write", op.Op)
			// The largest that fits goes through whole.
			max := 65507 - 10
			if tt.mode == socksbind.UDPTunnel {
				max = 65535 - 10 // the echo's own IPv4 limit
			}
			if tt.mode == socksbind.UDPAssociate || tt.size != 0 {
				msg := bytes.Repeat([]byte{7}, max-20)
				got, _ := echoOnce(t, pc, echo, msg)
				assert.Equal(t, len(msg), len(got))
			}
		})
	}
}

func TestUDPDeadline(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			_, echo, pc := udpSetup(t, mode)
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
			_, _, err := pc.ReadFrom(make([]byte, 10))
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			assert.True(t, ne.Timeout())
			// A deadline in the past fails at once; clearing it makes the
			// PacketConn usable again.
			require.NoError(t, pc.SetReadDeadline(time.Unix(1, 0)))
			_, _, err = pc.ReadFrom(make([]byte, 10))
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.NoError(t, pc.SetReadDeadline(time.Time{}))
			got, _ := echoOnce(t, pc, echo, []byte("after"))
			assert.Equal(t, "after", string(got))
		})
	}
}

// A deadline set while a ReadFrom is blocked moves it.
func TestUDPDeadlineWhileBlocked(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			srv := udpProxy(t, nil)
			pc := listenPacket(t, srv, mode)
			errc := make(chan error, 1)
			go func() {
				_, _, err := pc.ReadFrom(make([]byte, 10))
				errc <- err
			}()
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
			select {
			case err := <-errc:
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			case <-time.After(5 * time.Second):
				t.Fatal("ReadFrom still blocked after its deadline")
			}
		})
	}
}

func TestUDPClose(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			_, echo, pc := udpSetup(t, mode)
			errc := make(chan error, 2)
			for range 2 {
				go func() {
					_, _, err := pc.ReadFrom(make([]byte, 10))
					errc <- err
				}()
			}
			require.NoError(t, pc.Close())
			for range 2 {
				err := <-errc
				require.ErrorIs(t, err, net.ErrClosed)
			}
			_, err := pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(echo))
			require.ErrorIs(t, err, net.ErrClosed)
			assert.NoError(t, pc.Close(), "a second Close returns nil")
		})
	}
}

// The proxy's end of the control connection ends the association: every
// blocked and later read and write fails with ErrAssociationEnded.
func TestUDPControlEnds(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			srv, echo, pc := udpSetup(t, mode)
			errc := make(chan error, 1)
			go func() {
				_, _, err := pc.ReadFrom(make([]byte, 10))
				errc <- err
			}()
			srv.Close()
			select {
			case err := <-errc:
				require.ErrorIs(t, err, socksbind.ErrAssociationEnded)
				var op *net.OpError
				require.ErrorAs(t, err, &op)
				assert.Equal(t, "read", op.Op)
				assert.Equal(t, srv.Addr(), op.Source.String())
			case <-time.After(time.Second):
				t.Fatal("ReadFrom still blocked 1 s after the control connection ended")
			}
			_, err := pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(echo))
			require.ErrorIs(t, err, socksbind.ErrAssociationEnded)
			require.ErrorIs(t, pc.SetReadDeadline(time.Time{}), socksbind.ErrAssociationEnded)
		})
	}
}

// Datagrams from anyone but the relay are dropped and counted.
func TestUDPSpoofedSource(t *testing.T) {
	srv := udpProxy(t, func(s *socks5test.Server) {
		s.Hooks.Datagram = func(pkt []byte) []socks5test.Datagram {
			return []socks5test.Datagram{{Bytes: pkt, Spoofed: true}, {Bytes: append([]byte(nil), pkt...)}}
		}
	})
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	pc := listenPacket(t, srv, socksbind.UDPAssociate)
	for range 3 {
		got, _ := echoOnce(t, pc, echo, []byte("real"))
		assert.Equal(t, "real", string(got))
	}
	// The spoofed copy of each went first; the counts may lag behind the
	// last by a datagram still in the socket.
	assert.GreaterOrEqual(t, pc.Dropped().Foreign, uint64(2))

	// And one from a local socket of this test, to the PacketConn's port.
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer other.Close()
	local := pc.LocalAddr().(*net.UDPAddr)
	_, err = other.WriteToUDP([]byte("\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35spoofed"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: local.Port})
	require.NoError(t, err)
	got, _ := echoOnce(t, pc, echo, []byte("still real"))
	assert.Equal(t, "still real", string(got))
}

func TestUDPThroughForward(t *testing.T) {
	srv := udpProxy(t, nil)
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	fwd := forwardDialer{}
	t.Run("associate refused", func(t *testing.T) {
		d := newDialer(t, srv)
		d.Forward = fwd
		_, err := d.ListenPacket(context.Background(), "udp", "")
		require.ErrorIs(t, err, socksbind.ErrForwardedAssociate)
		var op *net.OpError
		require.ErrorAs(t, err, &op)
		assert.Equal(t, "socks udp associate", op.Op)
		assert.Empty(t, srv.Requests(), "nothing reached the proxy")
	})
	t.Run("a net.Dialer is direct", func(t *testing.T) {
		d := newDialer(t, srv)
		d.Forward = &net.Dialer{}
		pc, err := d.ListenPacket(context.Background(), "udp", "")
		require.NoError(t, err)
		defer pc.Close()
		assert.Equal(t, socksbind.UDPAssociate, pc.(*socksbind.PacketConn).Mode())
		got, _ := echoOnce(t, pc, echo, []byte("direct"))
		assert.Equal(t, "direct", string(got))
	})
	for _, mode := range []socksbind.UDPMode{socksbind.UDPTunnel, socksbind.UDPAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			d := newDialer(t, srv)
			d.Forward, d.UDP = fwd, mode
			pc, err := d.ListenPacket(context.Background(), "udp", "")
			require.NoError(t, err)
			defer pc.Close()
			assert.Equal(t, socksbind.UDPTunnel, pc.(*socksbind.PacketConn).Mode())
			got, _ := echoOnce(t, pc, echo, []byte("tunnelled"))
			assert.Equal(t, "tunnelled", string(got))
		})
	}
}

// forwardDialer is a forward dialer that is not proxy.Direct.
type forwardDialer struct{}

func (forwardDialer) Dial(network, addr string) (net.Conn, error) {
	return proxy.Direct.Dial(network, addr)
}

func TestUDPAutoFallsBack(t *testing.T) {
	srv := newProxy(t, func(s *socks5test.Server) { s.UDPTun = true })
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	d := newDialer(t, srv)
	d.UDP = socksbind.UDPAuto
	pc, err := d.ListenPacket(context.Background(), "udp", "")
	require.NoError(t, err)
	defer pc.Close()
	assert.Equal(t, socksbind.UDPTunnel, pc.(*socksbind.PacketConn).Mode())
	got, _ := echoOnce(t, pc, echo, []byte("fallback"))
	assert.Equal(t, "fallback", string(got))
}

func TestUDPNotSupported(t *testing.T) {
	srv := newProxy(t, nil) // replies 7 to UDP ASSOCIATE, as microsocks
	for _, mode := range []socksbind.UDPMode{socksbind.UDPAssociate, socksbind.UDPAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			d := newDialer(t, srv)
			d.UDP = mode
			_, err := d.ListenPacket(context.Background(), "udp", "")
			require.ErrorIs(t, err, socksbind.ErrCommandNotSupported)
			var re *socksbind.ReplyError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, socksbind.CmdUDPAssociate, re.Command)
		})
	}
	t.Run("tun", func(t *testing.T) {
		d := newDialer(t, srv)
		d.UDP = socksbind.UDPTunnel
		_, err := d.ListenPacket(context.Background(), "udp", "")
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "closed without a reply, as Dante does")
	})
}

func TestUDPBadArguments(t *testing.T) {
	srv := udpProxy(t, nil)
	d := newDialer(t, srv)
	_, err := d.ListenPacket(context.Background(), "tcp", "")
	var une net.UnknownNetworkError
	require.ErrorAs(t, err, &une)
	d.UDP = socksbind.UDPTunnel
	_, err = d.ListenPacket(context.Background(), "udp", "127.0.0.1:5353")
	require.Error(t, err, "UDP-TUN has no local socket to bind")
	assert.Empty(t, srv.Requests())
}

// A connected UDP conn from DialContext resolves names through the proxy
// with the Go resolver, which frames DNS for UDP on it.
func TestUDPResolver(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			srv := udpProxy(t, nil)
			dns := dnsserver.Start(t, map[string][]netip.Addr{
				"api.example.": {netip.MustParseAddr("127.0.0.7"), netip.MustParseAddr("::1")},
			})
			d := newDialer(t, srv)
			d.UDP = mode
			var mu sync.Mutex
			var dialed []string
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				mu.Lock()
				dialed = append(dialed, network)
				mu.Unlock()
				return d.DialContext(ctx, network, dns.String())
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ips, err := r.LookupNetIP(ctx, "ip", "api.example")
			require.NoError(t, err)
			assert.ElementsMatch(t, []netip.Addr{netip.MustParseAddr("127.0.0.7"), netip.MustParseAddr("::1")}, ips)
			mu.Lock()
			assert.NotContains(t, dialed, "tcp", "UDP framing, no fallback to TCP")
			mu.Unlock()
			assert.Positive(t, dns.Queries(), "the DNS server was asked")
		})
	}
}

func TestUDPDialConn(t *testing.T) {
	srv := udpProxy(t, nil)
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	d := newDialer(t, srv)
	c, err := d.DialContext(context.Background(), "udp", echo.String())
	require.NoError(t, err)
	defer c.Close()
	_, ok := c.(net.PacketConn)
	assert.True(t, ok)
	assert.Equal(t, echo.String(), c.RemoteAddr().String())
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 10)
	n, err := c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(buf[:n]))

	// Datagrams from other sources do not reach Read.
	other := udptest.Echo(t, "udp4", "127.0.0.1:0")
	pc := c.(net.PacketConn)
	_, err = pc.WriteTo([]byte("other"), net.UDPAddrFromAddrPort(other))
	require.NoError(t, err)
	_, err = c.Write([]byte("mine"))
	require.NoError(t, err)
	n, err = c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "mine", string(buf[:n]))
}

func TestUDPHandshakeBounded(t *testing.T) {
	srv := udpProxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
			if stage != socks5test.StageRequest {
				return false
			}
			c.Read(make([]byte, 1)) // silent until closed
			return true
		}
	})
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			d := newDialer(t, srv)
			d.UDP = mode
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := d.ListenPacket(ctx, "udp", "")
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Less(t, time.Since(start), 5*time.Second)
			var op *net.OpError
			require.True(t, errors.As(err, &op))
		})
	}
}

// A relay reported as 0.0.0.0 stands for the proxy's IP: from
// ProxyAddress, or from the control connection when that is a name.
func TestUDPUnspecifiedRelay(t *testing.T) {
	srv := udpProxy(t, func(s *socks5test.Server) { s.ReportUnspecified = true })
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	_, port, err := net.SplitHostPort(srv.Addr())
	require.NoError(t, err)
	for _, addr := range []string{srv.Addr(), net.JoinHostPort("localhost", port)} {
		t.Run(addr, func(t *testing.T) {
			d := &socksbind.Dialer{ProxyAddress: addr, Resolver: &net.Resolver{PreferGo: true, Dial: noDNS}}
			pc, err := d.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
			require.NoError(t, err)
			defer pc.Close()
			got, _ := echoOnce(t, pc, echo, []byte("via 0.0.0.0"))
			assert.Equal(t, "via 0.0.0.0", string(got))
		})
	}
}

// noDNS refuses every DNS query: names come from the hosts file or fail.
func noDNS(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no DNS in tests")
}

// The ASSOCIATE request declares the local socket: its port always, its IP
// when one was given.
func TestUDPDeclaresLocalAddr(t *testing.T) {
	srv := udpProxy(t, nil)
	for _, local := range []string{"", "127.0.0.1:0"} {
		pc := listenPacketWith(t, srv, socksbind.UDPAssociate, "udp4", local)
		la := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		reqs := srv.Requests()
		dst := reqs[len(reqs)-1].Dst
		assert.Equal(t, la.Port(), dst.Port, "local %q", local)
		if local == "" {
			assert.True(t, !dst.IP.IsValid() || dst.IP.IsUnspecified(), "%v", dst)
		} else {
			assert.Equal(t, "127.0.0.1", dst.IP.String())
		}
	}
}

func TestUDPWriteDeadline(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			_, echo, pc := udpSetup(t, mode)
			require.NoError(t, pc.SetWriteDeadline(time.Unix(1, 0)))
			_, err := pc.WriteTo([]byte("late"), net.UDPAddrFromAddrPort(echo))
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			assert.True(t, ne.Timeout())
			require.NoError(t, pc.SetDeadline(time.Time{}))
			got, _ := echoOnce(t, pc, echo, []byte("in time"))
			assert.Equal(t, "in time", string(got), "a write that timed out before its first byte leaves the PacketConn usable")
		})
	}
}

// An empty datagram travels with UDP ASSOCIATE (a header alone).
func TestUDPEmptyDatagram(t *testing.T) {
	_, echo, pc := udpSetup(t, socksbind.UDPAssociate)
	got, from := echoOnce(t, pc, echo, nil)
	assert.Empty(t, got)
	assert.Equal(t, echo.String(), from.String())
}

// Concurrent writers and readers: every datagram that arrives is one that
// was sent, whole (UDP-TUN frames never interleave).
func TestUDPConcurrent(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			_, echo, pc := udpSetup(t, mode)
			const writers, each = 4, 100
			msg := func(w, i int) []byte {
				b := bytes.Repeat([]byte{byte(w), byte(i)}, 1+(w*each+i)%700)
				return b
			}
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						if _, err := pc.WriteTo(msg(w, i), net.UDPAddrFromAddrPort(echo)); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			received := 0
			buf := make([]byte, 2000)
			for received < writers*each {
				// Long for the first, which must come; then short, as
				// the rest may have been lost.
				wait := 300 * time.Millisecond
				if received == 0 {
					wait = 10 * time.Second
				}
				require.NoError(t, pc.SetReadDeadline(time.Now().Add(wait)))
				n, _, err := pc.ReadFrom(buf)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // the rest was lost on the way, which UDP may do
				}
				require.NoError(t, err)
				require.GreaterOrEqual(t, n, 2)
				require.Equal(t, msg(int(buf[0]), int(buf[1])), buf[:n], "datagram intact")
				received++
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			t.Logf("%d of %d datagrams came back; drops %+v", received, writers*each, pc.Dropped())
			assert.Positive(t, received)
		})
	}
}

// A reader that falls behind on UDP-TUN loses datagrams, as on a UDP socket,
// counted as Overflow, and the tunnel goes on.
func TestUDPTunOverflow(t *testing.T) {
	_, echo, pc := udpSetup(t, socksbind.UDPTunnel)
	// Nobody reads: send until the queue overflows. A datagram lost on
	// the way (UDP between the relay and the echo server) only delays it.
	for i := 0; pc.Dropped().Overflow == 0; i++ {
		require.Less(t, i, 5000, "no overflow")
		_, err := pc.WriteTo([]byte{byte(i)}, net.UDPAddrFromAddrPort(echo))
		require.NoError(t, err)
		if i >= 64 {
			deadline := time.Now().Add(10 * time.Millisecond)
			for pc.Dropped().Overflow == 0 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	// Read the queue: the datagrams held before the overflow.
	buf := make([]byte, 100)
	queued := 0
	for {
		require.NoError(t, pc.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
		_, _, err := pc.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		require.NoError(t, err)
		queued++
	}
	assert.GreaterOrEqual(t, queued, 64, "the queue held 64")
	got, _ := echoOnce(t, pc, echo, []byte("still there"))
	for string(got) != "still there" { // a straggler
		n, _, err := pc.ReadFrom(buf)
		require.NoError(t, err)
		got = buf[:n]
	}
	t.Logf("%d queued; drops %+v", queued, pc.Dropped())
}

// With ResolveLocally, a destination's name is resolved here and the proxy
// gets an IP; without, the proxy gets the name. The proxy's hosts table and
// the local resolver disagree on purpose, so the reply's source says which
// resolved it.
func TestUDPResolveLocally(t *testing.T) {
	leakcheck.Check(t)
	// One port on two IPs: what the local resolver says, and what the
	// proxy says.
	local := udptest.Echo(t, "udp4", "127.0.0.1:0")
	remote := udptest.Echo(t, "udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), local.Port()).String())
	dns := dnsserver.Start(t, map[string][]netip.Addr{"echo.test": {local.Addr()}})
	srv := udpProxy(t, func(s *socks5test.Server) {
		s.Hosts = map[string]netip.Addr{"echo.test": remote.Addr()}
	})
	name := hostPortAddr(net.JoinHostPort("echo.test", strconv.Itoa(int(local.Port()))))
	for _, tt := range []struct {
		locally bool
		want    netip.AddrPort
	}{{false, remote}, {true, local}} {
		for _, mode := range udpModes {
			d := newDialer(t, srv)
			d.UDP, d.ResolveLocally = mode, tt.locally
			d.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var nd net.Dialer
				return nd.DialContext(ctx, network, dns.String())
			}}
			pc, err := d.ListenPacket(context.Background(), "udp", "")
			require.NoError(t, err)
			_, err = pc.WriteTo([]byte("x"), name)
			require.NoError(t, err)
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, from, err := pc.ReadFrom(make([]byte, 10))
			require.NoError(t, err, "locally %v, %v", tt.locally, mode)
			assert.Equal(t, tt.want.String(), from.String())
			pc.Close()
		}
	}
}

// A nil Dialer or context is an error, as for Dial and Listen.
func TestUDPNilArguments(t *testing.T) {
	var d *socksbind.Dialer
	var nilCtx context.Context
	err := misuse(t, func() (net.PacketConn, error) { return d.ListenPacket(context.Background(), "udp", "") })
	assert.ErrorIs(t, err, socksbind.ErrNoProxy)
	err = misuse(t, func() (net.Conn, error) { return d.DialContext(context.Background(), "udp", "127.0.0.1:53") })
	assert.ErrorIs(t, err, socksbind.ErrNoProxy)
	live := &socksbind.Dialer{ProxyAddress: udpProxy(t, nil).Addr()}
	misuse(t, func() (net.PacketConn, error) { return live.ListenPacket(nilCtx, "udp", "") })
	misuse(t, func() (net.Conn, error) { return live.DialContext(nilCtx, "udp", "127.0.0.1:53") })
}
