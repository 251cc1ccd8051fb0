package socksbind

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// assocEngine carries datagrams with UDP ASSOCIATE (RFC 1928, section 7):
// each travels as UDP between a local socket and the proxy's relay, behind
// a header naming its destination or source. Its goroutine watches the
// control connection, which the proxy closes when it drops the association.
type assocEngine struct {
	udp   *net.UDPConn
	relay netip.AddrPort
	max   int // the largest UDP payload to the relay's family
}

// associate opens the local socket, sends UDP ASSOCIATE declaring it, and
// starts the PacketConn.
func (d *Dialer) associate(ctx context.Context, network, address string) (*PacketConn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "socks " + CmdUDPAssociate.String(), Net: network, Source: d.proxyAddr(), Addr: localAddrOf(address), Err: err}
	}
	var laddr *net.UDPAddr
	if address != "" {
		var err error
		if laddr, err = net.ResolveUDPAddr(network, address); err != nil {
			return nil, opErr(err)
		}
	}
	udp, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, opErr(err)
	}
	// RFC 1928: DST.ADDR and DST.PORT are the address the client will
	// send from. The port is known; the IP only when the user bound one,
	// else 0.0.0.0, which the proxy reads as the control connection's.
	local := udp.LocalAddr().(*net.UDPAddr).AddrPort()
	declared := Addr{Port: local.Port()}
	if ip := local.Addr().Unmap(); !ip.IsUnspecified() {
		declared.IP = ip
	}
	c, bnd, err := d.open(ctx, CmdUDPAssociate, network, declared)
	if err != nil {
		udp.Close()
		return nil, err
	}
	relay, err := d.relayAddr(ctx, c, bnd)
	if err != nil {
		c.Close()
		udp.Close()
		return nil, opErr(err)
	}
	e := &assocEngine{udp: udp, relay: relay, max: 65535 - 8 - 20}
	if relay.Addr().Is6() {
		e.max = 65535 - 8
	}
	p := d.newPacketConn(network, UDPAssociate, c)
	p.eng = e
	p.wg.Go(func() { e.watch(p) })
	return p, nil
}

// watch reads the control connection until it ends, which ends the
// association. The proxy has nothing to say on it; what it sends anyway is
// discarded.
func (e *assocEngine) watch(p *PacketConn) {
	var b [64]byte
	for {
		if _, err := p.ctrl.Read(b[:]); err != nil {
			p.end(ended(err))
			return
		}
	}
}

func (e *assocEngine) read(p *PacketConn, b []byte) (int, Addr, error) {
	bp := packetBufs.Get().(*[]byte)
	defer packetBufs.Put(bp)
	buf := *bp
	for {
		n, from, err := e.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return 0, Addr{}, err
		}
		if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != e.relay {
			p.drops.foreign.Add(1)
			continue
		}
		src, hl, err := parseUDPHeader(buf[:n])
		if err != nil {
			p.drops.count(err)
			continue
		}
		return copy(b, buf[hl:n]), src, nil
	}
}

func (e *assocEngine) write(_ *PacketConn, pkt []byte) error {
	_, err := e.udp.WriteToUDPAddrPort(pkt, e.relay)
	return err
}

func (e *assocEngine) header(b []byte, _ int, dst Addr) ([]byte, error) {
	return appendUDPHeader(b, dst)
}

func (e *assocEngine) maxData(hdr int) int                { return e.max - hdr }
func (e *assocEngine) localAddr() net.Addr                { return e.udp.LocalAddr() }
func (e *assocEngine) setReadDeadline(t time.Time) error  { return e.udp.SetReadDeadline(t) }
func (e *assocEngine) setWriteDeadline(t time.Time) error { return e.udp.SetWriteDeadline(t) }
func (e *assocEngine) close()                             { e.udp.Close() }
