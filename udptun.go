package socksbind

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/socksbind/socksbind/internal/netutil"
)

// tunEngine carries datagrams with GOST's UDP-TUN (command 0xF3): after the
// reply, each datagram travels both ways on the control connection as a
// frame (see [appendTunHeader]). Its goroutine owns reading the
// connection: it keeps reading frames into a bounded queue, dropping what
// overflows as a UDP socket would, so that a slow reader never stalls the
// connection, and a read deadline never cuts a frame in half.
type tunEngine struct {
	c    net.Conn
	in   chan *tunDatagram // frames read, for read
	free sync.Pool         // of *tunDatagram

	wmu sync.Mutex // guards writing frames on c, one whole frame at a time

	rd acceptDeadline
}

type tunDatagram struct {
	buf  [maxTunData]byte
	data []byte // a prefix of buf
	src  Addr
}

// tunQueue is how many datagrams UDP-TUN holds for a reader that is
// behind, as a UDP socket's receive buffer does.
const tunQueue = 64

// tunnel sends UDP-TUN and starts the PacketConn on the connection.
func (d *Dialer) tunnel(ctx context.Context, network, address string) (*PacketConn, error) {
	if address != "" {
		if a, err := parseAddr(address); err != nil || a.Port != 0 {
			if err == nil {
				err = errors.New("UDP-TUN has no local UDP socket: give no local address, or port 0")
			}
			return nil, &net.OpError{Op: "socks " + CmdUDPTun.String(), Net: network, Source: d.proxyAddr(), Addr: localAddrOf(address), Err: err}
		}
	}
	// Port 0 asks GOST to relay; another port asks it for a UDP BIND.
	c, _, err := d.open(ctx, CmdUDPTun, network, Addr{})
	if err != nil {
		return nil, err
	}
	e := &tunEngine{c: c, in: make(chan *tunDatagram, tunQueue), rd: makeAcceptDeadline()}
	p := d.newPacketConn(network, UDPTunnel, c)
	p.eng = e
	p.wg.Go(func() { e.run(p) })
	return p, nil
}

// run reads frames until the connection ends, which ends the association.
// A malformed frame ends it too: the stream cannot be read past it.
func (e *tunEngine) run(p *PacketConn) {
	defer e.rd.stop()
	br := bufio.NewReaderSize(e.c, 64<<10)
	for {
		dg, _ := e.free.Get().(*tunDatagram)
		if dg == nil {
			dg = new(tunDatagram)
		}
		src, data, err := readTunFrame(br, dg.buf[:])
		switch {
		case errors.Is(err, errMalformed):
			p.drops.count(err)
			p.end(fmt.Errorf("%w: %w", ErrAssociationEnded, err))
			return
		case err != nil:
			p.end(ended(err))
			return
		}
		dg.src, dg.data = src, data
		select {
		case e.in <- dg:
		default:
			p.drops.overflow.Add(1)
			e.free.Put(dg)
		}
	}
}

func (e *tunEngine) read(p *PacketConn, b []byte) (int, Addr, error) {
	select {
	case dg := <-e.in:
		n, src := copy(b, dg.data), dg.src
		e.free.Put(dg)
		return n, src, nil
	case <-p.done:
		return 0, Addr{}, p.endErr
	case <-e.rd.wait():
		return 0, Addr{}, os.ErrDeadlineExceeded
	}
}

// write sends one frame. A frame cut short by the write deadline leaves
// the stream unreadable to the proxy, so it ends the association; one the
// deadline stopped before its first byte leaves it as it was.
func (e *tunEngine) write(p *PacketConn, pkt []byte) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	n, err := e.c.Write(pkt)
	if err != nil && n > 0 {
		p.end(fmt.Errorf("%w: frame cut short: %w", ErrAssociationEnded, err))
	}
	if err != nil && !netutil.IsTimeout(err) {
		p.end(ended(err))
	}
	return err
}

func (e *tunEngine) header(b []byte, n int, dst Addr) ([]byte, error) {
	if n < 1 || n > maxTunData {
		return b, ErrDatagramTooLarge
	}
	return appendTunHeader(b, n, dst)
}

func (e *tunEngine) maxData(int) int     { return maxTunData }
func (e *tunEngine) localAddr() net.Addr { return e.c.LocalAddr() }

func (e *tunEngine) setReadDeadline(t time.Time) error {
	e.rd.set(t)
	return nil
}

func (e *tunEngine) setWriteDeadline(t time.Time) error { return e.c.SetWriteDeadline(t) }

// close closes the connection (PacketConn.end already did), which ends
// run.
func (e *tunEngine) close() { e.c.Close() }
