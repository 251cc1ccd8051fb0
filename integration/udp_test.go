package integration

// UDP through real proxies: UDP ASSOCIATE through Dante and GOST, GOST's
// UDP-TUN directly and through an HTTP CONNECT hop (tinyproxy), DNS through
// the proxy, and what happens when the proxy goes away.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/dnsserver"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/udptest"
	"github.com/socksbind/socksbind/proxyext"
)

// gostUDP is GOST with UDP: udp=true, and the largest relay buffer it
// takes, since its default of 4,096 bytes silently truncates longer
// datagrams.
var gostUDP = GostConfig{Metadata: map[string]string{"udp": "true", "udpBufferSize": "65536"}}

// udpProxy is a real proxy and the mode to reach it with.
type udpProxy struct {
	name    string
	start   func(t *testing.T) *Server
	restart func(t *testing.T, port int) *Server // on a port it had
	mode    socksbind.UDPMode
}

var udpProxies = []udpProxy{
	{"DanteAssociate", func(t *testing.T) *Server { return startDante(t, DanteConfig{}) }, restartDante, socksbind.UDPAssociate},
	{"GostAssociate", func(t *testing.T) *Server { return startGost(t, gostUDP) }, restartGost, socksbind.UDPAssociate},
	{"GostTun", func(t *testing.T) *Server { return startGost(t, gostUDP) }, restartGost, socksbind.UDPTunnel},
}

func restartDante(t *testing.T, port int) *Server { return startDanteOn(t, DanteConfig{}, port) }

func restartGost(t *testing.T, port int) *Server {
	t.Helper()
	return start(t, "gost", readiness{socks: true}, func(int) (int, []string) {
		return port, []string{"-L", gostURL(gostUDP, port)}
	})
}

// listenPacketVia opens a PacketConn through srv with mode.
func listenPacketVia(t *testing.T, srv *Server, mode socksbind.UDPMode) *socksbind.PacketConn {
	t.Helper()
	d := newDialer(t, srv.Addr, nil, nil)
	d.UDP = mode
	pc, err := d.ListenPacket(testContext(t), "udp", "")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	return pc.(*socksbind.PacketConn)
}

// open starts a UDP echo server on 127.0.0.1 and the proxy, and returns the
// echo's address, the proxy and a PacketConn through it.
func (p udpProxy) open(t *testing.T) (netip.AddrPort, *Server, *socksbind.PacketConn) {
	t.Helper()
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	srv := p.start(t)
	return echo, srv, listenPacketVia(t, srv, p.mode)
}

// TestUDPDatagrams sends 10,000 datagrams of 1 to 65,000 bytes to a UDP
// echo through each proxy and compares each reply byte for byte.
//
// UDP may lose a datagram even on loopback (a full socket buffer on a
// loaded machine), so that a lost one must not fail the test, while a
// corrupted, truncated or misdelivered one must. One datagram is in flight
// at a time; when its echo does not come within the retransmission timeout
// (starting at 250 ms, doubling, up to 8 tries) it is sent again. A reply
// that is not the one awaited is accepted only as a late copy of an earlier
// retransmitted datagram, and only as many times as there were
// retransmissions; anything else fails. The test logs the retransmissions
// and the loss: retransmissions whose late copy never came (a copy still
// on its way when the test ends counts as lost, so it is an upper bound).
// It runs in parallel with the other long tests, and so has no leak check,
// which would see theirs: the sequential tests below check the same code
// for leaks.
func TestUDPDatagrams(t *testing.T) {
	t.Parallel()
	for _, p := range udpProxies {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			echo, _, pc := p.open(t)
			to := net.UDPAddrFromAddrPort(echo)

			const count = 10000
			rng := rand.New(rand.NewPCG(18, 65000))
			sizes := make([]int, count)
			for i := range sizes {
				sizes[i] = 1 + rng.IntN(65000)
			}
			sizes[0], sizes[1] = 1, 65000
			pool := randomBytes(65000 + count)
			msg := make([]byte, 65000)
			buf := make([]byte, 65536)
			var resent, late, bytesSent int
			start := time.Now()
			for i, size := range sizes {
				m := msg[:size]
				fill(m, pool, i)
				rto := 250 * time.Millisecond
				for try := 0; ; try++ {
					require.Less(t, try, 8, "datagram %d (%d bytes) got no echo in 8 tries", i, size)
					_, err := pc.WriteTo(m, to)
					require.NoError(t, err, "datagram %d", i)
					got, ok := awaitEcho(t, pc, buf, m, rto, &late, resent)
					if ok {
						require.Equal(t, echo.String(), got.String(), "source of datagram %d", i)
						break
					}
					resent++
					rto *= 2
				}
				bytesSent += size
			}
			elapsed := time.Since(start)
			lost := resent - late
			t.Logf("%s: %d datagrams (%d MB each way) in %v: %d lost (%.3f%%); %d timed out and were sent again, of which %d arrived late; drops %+v",
				p.name, count, bytesSent>>20, elapsed.Round(time.Millisecond), lost, 100*float64(lost)/count, resent, late, pc.Dropped())
			assert.Equal(t, socksbind.DropCounts{}, pc.Dropped(), "no malformed or foreign datagram")
		})
	}
}

// randomBytes returns n bytes of a fixed pseudo-random sequence.
func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1928, 7))
	b := make([]byte, n)
	for j := 0; j+8 <= n; j += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// fill fills m with pool's bytes from i on, and i itself in the first
// bytes when there is room, so that each datagram differs from the others.
func fill(m, pool []byte, i int) {
	copy(m, pool[i%(len(pool)-len(m)+1):])
	for j := 0; j < 4 && j < len(m); j++ {
		m[j] = byte(i >> (8 * j))
	}
}

// awaitEcho waits up to rto for the echo of m. A reply that differs is
// accepted only as a late copy of an earlier datagram sent more than
// once, while fewer such copies than retransmissions have come.
func awaitEcho(t *testing.T, pc net.PacketConn, buf, m []byte, rto time.Duration, late *int, resent int) (net.Addr, bool) {
	t.Helper()
	require.NoError(t, pc.SetReadDeadline(time.Now().Add(rto)))
	for {
		n, from, err := pc.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, false
		}
		require.NoError(t, err)
		if bytes.Equal(buf[:n], m) {
			return from, true
		}
		require.Less(t, *late, resent, "a reply of %d bytes that is neither the %d bytes awaited nor a late copy", n, len(m))
		*late++
	}
}

// TestUDPResolver resolves A and AAAA records with net.Resolver through
// each proxy, from a DNS server on loopback.
func TestUDPResolver(t *testing.T) {
	for _, p := range udpProxies {
		t.Run(p.name, func(t *testing.T) {
			leakcheck.Check(t)
			want := []netip.Addr{netip.MustParseAddr("127.0.0.18"), netip.MustParseAddr("::1")}
			dns := dnsserver.Start(t, map[string][]netip.Addr{"service.example": want})
			srv := p.start(t)
			d := newDialer(t, srv.Addr, nil, nil)
			d.UDP = p.mode
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				if network != "udp" {
					return nil, fmt.Errorf("resolver asked for %s, want udp", network)
				}
				return d.DialContext(ctx, network, dns.String())
			}}
			for _, tt := range []struct {
				network string
				want    []netip.Addr
			}{{"ip4", want[:1]}, {"ip6", want[1:]}, {"ip", want}} {
				ips, err := r.LookupNetIP(testContext(t), tt.network, "service.example")
				require.NoError(t, err, tt.network)
				assert.ElementsMatch(t, tt.want, ips, tt.network)
			}
			assert.GreaterOrEqual(t, dns.Queries(), 4, "A and AAAA questions reached the DNS server")
		})
	}
}

// TestUDPProxyRestart stops the proxy under a blocked ReadFrom: it fails
// with ErrAssociationEnded at once (the log says how soon), and so does
// every later call, also
// once the proxy is back on its port, where a new PacketConn works.
func TestUDPProxyRestart(t *testing.T) {
	for _, p := range udpProxies {
		t.Run(p.name, func(t *testing.T) {
			leakcheck.Check(t)
			echo, srv, pc := p.open(t)
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(testTimeout)))
			_, err := pc.WriteTo([]byte("before"), net.UDPAddrFromAddrPort(echo))
			require.NoError(t, err)
			n, _, err := pc.ReadFrom(make([]byte, 10))
			require.NoError(t, err)
			require.Equal(t, 6, n)

			errc := make(chan error, 1)
			go func() {
				_, _, err := pc.ReadFrom(make([]byte, 10))
				errc <- err
			}()
			stopping := time.Now()
			require.NoError(t, srv.stop())
			select {
			case err := <-errc:
				t.Logf("%v after SIGTERM to the proxy: %v", time.Since(stopping).Round(time.Microsecond), err)
				require.ErrorIs(t, err, socksbind.ErrAssociationEnded)
				var op *net.OpError
				require.ErrorAs(t, err, &op)
			case <-time.After(testTimeout): // within ms here; the log says
				t.Fatal("ReadFrom still blocked after the proxy stopped")
			}
			_, err = pc.WriteTo([]byte("after"), net.UDPAddrFromAddrPort(echo))
			require.ErrorIs(t, err, socksbind.ErrAssociationEnded)
			_, _, err = pc.ReadFrom(make([]byte, 10))
			require.ErrorIs(t, err, socksbind.ErrAssociationEnded)

			again := p.restart(t, srv.Port)
			_, err = pc.WriteTo([]byte("after"), net.UDPAddrFromAddrPort(echo))
			require.ErrorIs(t, err, socksbind.ErrAssociationEnded, "the old association stays ended")
			pc2 := listenPacketVia(t, again, p.mode)
			require.NoError(t, pc2.SetReadDeadline(time.Now().Add(testTimeout)))
			_, err = pc2.WriteTo([]byte("again"), net.UDPAddrFromAddrPort(echo))
			require.NoError(t, err)
			n, _, err = pc2.ReadFrom(make([]byte, 10))
			require.NoError(t, err)
			assert.Equal(t, 5, n)
		})
	}
}

// TestUDPForeignSource sends a datagram with a valid header to the client's
// UDP socket from another local socket: it is not delivered.
func TestUDPForeignSource(t *testing.T) {
	for _, p := range udpProxies[:2] {
		t.Run(p.name, func(t *testing.T) {
			leakcheck.Check(t)
			echo, _, pc := p.open(t)
			to := net.UDPAddrFromAddrPort(echo)
			buf := make([]byte, 100)
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(testTimeout)))

			other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
			require.NoError(t, err)
			defer other.Close()
			local := pc.LocalAddr().(*net.UDPAddr)
			// RSV, FRAG, 127.0.0.1:53, then data: a reply as the relay
			// would send it.
			forged := append([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 53}, "forged"...)
			_, err = other.WriteToUDP(forged, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: local.Port})
			require.NoError(t, err)
			// The forged datagram is queued on the socket before the
			// echo of this one: ReadFrom passes it over.
			_, err = pc.WriteTo([]byte("genuine"), to)
			require.NoError(t, err)
			n, from, err := pc.ReadFrom(buf)
			require.NoError(t, err)
			assert.Equal(t, "genuine", string(buf[:n]))
			assert.Equal(t, echo.String(), from.String())
			assert.Equal(t, socksbind.DropCounts{Foreign: 1}, pc.Dropped())
		})
	}
}

// TestUDPRefused: microsocks has no UDP; GOST without udp=true refuses both
// commands with reply 2.
func TestUDPRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		start    func(t *testing.T) *Server
		rep      socksbind.Reply
		sentinel error
	}{
		{"Microsocks", func(t *testing.T) *Server { return startMicrosocks(t, "", "") },
			socksbind.ReplyCommandNotSupported, socksbind.ErrCommandNotSupported},
		{"GostWithoutUDP", func(t *testing.T) *Server { return startGost(t, GostConfig{}) },
			socksbind.ReplyNotAllowed, socksbind.ErrNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			s := tc.start(t)
			for _, mode := range []socksbind.UDPMode{socksbind.UDPAssociate, socksbind.UDPTunnel, socksbind.UDPAuto} {
				d := newDialer(t, s.Addr, nil, nil)
				d.UDP = mode
				_, err := d.ListenPacket(testContext(t), "udp", "")
				requireReplyErrorCmd(t, err, tc.rep, tc.sentinel, mode)
			}
		})
	}
	t.Run("DanteTun", func(t *testing.T) {
		leakcheck.Check(t)
		dante := startDante(t, DanteConfig{})
		d := newDialer(t, dante.Addr, nil, nil)
		d.UDP = socksbind.UDPTunnel
		_, err := d.ListenPacket(testContext(t), "udp", "")
		require.Error(t, err, "Dante closes on a command it does not know")
		var op *net.OpError
		require.ErrorAs(t, err, &op)
		assert.Equal(t, "socks udp tun", op.Op)
	})
}

// requireReplyErrorCmd checks a refusal of the command mode sends (UDP
// ASSOCIATE first for UDPAuto).
func requireReplyErrorCmd(t *testing.T, err error, rep socksbind.Reply, sentinel error, mode socksbind.UDPMode) {
	t.Helper()
	require.ErrorIs(t, err, sentinel, "mode %v", mode)
	var re *socksbind.ReplyError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, rep, re.Reply)
	cmd := socksbind.CmdUDPAssociate
	if mode == socksbind.UDPTunnel {
		cmd = socksbind.CmdUDPTun
	}
	assert.Equal(t, cmd, re.Command, "mode %v", mode)
}

// TestUDPTunThroughHTTPHop carries UDP through tinyproxy (HTTP CONNECT) to
// GOST with UDP-TUN, and checks that plain UDP ASSOCIATE is refused through
// the hop before anything is sent.
func TestUDPTunThroughHTTPHop(t *testing.T) {
	leakcheck.Check(t)
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	g := startGost(t, gostUDP)
	tiny := startTinyproxy(t)
	hop, err := proxyext.FromURL(&url.URL{Scheme: "http", Host: tiny.Addr}, nil)
	require.NoError(t, err)

	t.Run("AssociateRefused", func(t *testing.T) {
		d := newDialer(t, g.Addr, nil, hop)
		_, err := d.ListenPacket(testContext(t), "udp", "")
		require.ErrorIs(t, err, socksbind.ErrForwardedAssociate)
	})
	for _, mode := range []socksbind.UDPMode{socksbind.UDPTunnel, socksbind.UDPAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			d := newDialer(t, g.Addr, nil, hop)
			d.UDP = mode
			pc, err := d.ListenPacket(testContext(t), "udp", "")
			require.NoError(t, err)
			defer pc.Close()
			p := pc.(*socksbind.PacketConn)
			assert.Equal(t, socksbind.UDPTunnel, p.Mode())
			assert.Equal(t, tiny.Addr, p.ControlConn().RemoteAddr().String(), "the datagrams run in a tunnel of tinyproxy")
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(testTimeout)))
			buf := make([]byte, 65536)
			for _, size := range []int{1, 1000, 65000} {
				m := make([]byte, size)
				fill(m, randomBytes(65000), size)
				_, err := pc.WriteTo(m, net.UDPAddrFromAddrPort(echo))
				require.NoError(t, err)
				n, from, err := pc.ReadFrom(buf)
				require.NoError(t, err)
				require.Equal(t, m, buf[:n])
				assert.Equal(t, echo.String(), from.String())
			}
		})
	}
}

// TestUDPByName sends to a destination given by name, which the proxy
// resolves: "localhost", from its hosts file, so that no name reaches DNS.
func TestUDPByName(t *testing.T) {
	for _, p := range udpProxies {
		t.Run(p.name, func(t *testing.T) {
			leakcheck.Check(t)
			echo, _, pc := p.open(t)
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(testTimeout)))
			_, err := pc.WriteTo([]byte("by name"), nameAddr(fmt.Sprintf("localhost:%d", echo.Port())))
			require.NoError(t, err)
			buf := make([]byte, 100)
			n, from, err := pc.ReadFrom(buf)
			require.NoError(t, err)
			assert.Equal(t, "by name", string(buf[:n]))
			assert.Equal(t, echo.String(), from.String(), "the source is the address the proxy resolved")
		})
	}
}

// nameAddr is a net.Addr given by its text.
type nameAddr string

func (a nameAddr) Network() string { return "udp" }
func (a nameAddr) String() string  { return string(a) }

// BenchmarkUDPReal measures round trips of 1,000-byte datagrams, one in
// flight, through Dante and GOST (UDP ASSOCIATE and UDP-TUN), each next to
// one through a direct *net.UDPConn in the same run ("x-direct" is the
// ratio) and one through the least client there can be, by hand through
// the same proxy ("x-raw"), and the allocations of a WriteTo and a
// ReadFrom:
//
//	SOCKSBIND_INTEGRATION=require go test -run '^$' -bench UDPReal -benchtime 20000x ./integration/
func BenchmarkUDPReal(b *testing.B) {
	echo := udptest.Echo(b, "udp4", "127.0.0.1:0")
	for _, p := range []struct {
		name  string
		start func(b *testing.B) *Server
		mode  socksbind.UDPMode
	}{
		{"dante/associate", func(b *testing.B) *Server { return startDante(b, DanteConfig{}) }, socksbind.UDPAssociate},
		{"gost/associate", func(b *testing.B) *Server { return startGost(b, gostUDP) }, socksbind.UDPAssociate},
		{"gost/tun", func(b *testing.B) *Server { return startGost(b, gostUDP) }, socksbind.UDPTunnel},
	} {
		srv := p.start(b)
		d := newDialer(b, srv.Addr, nil, nil)
		d.UDP = p.mode
		pc, err := d.ListenPacket(context.Background(), "udp", "")
		require.NoError(b, err)
		b.Cleanup(func() { pc.Close() })
		raw := rawClient(b, srv.Addr, p.mode, echo)
		b.Run(p.name+"/roundtrip", func(b *testing.B) { udptest.CompareRoundTrips(b, pc, echo, 1000, raw) })
		b.Run(p.name+"/allocs", func(b *testing.B) { udptest.Allocs(b, pc, echo) })
	}
}

// rawClient is the least a client can do through the proxy at addr, the
// baseline of BenchmarkUDPReal: the handshake by hand, then datagrams to
// dst alone, behind a header built once, and replies whose header is
// skipped unread.
func rawClient(b *testing.B, addr string, mode socksbind.UDPMode, dst netip.AddrPort) net.PacketConn {
	b.Helper()
	ctrl, err := net.Dial("tcp", addr)
	require.NoError(b, err)
	b.Cleanup(func() { ctrl.Close() })
	reply := make([]byte, 2+10)
	ip := dst.Addr().As4()
	port := []byte{byte(dst.Port() >> 8), byte(dst.Port())}
	if mode == socksbind.UDPTunnel {
		_, err = ctrl.Write([]byte{5, 1, 0, 5, 0xF3, 0, 1, 0, 0, 0, 0, 0, 0})
		require.NoError(b, err)
		_, err = io.ReadFull(ctrl, reply)
		require.NoError(b, err)
		require.Equal(b, []byte{5, 0, 5, 0}, reply[:4])
		hdr := append([]byte{0, 0, 0xFF, 1}, ip[:]...)
		return &rawTun{Conn: ctrl, hdr: append(hdr, port...), r: bufio.NewReader(ctrl)}
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(b, err)
	b.Cleanup(func() { udp.Close() })
	lp := udp.LocalAddr().(*net.UDPAddr).Port
	_, err = ctrl.Write([]byte{5, 1, 0, 5, 3, 0, 1, 127, 0, 0, 1, byte(lp >> 8), byte(lp)})
	require.NoError(b, err)
	_, err = io.ReadFull(ctrl, reply)
	require.NoError(b, err)
	require.Equal(b, []byte{5, 0, 5, 0, 0, 1}, reply[:6])
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(reply[6:10])), uint16(reply[10])<<8|uint16(reply[11]))
	if relay.Addr().IsUnspecified() {
		relay = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), relay.Port())
	}
	hdr := append([]byte{0, 0, 0, 1}, ip[:]...)
	return &rawAssociate{UDPConn: udp, relay: relay, hdr: append(hdr, port...), buf: make([]byte, 65536)}
}

type rawAssociate struct {
	*net.UDPConn
	relay netip.AddrPort
	hdr   []byte
	buf   []byte
}

func (r *rawAssociate) WriteTo(p []byte, _ net.Addr) (int, error) {
	_, err := r.WriteToUDPAddrPort(append(r.hdr[:10:10], p...), r.relay)
	return len(p), err
}

func (r *rawAssociate) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := r.Read(r.buf)
	return copy(p, r.buf[10:n]), nil, err
}

type rawTun struct {
	net.Conn
	hdr []byte
	r   *bufio.Reader
}

func (r *rawTun) WriteTo(p []byte, _ net.Addr) (int, error) {
	f := append(r.hdr[:10:10], p...)
	f[0], f[1] = byte(len(p)>>8), byte(len(p))
	_, err := r.Write(f)
	return len(p), err
}

func (r *rawTun) ReadFrom(p []byte) (int, net.Addr, error) {
	h, err := r.r.Peek(10)
	if err != nil {
		return 0, nil, err
	}
	n := int(h[0])<<8 | int(h[1])
	r.r.Discard(10)
	_, err = io.ReadFull(r.r, p[:n])
	return n, nil, err
}

// TestUDPDanteIPv6 relays over IPv6: Dante listening on ::1, the relay on
// ::1, an echo server on ::1, and the largest datagram an IPv6 relay takes.
func TestUDPDanteIPv6(t *testing.T) {
	leakcheck.Check(t)
	echo := udptest.Echo(t, "udp6", "[::1]:0")
	dante := startDante(t, DanteConfig{IPv6: true})
	d := newDialer(t, dante.Addr6, nil, nil)
	pc, err := d.ListenPacket(testContext(t), "udp6", "[::1]:0")
	require.NoError(t, err)
	defer pc.Close()
	require.NoError(t, pc.SetReadDeadline(time.Now().Add(testTimeout)))
	buf := make([]byte, 65536)
	for _, size := range []int{1, 1000, 65527 - 22} {
		m := make([]byte, size)
		fill(m, randomBytes(65527), size)
		_, err = pc.WriteTo(m, net.UDPAddrFromAddrPort(echo))
		require.NoError(t, err)
		n, from, err := pc.ReadFrom(buf)
		require.NoError(t, err)
		require.Equal(t, m, buf[:n])
		assert.Equal(t, echo.String(), from.String())
	}
	_, err = pc.WriteTo(make([]byte, 65527-22+1), net.UDPAddrFromAddrPort(echo))
	require.ErrorIs(t, err, socksbind.ErrDatagramTooLarge, "65,527 bytes with the 22-byte header is the most to an IPv6 relay")
}
