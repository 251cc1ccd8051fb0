// Package latency is a TCP relay that delays every byte by a fixed time in
// each direction, so that tests and benchmarks on loopback can count round
// trips: a message and its answer through the relay take one round trip,
// twice the one-way delay. Connecting to the relay is immediate, as is its
// own connection upstream; only data is delayed.
package latency

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/socksbind/socksbind/internal/tracker"
)

// A Relay accepts on a loopback port and relays each connection to its
// upstream address with the delay added each way.
type Relay struct {
	ln       net.Listener
	upstream string
	delay    time.Duration
	conns    tracker.Set
	wg       sync.WaitGroup
}

// New starts a relay to upstream that delays data by oneWay each way.
func New(upstream string, oneWay time.Duration) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{ln: ln, upstream: upstream, delay: oneWay}
	r.wg.Go(func() { tracker.Serve(ln, &r.conns, &r.wg, r.relay) })
	return r, nil
}

// Addr is the relay's address, to dial instead of upstream.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// RTT is the round trip the relay adds: twice the one-way delay.
func (r *Relay) RTT() time.Duration { return 2 * r.delay }

// Close stops the relay and every connection through it, and returns once
// all of its goroutines are done.
func (r *Relay) Close() error {
	err := r.ln.Close()
	r.conns.Close()
	r.wg.Wait()
	return err
}

// relay carries one connection to upstream and back.
func (r *Relay) relay(down net.Conn) {
	defer r.conns.Release(down)
	up, err := net.Dial("tcp", r.upstream)
	if err != nil || !r.conns.Track(up) {
		return
	}
	defer r.conns.Release(up)
	done := make(chan struct{})
	r.wg.Go(func() {
		defer close(done)
		r.pipe(up, down)
	})
	r.pipe(down, up)
	<-done
}

// chunk is data read at one moment, due at another.
type chunk struct {
	data []byte
	due  time.Time
	eof  bool
}

// pipe copies src to dst, holding each chunk until it is due.
func (r *Relay) pipe(dst, src net.Conn) {
	queue := make(chan chunk, 1024)
	r.wg.Go(func() {
		defer close(queue)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				queue <- chunk{data: buf[:n], due: time.Now().Add(r.delay)}
			}
			if err != nil {
				if err == io.EOF {
					queue <- chunk{eof: true, due: time.Now().Add(r.delay)}
				}
				return
			}
		}
	})
	for ch := range queue {
		time.Sleep(time.Until(ch.due))
		if ch.eof {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			continue
		}
		if _, err := dst.Write(ch.data); err != nil {
			src.Close()
			dst.Close()
			for range queue { // let the reader finish
			}
			return
		}
	}
}
