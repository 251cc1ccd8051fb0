package socksbind_test

// The fault suite of UDP: every byte of the datagram header the relay
// sends, set wrong in turn, for UDP ASSOCIATE; every byte of the UDP-TUN
// frame header for UDP-TUN. A malformed datagram is dropped and counted,
// and the next good one is delivered; a malformed frame ends the tunnel,
// whose stream cannot be read past it, with a typed error.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/hostile"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/udptest"
	"github.com/socksbind/socksbind/internal/wire"
	"github.com/socksbind/socksbind/socks5test"
)

// A udpFault turns the relay's datagram (header and data) into another.
type udpFault struct {
	name   string
	mutate func(pkt []byte, hl int) []byte // hl: the header's length
	// drop is the counter the datagram must land in; the zero value
	// means that it is well formed and delivered, from the address
	// from.
	drop func(*socksbind.DropCounts) *uint64
	from string
}

func malformed(c *socksbind.DropCounts) *uint64  { return &c.Malformed }
func reserved(c *socksbind.DropCounts) *uint64   { return &c.Reserved }
func fragmented(c *socksbind.DropCounts) *uint64 { return &c.Fragmented }

// withHeader returns a datagram with header h and pkt's data.
func withHeader(h []byte) func(pkt []byte, hl int) []byte {
	return func(pkt []byte, hl int) []byte { return append(append([]byte(nil), h...), pkt[hl:]...) }
}

// udpFaults lists a fault for every byte of the headers the relay may
// send: the IPv4 one it sends (10 bytes), an IPv6 one and one with a name.
func udpFaults() []udpFault {
	var fs []udpFault
	// IPv4: RSV RSV FRAG ATYP A A A A P P.
	for k := range 10 {
		fs = append(fs, udpFault{name: fmt.Sprintf("ipv4 cut at %d", k), drop: malformed,
			mutate: func(pkt []byte, _ int) []byte { return pkt[:k] }})
	}
	for v := 1; v < 256; v++ {
		for i, drop := range []func(*socksbind.DropCounts) *uint64{reserved, reserved, fragmented} {
			fs = append(fs, udpFault{name: fmt.Sprintf("byte %d = %#02x", i, v), drop: drop,
				mutate: func(pkt []byte, _ int) []byte { pkt[i] = byte(v); return pkt }})
		}
	}
	for v := range 256 {
		if v == 1 {
			continue
		}
		// With one byte of data, an IPv6 or name header does not fit:
		// every ATYP but 1 is malformed.
		fs = append(fs, udpFault{name: fmt.Sprintf("atyp %#02x", v), drop: malformed,
			mutate: func(pkt []byte, _ int) []byte { pkt[3] = byte(v); return pkt }})
	}
	// The address and port bytes are any value: well formed.
	fs = append(fs, udpFault{name: "ipv4 other source", from: "192.0.2.1:65535",
		mutate: withHeader([]byte{0, 0, 0, 1, 192, 0, 2, 1, 0xff, 0xff})})

	// IPv6: cut at every byte; a mapped IPv4 address reads as IPv4.
	v6 := append([]byte{0, 0, 0, 4}, netip.MustParseAddr("2001:db8::1").AsSlice()...)
	v6 = append(v6, 0x12, 0x34)
	for k := 4; k < len(v6); k++ {
		fs = append(fs, udpFault{name: fmt.Sprintf("ipv6 cut at %d", k), drop: malformed,
			mutate: func([]byte, int) []byte { return v6[:k] }})
	}
	fs = append(fs, udpFault{name: "ipv6", from: "[2001:db8::1]:4660", mutate: withHeader(v6)})
	mapped := append([]byte{0, 0, 0, 4}, netip.MustParseAddr("::ffff:192.0.2.2").AsSlice()...)
	fs = append(fs, udpFault{name: "ipv4-mapped ipv6", from: "192.0.2.2:53", mutate: withHeader(append(mapped, 0, 53))})

	// A name: LEN, then each byte of it set to every value a host name
	// cannot hold, and cut at every byte.
	name := []byte{0, 0, 0, 3, 9, 'e', 'c', 'h', 'o', '.', 't', 'e', 's', 't', 0, 53}
	fs = append(fs, udpFault{name: "name", from: "echo.test:53", mutate: withHeader(name)})
	for k := 4; k < len(name); k++ {
		fs = append(fs, udpFault{name: fmt.Sprintf("name cut at %d", k), drop: malformed,
			mutate: func([]byte, int) []byte { return name[:k] }})
	}
	fs = append(fs, udpFault{name: "name of length 0", drop: malformed,
		mutate: withHeader([]byte{0, 0, 0, 3, 0, 0, 53})})
	fs = append(fs, udpFault{name: "name longer than the datagram", drop: malformed,
		mutate: func([]byte, int) []byte { return append([]byte{0, 0, 0, 3, 200}, "short"...) }})
	for i := 5; i < 5+9; i++ {
		for v := range 256 {
			if wire.ValidName(string([]byte{byte(v)})) {
				continue
			}
			fs = append(fs, udpFault{name: fmt.Sprintf("name byte %d = %#02x", i, v), drop: malformed,
				mutate: func(pkt []byte, hl int) []byte {
					b := withHeader(name)(pkt, hl)
					b[i] = byte(v)
					return b
				}})
		}
	}
	return fs
}

func TestUDPFaultHeaders(t *testing.T) {
	var current atomic.Pointer[udpFault]
	srv := udpProxy(t, func(s *socks5test.Server) {
		s.Hooks.Datagram = func(pkt []byte) []socks5test.Datagram {
			f := current.Load()
			if f == nil {
				return []socks5test.Datagram{{Bytes: pkt}}
			}
			_, data, err := srvwire.ParseUDPHeader(pkt)
			if err != nil {
				panic(err) // the relay's own header
			}
			bad := f.mutate(bytes.Clone(pkt), len(pkt)-len(data))
			return []socks5test.Datagram{{Bytes: bad}, {Bytes: pkt}}
		}
	})
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	pc := listenPacket(t, srv, socksbind.UDPAssociate)
	buf := make([]byte, 100)
	faults := udpFaults()
	for i := range faults {
		f := &faults[i]
		current.Store(f)
		before := pc.Dropped()
		require.NoError(t, pc.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := pc.WriteTo([]byte{byte(i)}, net.UDPAddrFromAddrPort(echo))
		require.NoError(t, err, f.name)
		n, from, err := pc.ReadFrom(buf)
		require.NoError(t, err, f.name)
		if f.drop == nil {
			assert.Equal(t, []byte{byte(i)}, buf[:n], f.name)
			assert.Equal(t, f.from, from.String(), f.name)
			assert.Equal(t, before, pc.Dropped(), f.name)
			n, from, err = pc.ReadFrom(buf) // the genuine copy
			require.NoError(t, err, f.name)
		}
		require.Equal(t, []byte{byte(i)}, buf[:n], "%s: the next good datagram", f.name)
		require.Equal(t, echo.String(), from.String(), f.name)
		if f.drop != nil {
			want := before
			*f.drop(&want)++
			require.Equal(t, want, pc.Dropped(), f.name)
		}
	}
	t.Logf("%d faults; dropped %+v", len(faults), pc.Dropped())
}

// A tunFault turns a UDP-TUN frame into another; the tunnel must end with
// an error matching want (nil: it waits for more).
type tunFault struct {
	name   string
	mutate func(frame []byte) []byte
	want   error
}

// tunFaults lists faults of a UDP-TUN frame: LEN LEN FRAG ATYP A A A A P P
// DATA.
func tunFaults() []tunFault {
	type fault = tunFault
	fs := []fault{
		{"length 0", func(f []byte) []byte { f[0], f[1] = 0, 0; return f }, socksbind.ErrTunFrame},
		{"length beyond the data, then the proxy is silent", func(f []byte) []byte { f[1]++; return f }, nil},
	}
	for v := range 256 {
		if v == socksbind.TunFrag {
			continue
		}
		fs = append(fs, fault{fmt.Sprintf("frag %#02x", v), func(f []byte) []byte { f[2] = byte(v); return f }, socksbind.ErrTunFrame})
	}
	for v := range 256 {
		switch v {
		case 1, 3, 4:
			continue
		}
		fs = append(fs, fault{fmt.Sprintf("atyp %#02x", v), func(f []byte) []byte { f[3] = byte(v); return f }, socksbind.ErrUDPAddrType})
	}
	fs = append(fs, fault{"name with a space", func(f []byte) []byte {
		h := []byte{0, byte(len(f) - 10), socksbind.TunFrag, 3, 3, 'a', ' ', 'b', 0, 53}
		return append(h, f[10:]...)
	}, socksbind.ErrUDPName})
	for k := 1; k < 11; k++ {
		fs = append(fs, fault{fmt.Sprintf("cut at %d, then closed", k), func(f []byte) []byte { return f[:k] }, io.ErrUnexpectedEOF})
	}
	return fs
}

func TestUDPFaultTunFrames(t *testing.T) {
	// One server for every case: its hook applies the fault of the case
	// that runs.
	var current atomic.Pointer[tunFault]
	srv := udpProxy(t, func(s *socks5test.Server) {
		s.Hooks.Datagram = func(pkt []byte) []socks5test.Datagram {
			f := current.Load()
			bad := f.mutate(bytes.Clone(pkt))
			// A frame cut short is followed by the end.
			return []socks5test.Datagram{{Bytes: bad, Close: errors.Is(f.want, io.ErrUnexpectedEOF)}}
		}
	})
	echo := udptest.Echo(t, "udp4", "127.0.0.1:0")
	for _, f := range tunFaults() {
		t.Run(f.name, func(t *testing.T) {
			current.Store(&f)
			d := newDialer(t, srv)
			d.UDP = socksbind.UDPTunnel
			c, err := d.ListenPacket(context.Background(), "udp", "")
			require.NoError(t, err)
			defer c.Close()
			pc := c.(*socksbind.PacketConn)
			wait := 5 * time.Second
			if f.want == nil {
				wait = 100 * time.Millisecond
			}
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(wait)))
			_, err = pc.WriteTo([]byte("0123456789"), net.UDPAddrFromAddrPort(echo))
			require.NoError(t, err)
			if f.want == nil {
				// Nothing comes: the tunnel waits for the rest of the
				// frame, and the deadline ends the read.
				_, _, err = pc.ReadFrom(make([]byte, 100))
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
				return
			}
			_, _, err = pc.ReadFrom(make([]byte, 100))
			require.ErrorIs(t, err, socksbind.ErrAssociationEnded)
			require.ErrorIs(t, err, f.want)
			var op *net.OpError
			require.ErrorAs(t, err, &op)
			_, err = pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(echo))
			require.ErrorIs(t, err, socksbind.ErrAssociationEnded)
		})
	}
}

// The reply to UDP ASSOCIATE and to UDP-TUN, cut at every byte, then
// closed: a typed error, never a PacketConn. A relay port of 0 is a
// protocol violation.
func TestUDPFaultReply(t *testing.T) {
	var reply atomic.Pointer[[]byte]
	srv := udpProxy(t, func(s *socks5test.Server) {
		s.Hooks.Fault = func(stage socks5test.Stage, c net.Conn, _ *socks5test.Request) bool {
			if stage != socks5test.StageRequest {
				return false
			}
			c.Write(*reply.Load())
			return true
		}
	})
	full := []byte{5, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39}
	for _, mode := range udpModes {
		for k := range len(full) {
			cut := full[:k]
			reply.Store(&cut)
			d := newDialer(t, srv)
			d.UDP = mode
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := d.ListenPacket(ctx, "udp", "")
			cancel()
			require.ErrorIs(t, err, io.ErrUnexpectedEOF, "%v, reply cut at %d", mode, k)
			var op *net.OpError
			require.ErrorAs(t, err, &op)
		}
	}
	zero := []byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0}
	reply.Store(&zero)
	_, err := newDialer(t, srv).ListenPacket(context.Background(), "udp", "")
	require.ErrorIs(t, err, socksbind.ErrProtocolViolation, "relay port 0")
}

// A proxy that stops reading the UDP-TUN connection: writes block, and the
// write deadline ends them with a timeout. A write cut in the middle of a
// frame ends the association; one that sent nothing leaves it usable. The
// proxy, once it reads again, finds only whole frames.
func TestUDPTunStalledProxy(t *testing.T) {
	leakcheck.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	type result struct {
		frames int
		err    error
	}
	stalled, resume, done := make(chan struct{}), make(chan struct{}), make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := srvwire.ReadGreeting(br); err != nil {
			done <- result{err: err}
			return
		}
		c.Write([]byte{5, 0})
		if _, _, err := srvwire.ReadRequest(br); err != nil {
			done <- result{err: err}
			return
		}
		c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0x30, 0x39})
		close(stalled)
		<-resume
		var r result
		buf := make([]byte, srvwire.MaxTunData)
		for {
			if _, _, err := srvwire.ReadTunFrame(br, buf); err != nil {
				if err != io.EOF {
					r.err = err
				}
				done <- r
				return
			}
			r.frames++
		}
	}()
	d := &socksbind.Dialer{ProxyAddress: ln.Addr().String(), UDP: socksbind.UDPTunnel}
	c, err := d.ListenPacket(context.Background(), "udp", "")
	require.NoError(t, err)
	pc := c.(*socksbind.PacketConn)
	<-stalled
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	msg := make([]byte, 60000)
	sent := 0
	for {
		require.NoError(t, pc.SetWriteDeadline(time.Now().Add(50*time.Millisecond)))
		_, err = pc.WriteTo(msg, to)
		if err != nil {
			break
		}
		sent++
		require.Less(t, sent, 10000, "the writes never blocked")
	}
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var op *net.OpError
	require.ErrorAs(t, err, &op)
	_, err = pc.WriteTo([]byte("next"), to)
	cut := errors.Is(err, socksbind.ErrAssociationEnded)
	if !cut {
		require.ErrorIs(t, err, os.ErrDeadlineExceeded, "still blocked, but usable")
	}
	close(resume)
	pc.Close()
	r := <-done
	t.Logf("%d frames sent whole before the deadline; cut in a frame: %v; the proxy read %d whole frames, then %v", sent, cut, r.frames, r.err)
	assert.GreaterOrEqual(t, r.frames, sent)
	if !cut {
		assert.NoError(t, r.err, "no frame cut short")
	}
}

// The proxy resets the control connection: blocked and later reads and
// writes fail with an error matching both ErrAssociationEnded and
// ECONNRESET, within the moment.
func TestUDPControlReset(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode.String(), func(t *testing.T) {
			leakcheck.Check(t)
			cue := make(chan struct{})
			srv := hostile.NewServer(hostile.ReadGreeting(), hostile.Write([]byte{5, 0}), hostile.ReadRequest(),
				hostile.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39}), hostile.Await(cue), hostile.Reset())
			defer srv.Close()
			d := &socksbind.Dialer{ProxyAddress: srv.Addr(), UDP: mode}
			pc, err := d.ListenPacket(context.Background(), "udp", "")
			require.NoError(t, err)
			defer pc.Close()
			errc := make(chan error, 1)
			go func() {
				_, _, err := pc.ReadFrom(make([]byte, 10))
				errc <- err
			}()
			close(cue)
			select {
			case err := <-errc:
				require.ErrorIs(t, err, socksbind.ErrAssociationEnded)
				require.ErrorIs(t, err, syscall.ECONNRESET)
				var op *net.OpError
				require.ErrorAs(t, err, &op)
				assert.Equal(t, "read", op.Op)
			case <-time.After(5 * time.Second):
				t.Fatal("ReadFrom still blocked after the reset")
			}
			_, err = pc.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9})
			require.ErrorIs(t, err, socksbind.ErrAssociationEnded)
			require.ErrorIs(t, err, syscall.ECONNRESET)
		})
	}
}
