package socksbind

import (
	"io"
	"net"

	"github.com/socksbind/socksbind/internal/netutil"
)

// Conn is a connection relayed by a SOCKS proxy: the result of a CONNECT,
// or a connection accepted through BIND.
//
// RemoteAddr is the far end (the CONNECT target, or the peer of a BIND) and
// LocalAddr the address the proxy reported for its side. Conn passes the
// fast paths of the connection to the proxy through: it implements
// [io.ReaderFrom], [io.WriterTo], CloseWrite and CloseRead, so [io.Copy]
// between two such connections, or between one and a [*net.TCPConn], can
// still use splice.
type Conn struct {
	net.Conn
	local, remote Addr // made a net.Addr on demand
}

// NetConn returns the connection to the proxy that carries the relay.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// LocalAddr returns the address the proxy reported for its end of the relay.
func (c *Conn) LocalAddr() net.Addr { return netAddr(c.local) }

// RemoteAddr returns the address of the far end: a [*net.TCPAddr], or an
// [Addr] when the target was given to the proxy by name.
func (c *Conn) RemoteAddr() net.Addr { return netAddr(c.remote) }

// ReadFrom implements [io.ReaderFrom] with the underlying connection's own,
// after unwrapping r if it is a Conn, so that the kernel can splice.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	switch v := r.(type) {
	case *Conn:
		r = v.Conn
	case *io.LimitedReader:
		if inner, ok := v.R.(*Conn); ok {
			lr := &io.LimitedReader{R: inner.Conn, N: v.N}
			n, err := c.readFrom(lr)
			v.N = lr.N
			return n, err
		}
	}
	return c.readFrom(r)
}

func (c *Conn) readFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

// WriteTo implements [io.WriterTo]: it hands the underlying connection to
// w's ReadFrom when w has one, else to the underlying WriteTo.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(c.Conn)
	}
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, readerOnly{c.Conn})
}

// CloseWrite shuts down the writing side: the far end reads EOF once the
// proxy has relayed it.
func (c *Conn) CloseWrite() error {
	return netutil.CloseWrite(c.Conn, c.LocalAddr(), c.RemoteAddr())
}

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error {
	return netutil.CloseRead(c.Conn, c.LocalAddr(), c.RemoteAddr())
}

// writerOnly and readerOnly hide every method but Write or Read, so that a
// fallback io.Copy cannot call back into Conn.
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }
