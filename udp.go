package socksbind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind/internal/netutil"
)

// This file holds the front of UDP through the proxy: the PacketConn a user
// sees, and the choice between the two engines that carry its datagrams,
// UDP ASSOCIATE (assoc.go) and GOST's UDP-TUN (udptun.go).

var (
	_ net.PacketConn = (*PacketConn)(nil)
	_ net.Conn       = (*udpConn)(nil)
	_ net.PacketConn = (*udpConn)(nil)
)

// A UDPMode selects how a [Dialer] carries UDP.
type UDPMode int

const (
	// UDPAssociate uses the UDP ASSOCIATE command of RFC 1928: datagrams
	// travel as UDP between a local socket and the proxy's relay, each
	// with a header naming its destination or source. Dante, and GOST
	// with udp=true, have it; microsocks does not. It is refused when the
	// Dialer reaches the proxy through Forward: the datagrams would go
	// straight to the relay, around the hops the user configured.
	UDPAssociate UDPMode = iota

	// UDPTunnel uses GOST's UDP-TUN command (0xF3): the datagrams travel
	// framed on the TCP connection to the proxy, so they pass wherever
	// that connection does (an HTTP CONNECT hop, a SOCKS chain, a
	// firewall that drops UDP). GOST with udp=true has it.
	UDPTunnel

	// UDPAuto uses UDP ASSOCIATE, or UDP-TUN when the Dialer reaches the
	// proxy through Forward or the proxy refuses UDP ASSOCIATE with a
	// failure reply.
	UDPAuto
)

func (m UDPMode) String() string {
	switch m {
	case UDPAssociate:
		return "associate"
	case UDPTunnel:
		return "tun"
	case UDPAuto:
		return "auto"
	}
	return fmt.Sprintf("UDPMode(%d)", int(m))
}

var (
	// ErrAssociationEnded reports that the TCP control connection of a
	// [PacketConn] ended (the proxy closed or reset it, or restarted):
	// the proxy has dropped the association, and every later read and
	// write fails with it. It wraps the control connection's error.
	ErrAssociationEnded = errors.New("udp association ended")

	// ErrForwardedAssociate reports a UDP ASSOCIATE refused because the
	// Dialer reaches the proxy through Forward: the datagrams would leave
	// this host straight for the relay, around every hop of Forward. Use
	// [UDPTunnel] or [UDPAuto].
	ErrForwardedAssociate = errors.New("udp associate through a forward dialer would send datagrams around it; use UDP-TUN (Dialer.UDP = UDPTunnel or UDPAuto)")

	// ErrDatagramTooLarge reports a datagram that cannot be carried whole:
	// longer than the largest UDP datagram once the header is added
	// (UDP ASSOCIATE), or than 65,535 bytes or empty (UDP-TUN, whose frame
	// carries the length in 16 bits, and where GOST cannot tell an empty
	// datagram from the end of the stream). It also matches
	// syscall.EMSGSIZE. Nothing is sent.
	ErrDatagramTooLarge error = &codeError{msg: "datagram cannot be carried whole", errno: syscall.EMSGSIZE}
)

// A PacketConn is a [net.PacketConn] whose datagrams go through a SOCKS5
// proxy, made by [Dialer.ListenPacket]. WriteTo sends a datagram to any
// destination through the proxy; ReadFrom returns a datagram from any
// source the proxy relays, with that source's address.
//
// The association lives exactly as long as the TCP connection to the proxy
// that asked for it: the PacketConn watches that connection, and when it
// ends every blocked and later ReadFrom and WriteTo fails with an error
// matching [ErrAssociationEnded]. Close ends both; after it, reads and
// writes fail with [net.ErrClosed].
//
// With [UDPAssociate], datagrams are accepted only from the relay's
// address, and a datagram whose header is malformed, whose RSV is not 0 or
// whose FRAG is not 0 (fragments are not reassembled) is dropped, never
// delivered, and counted in [PacketConn.Dropped]. With [UDPTunnel], a
// malformed frame ends the association, since the stream cannot be read
// past it.
//
// Deadlines work as on a [*net.UDPConn]: a read or write past its deadline
// fails with an error matching [os.ErrDeadlineExceeded] whose Timeout
// method reports true, and the PacketConn stays usable (with UDP-TUN, a
// write deadline that passes in the middle of a frame ends the
// association instead, as the proxy could not find the next frame). A ReadFrom buffer
// shorter than the datagram gets its first bytes, the rest being lost, as
// on a [*net.UDPConn]. A datagram that cannot be carried whole gets
// [ErrDatagramTooLarge] and is not sent. It is safe for concurrent use.
//
// Errors are [*net.OpError] with Op "read" or "write", Net the network
// given to ListenPacket, Source the proxy's address and Addr the
// destination of a write.
type PacketConn struct {
	d       *Dialer
	network string
	mode    UDPMode
	ctrl    net.Conn // the TCP control connection
	eng     packetEngine
	proxy   net.Addr

	done    chan struct{} // closed when the association ends
	endOnce sync.Once
	endErr  error // why it ended; written before done is closed
	wg      sync.WaitGroup

	drops dropCounters
}

// A packetEngine carries the datagrams of one mode. Each owns its sockets
// and its goroutine, which it runs on the PacketConn's WaitGroup and which
// calls end when the control connection ends.
type packetEngine interface {
	// read returns the next datagram, header parsed, its data copied to b.
	read(p *PacketConn, b []byte) (int, Addr, error)
	// write sends one datagram: header and data in pkt.
	write(p *PacketConn, pkt []byte) error
	// maxData is the longest datagram that can be sent with hdr bytes of
	// header.
	maxData(hdr int) int
	// header appends the header of a datagram of n bytes to dst.
	header(b []byte, n int, dst Addr) ([]byte, error)
	localAddr() net.Addr
	setReadDeadline(t time.Time) error
	setWriteDeadline(t time.Time) error
	// close releases the engine's sockets; the goroutine then ends.
	close()
}

// DropCounts says how many incoming datagrams a [PacketConn] dropped, and
// why. The counts only grow.
type DropCounts struct {
	// Malformed counts headers cut short, with an unknown address type,
	// or with a domain name that is not a host name.
	Malformed uint64
	// Reserved counts headers whose RSV field was not 0.
	Reserved uint64
	// Fragmented counts datagrams whose FRAG field was not 0: fragments,
	// which are not reassembled.
	Fragmented uint64
	// Foreign counts datagrams from an address other than the relay's
	// (UDP ASSOCIATE).
	Foreign uint64
	// Overflow counts datagrams that arrived while the reader was behind
	// by a full queue (UDP-TUN; the kernel drops them unseen for UDP
	// ASSOCIATE, as for any UDP socket).
	Overflow uint64
}

type dropCounters struct {
	malformed, reserved, fragmented, foreign, overflow atomic.Uint64
}

// count counts a datagram dropped for err, from [parseUDPHeader].
func (c *dropCounters) count(err error) {
	switch err {
	case errUDPReserved:
		c.reserved.Add(1)
	case errUDPFragment:
		c.fragmented.Add(1)
	default:
		c.malformed.Add(1)
	}
}

// Dropped returns how many incoming datagrams were dropped so far, by
// reason.
func (p *PacketConn) Dropped() DropCounts {
	return DropCounts{
		Malformed:  p.drops.malformed.Load(),
		Reserved:   p.drops.reserved.Load(),
		Fragmented: p.drops.fragmented.Load(),
		Foreign:    p.drops.foreign.Load(),
		Overflow:   p.drops.overflow.Load(),
	}
}

// ListenPacket asks the proxy to relay UDP and returns a [*PacketConn]
// through which datagrams reach any destination. network is "udp", "udp4"
// or "udp6"; address is, as for [net.ListenPacket], the local address of
// the UDP socket that talks to the relay ("" or ":0" for any). With
// [UDPTunnel] there is no such socket, and address must be empty or have
// port 0.
//
// [Dialer.UDP] selects the command: UDP ASSOCIATE by default, refused with
// [ErrForwardedAssociate] when the Dialer reaches the proxy through a
// Forward dialer (any but [proxy.Direct] or a [*net.Dialer]); GOST's
// UDP-TUN; or either ([UDPAuto]). A relay address of 0.0.0.0 or :: in the
// proxy's reply stands for the proxy's own IP.
//
// ctx bounds the handshake, as for [Dialer.DialContext], and has no effect
// on the PacketConn once ListenPacket returns. Errors are [*net.OpError]
// with Op "socks udp associate" or "socks udp tun"; a refusal is a
// [*ReplyError] (microsocks: [ErrCommandNotSupported]).
func (d *Dialer) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	switch {
	case d == nil:
		return nil, &net.OpError{Op: "socks udp associate", Net: network, Addr: localAddrOf(address), Err: errNilDialer}
	case ctx == nil:
		return nil, &net.OpError{Op: "socks udp associate", Net: network, Source: d.proxyAddr(), Addr: localAddrOf(address), Err: errNilContext}
	}
	p, err := d.listenPacket(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (d *Dialer) listenPacket(ctx context.Context, network, address string) (*PacketConn, error) {
	opErr := func(cmd Command, err error) error {
		return &net.OpError{Op: "socks " + cmd.String(), Net: network, Source: d.proxyAddr(), Addr: localAddrOf(address), Err: err}
	}
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return nil, opErr(CmdUDPAssociate, net.UnknownNetworkError(network))
	}
	forwarded := !isDirect(d.Forward)
	switch d.UDP {
	case UDPAssociate:
		if forwarded {
			return nil, opErr(CmdUDPAssociate, ErrForwardedAssociate)
		}
		return d.associate(ctx, network, address)
	case UDPTunnel:
		return d.tunnel(ctx, network, address)
	case UDPAuto:
		if forwarded {
			return d.tunnel(ctx, network, address)
		}
		p, err := d.associate(ctx, network, address)
		var re *ReplyError
		if err != nil && errors.As(err, &re) && ctx.Err() == nil {
			if p, terr := d.tunnel(ctx, network, address); terr == nil {
				return p, nil
			}
			// The proxy has neither: its refusal of the standard
			// command says more than the failure of the extension.
		}
		return p, err
	}
	return nil, opErr(CmdUDPAssociate, fmt.Errorf("socksbind: unknown UDP mode %v", d.UDP))
}

// isDirect reports whether f reaches the proxy straight from this host: nil,
// proxy.Direct or a *net.Dialer. Any other forward dialer may be a hop that
// UDP ASSOCIATE would go around.
func isDirect(f proxy.Dialer) bool {
	if _, ok := f.(*net.Dialer); ok || f == nil {
		return true
	}
	return f == proxy.Direct
}

// localAddrOf is a local address as a net.Addr for an error, nil when
// empty or not an address.
func localAddrOf(address string) net.Addr {
	if address == "" {
		return nil
	}
	if a, err := parseAddr(address); err == nil {
		return udpAddr(a)
	}
	return nil
}

// newPacketConn starts the front of an association on ctrl.
func (d *Dialer) newPacketConn(network string, mode UDPMode, ctrl net.Conn) *PacketConn {
	return &PacketConn{d: d, network: network, mode: mode, ctrl: ctrl, proxy: d.proxyAddr(), done: make(chan struct{})}
}

// end ends the association for cause, once: it closes the control
// connection and the engine's sockets, which unblocks every read and
// write, and ends the engine's goroutine.
func (p *PacketConn) end(cause error) {
	p.endOnce.Do(func() {
		p.endErr = cause
		close(p.done)
		p.ctrl.Close()
		p.eng.close()
	})
}

// ended is the error of an association whose control connection failed
// with err.
func ended(err error) error {
	return fmt.Errorf("%w: control connection: %w", ErrAssociationEnded, err)
}

// Close ends the association and closes the PacketConn's sockets. Blocked
// reads and writes return errors matching [net.ErrClosed]. It waits for
// the PacketConn's goroutine, and returns nil, also when called again.
func (p *PacketConn) Close() error {
	p.end(net.ErrClosed)
	p.wg.Wait()
	return nil
}

// Mode returns the command the PacketConn uses: [UDPAssociate] or
// [UDPTunnel] (never [UDPAuto]).
func (p *PacketConn) Mode() UDPMode { return p.mode }

// LocalAddr returns the address of the local UDP socket with
// [UDPAssociate], and of the TCP connection to the proxy with [UDPTunnel].
func (p *PacketConn) LocalAddr() net.Addr { return p.eng.localAddr() }

// ControlConn returns the TCP connection to the proxy that holds the
// association (and, with UDP-TUN, carries the datagrams). It must not be
// read or written.
func (p *PacketConn) ControlConn() net.Conn { return p.ctrl }

// SetDeadline sets the read and write deadlines, as on a [*net.UDPConn].
func (p *PacketConn) SetDeadline(t time.Time) error {
	if err := p.SetReadDeadline(t); err != nil {
		return err
	}
	return p.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of ReadFrom and Read.
func (p *PacketConn) SetReadDeadline(t time.Time) error {
	if isDone(p.done) {
		return p.opErr("set", nil, p.endErr)
	}
	return p.eng.setReadDeadline(t)
}

// SetWriteDeadline sets the deadline of WriteTo and Write.
func (p *PacketConn) SetWriteDeadline(t time.Time) error {
	if isDone(p.done) {
		return p.opErr("set", nil, p.endErr)
	}
	return p.eng.setWriteDeadline(t)
}

// opErr is err as the error of op. An *net.OpError of the socket below
// gives its cause; one deeper in the chain (the control connection's, in an
// association's end) stays as it is.
func (p *PacketConn) opErr(op string, addr net.Addr, err error) error {
	if inner, ok := err.(*net.OpError); ok {
		err = inner.Err
	}
	return &net.OpError{Op: op, Net: p.network, Source: p.proxy, Addr: addr, Err: err}
}

// failed is the error of an engine's failed read or write: the cause of
// the end when the association has ended (the engine's error is then only
// its closed socket), else err.
func (p *PacketConn) failed(op string, addr net.Addr, err error) error {
	if isDone(p.done) {
		err = p.endErr
	}
	return p.opErr(op, addr, err)
}

// ReadFrom reads a datagram and returns the number of bytes copied to b and
// the source's address: a [*net.UDPAddr], or, when the proxy names the
// source by name, a [net.Addr] whose Network is "udp" and whose String is
// "name:port".
func (p *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, src, err := p.read(b)
	if err != nil {
		return n, nil, err
	}
	return n, udpAddr(src), nil
}

// ReadFromUDPAddrPort is ReadFrom with the source as a [netip.AddrPort],
// and no allocation. A datagram whose source the proxy names by name is
// returned with the zero AddrPort.
func (p *PacketConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, src, err := p.read(b)
	if err != nil || src.Name != "" {
		return n, netip.AddrPort{}, err
	}
	return n, netip.AddrPortFrom(src.IP, src.Port), nil
}

func (p *PacketConn) read(b []byte) (int, Addr, error) {
	if isDone(p.done) {
		return 0, Addr{}, p.opErr("read", nil, p.endErr)
	}
	n, src, err := p.eng.read(p, b)
	if err != nil {
		return n, src, p.failed("read", nil, err)
	}
	return n, src, nil
}

// WriteTo sends b as one datagram to addr through the proxy. addr is a
// [*net.UDPAddr], or any [net.Addr] whose String is "host:port"; a host
// name is sent to the proxy, or resolved first when the Dialer's
// ResolveLocally is set, as for [Dialer.DialContext].
func (p *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var dst Addr
	if ua, ok := addr.(*net.UDPAddr); ok && ua != nil {
		ap := ua.AddrPort()
		dst = Addr{IP: ap.Addr().Unmap(), Port: ap.Port()}
	} else {
		if addr == nil {
			return 0, p.opErr("write", nil, errMissingAddress)
		}
		a, err := p.d.udpTarget(context.Background(), p.network, addr.String())
		if err != nil {
			return 0, p.opErr("write", addr, err)
		}
		dst = a
	}
	return p.write(b, dst, addr)
}

// WriteToUDPAddrPort is WriteTo with the destination as a
// [netip.AddrPort], and no allocation.
func (p *PacketConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	return p.write(b, Addr{IP: addr.Addr().Unmap(), Port: addr.Port()}, nil)
}

var errMissingAddress = errors.New("missing address")

// packetBufs holds buffers of the largest datagram with its header, so that
// neither reading nor writing allocates.
var packetBufs = sync.Pool{New: func() any {
	b := make([]byte, maxUDPHeader+maxTunData)
	return &b
}}

func (p *PacketConn) write(b []byte, dst Addr, addr net.Addr) (int, error) {
	if isDone(p.done) {
		return 0, p.opErr("write", addrOr(addr, dst), p.endErr)
	}
	bp := packetBufs.Get().(*[]byte)
	defer packetBufs.Put(bp)
	pkt, err := p.eng.header((*bp)[:0], len(b), dst)
	if err == nil && len(b) > p.eng.maxData(len(pkt)) {
		err = ErrDatagramTooLarge
	}
	if err != nil {
		return 0, p.opErr("write", addrOr(addr, dst), err)
	}
	pkt = append(pkt, b...)
	if err := p.eng.write(p, pkt); err != nil {
		return 0, p.failed("write", addrOr(addr, dst), err)
	}
	return len(b), nil
}

func addrOr(addr net.Addr, dst Addr) net.Addr {
	if addr != nil {
		return addr
	}
	return udpAddr(dst)
}

// udpTarget parses a datagram's destination, resolving its name when the
// Dialer resolves locally.
func (d *Dialer) udpTarget(ctx context.Context, network, address string) (Addr, error) {
	tcp := "tcp" + network[len("udp"):]
	return d.target(ctx, tcp, address)
}

// udpAddr returns a as a *net.UDPAddr when it holds an IP address, in one
// allocation, and as a udpName when it holds a name.
func udpAddr(w Addr) net.Addr {
	if w.Name != "" {
		return udpName(w)
	}
	ua := new(udpAddrBuf)
	ua.a.Port = int(w.Port)
	if w.IP.Is4() {
		ua.ip = w.IP.As16()
		ua.a.IP = ua.ip[12:16]
	} else {
		ua.ip = w.IP.As16()
		ua.a.IP = ua.ip[:]
		ua.a.Zone = w.IP.Zone()
	}
	return &ua.a
}

// udpAddrBuf holds a *net.UDPAddr and its IP in one allocation.
type udpAddrBuf struct {
	a  net.UDPAddr
	ip [16]byte
}

// udpName is a datagram's address known by name.
type udpName Addr

func (a udpName) Network() string { return "udp" }
func (a udpName) String() string  { return Addr(a).String() }

// relayAddr is where the datagrams of an association go: the relay of
// the proxy's reply, with an unspecified IP replaced by the proxy's own
// (see proxyIP), and a name resolved.
func (d *Dialer) relayAddr(ctx context.Context, c net.Conn, bnd Addr) (netip.AddrPort, error) {
	ip, name := bnd.IP, bnd.Name
	if name == "" && (!ip.IsValid() || ip.IsUnspecified()) {
		ip, name = d.proxyIP(c)
	}
	if name != "" {
		r := d.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		ips, err := r.LookupNetIP(ctx, "ip", name)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("relay address %s: %w", bnd, err)
		}
		ip = firstIP(ips)
	}
	if bnd.Port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: relay port 0", ErrProtocolViolation)
	}
	return netip.AddrPortFrom(ip.Unmap(), bnd.Port), nil
}

// dialUDP returns a connected UDP net.Conn to address through the proxy:
// the DialContext of network "udp", "udp4" or "udp6".
func (d *Dialer) dialUDP(ctx context.Context, network, address string) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Source: d.proxyAddr(), Addr: netutil.TextAddr(address), Err: err}
	}
	dst, err := d.udpTarget(ctx, network, address)
	if err != nil {
		return nil, opErr(err)
	}
	if dst.Name == "" && !dst.IP.IsValid() {
		return nil, opErr(errMissingAddress)
	}
	p, err := d.listenPacket(ctx, network, "")
	if err != nil {
		return nil, err
	}
	return &udpConn{PacketConn: p, dst: dst, raddr: udpAddr(dst)}, nil
}

// udpConn is a PacketConn with a fixed destination: what DialContext
// returns for UDP. It is a net.PacketConn too, so that the Go resolver
// frames DNS for UDP on it.
type udpConn struct {
	*PacketConn
	dst   Addr
	raddr net.Addr
}

// Read reads a datagram from the destination; datagrams from other
// sources are dropped (a destination given by name matches any source,
// since the proxy names the source by its IP).
func (c *udpConn) Read(b []byte) (int, error) {
	for {
		n, src, err := c.read(b)
		if err != nil || c.dst.Name != "" || src == c.dst {
			return n, err
		}
	}
}

// Write sends b as one datagram to the destination.
func (c *udpConn) Write(b []byte) (int, error) { return c.write(b, c.dst, c.raddr) }

// RemoteAddr returns the destination.
func (c *udpConn) RemoteAddr() net.Addr { return c.raddr }
