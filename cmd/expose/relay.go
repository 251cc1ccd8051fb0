package main

import (
	"io"
	"net"
	"sync"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
)

// spliceChunk is how many bytes a spliced copy moves between two updates
// of its byte count: the kernel moves them, and the count is told at least
// this often.
const spliceChunk = 1 << 20

// bufSize is the size of the buffers of bufPool: smux's largest frame.
const bufSize = 32 << 10

// bufPool holds the buffers of the copies that the kernel cannot splice.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, bufSize)
	return &b
}}

// relay copies between the peer's connection and the service's until both
// directions are done, and returns the bytes that went from the peer to
// the service (up) and back (down). The bytes are also told to countUp and
// countDown as they pass. The end of one direction is passed on as a
// half-close of the other side; a side that cannot half-close is closed. A
// failure in either direction (a side gone: reset, broken pipe) closes
// both and is returned.
//
// Where both ends are TCP connections (a standard BIND's relay is the
// connection to the proxy), the kernel splices the bytes from one socket
// to the other. A multiplexed connection (an smux stream) is read with the
// stream's own WriteTo, which hands its buffers over, and the other way
// goes through a buffer of bufPool.
func relay(peer, svc net.Conn, countUp, countDown func(int64)) (up, down int64, err error) {
	peer, svc = unwrap(peer), unwrap(svc)
	var once sync.Once
	var first error
	end := func(err error) {
		once.Do(func() {
			first = err
			peer.Close()
			svc.Close()
		})
	}
	upDone := make(chan int64, 1)
	go func() { upDone <- pipe(svc, peer, countUp, end) }()
	down = pipe(peer, svc, countDown, end)
	up = <-upDone
	end(nil)
	return up, down, first
}

// unwrap returns the TCP connection to the proxy that carries c, when c is
// a connection of socksbind relayed on one: reading and writing it is
// reading and writing c, and the kernel can splice it.
func unwrap(c net.Conn) net.Conn {
	if sc, ok := c.(*socksbind.Conn); ok {
		if tc, ok := sc.NetConn().(*net.TCPConn); ok {
			return tc
		}
	}
	return c
}

// pipe copies src to dst, then half-closes dst. It calls end with the
// failure, or with nil when dst cannot half-close.
func pipe(dst, src net.Conn, count func(int64), end func(error)) int64 {
	n, err := copyCounted(dst, src, count)
	if err != nil {
		end(err)
		return n
	}
	if netutil.CloseWrite(dst, nil, nil) != nil {
		end(nil)
	}
	return n
}

// copyCounted copies src to dst until EOF, telling count of the bytes as
// they are written; see relay for how.
func copyCounted(dst, src net.Conn, count func(int64)) (int64, error) {
	if count == nil {
		count = func(int64) {}
	}
	td, dstTCP := dst.(*net.TCPConn)
	ts, srcTCP := src.(*net.TCPConn)
	switch {
	case dstTCP && srcTCP:
		return copySpliced(td, ts, count)
	case !srcTCP:
		inner := src
		if sc, ok := src.(*socksbind.Conn); ok {
			inner = sc.NetConn()
		}
		if wt, ok := inner.(io.WriterTo); ok {
			return wt.WriteTo(countingWriter{dst, count})
		}
	}
	return copyPooled(dst, src, count)
}

// copySpliced copies with the kernel's splice, spliceChunk at a time.
func copySpliced(dst, src *net.TCPConn, count func(int64)) (int64, error) {
	var total int64
	for {
		// TCPConn.ReadFrom splices from an io.LimitedReader of a TCPConn.
		n, err := dst.ReadFrom(&io.LimitedReader{R: src, N: spliceChunk})
		total += n
		count(n)
		switch {
		case err != nil:
			return total, err
		case n < spliceChunk:
			return total, nil // EOF
		}
	}
}

// copyPooled copies through a buffer of bufPool.
func copyPooled(dst io.Writer, src io.Reader, count func(int64)) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var total int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			total += int64(nw)
			count(int64(nw))
			if werr != nil {
				return total, werr
			}
			if nw < nr {
				return total, io.ErrShortWrite
			}
		}
		switch {
		case rerr == io.EOF:
			return total, nil
		case rerr != nil:
			return total, rerr
		}
	}
}

// countingWriter tells count of each write. It has no ReadFrom, so that
// the writer's fast path is not taken around the count.
type countingWriter struct {
	w     io.Writer
	count func(int64)
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.count(int64(n))
	return n, err
}
