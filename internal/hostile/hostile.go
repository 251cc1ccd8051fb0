// Package hostile is a proxy that misbehaves on cue, for tests: it accepts
// connections on a port of 127.0.0.1 and plays a script on each, a list of
// steps that read the client's messages and then write, drip, cut, reset or
// withhold the answers. It speaks no protocol of its own: the script holds
// every byte it sends.
//
// When the script ends, the proxy reads until the client closes. Then, as
// when a step fails or the server closes, it closes with a reset
// (SO_LINGER 0): the client sees no end of file from the proxy, so a test
// that wants one ends its script with [Cut]. The reset spares both ends
// the TIME_WAIT state, which holds a port for a minute: a suite that opens
// thousands of connections would otherwise run out of ports, all the more
// when several test processes share the machine. Only a [Cut] leaves a
// TIME_WAIT, at the proxy's end. [Server.Close] ends every step at once
// and waits for every goroutine the server started.
package hostile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/socksbind/socksbind/internal/srvbase"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/tracker"
)

// A Step is one action of a script, run on the proxy's end of a
// connection. A step that waits must return once the connection fails or
// the server closes (c.Done). An error ends the script.
type Step func(c *Conn) error

// Conn is the proxy's end of one connection.
type Conn struct {
	*net.TCPConn

	// Done is closed when the server is closing.
	Done <-chan struct{}
}

// errCut and errReset end a script that has closed its connection, or its
// writing side, itself.
var (
	errCut   = errors.New("hostile: the script cut the connection")
	errReset = errors.New("hostile: the script reset the connection")
)

// Write sends b in one Write.
func Write(b []byte) Step {
	return func(c *Conn) error {
		_, err := c.Write(b)
		return err
	}
}

// Drip sends b one byte at a time, each after a pause of every.
func Drip(b []byte, every time.Duration) Step {
	return func(c *Conn) error {
		t := time.NewTimer(every)
		defer t.Stop()
		for i := range b {
			select {
			case <-t.C:
			case <-c.Done:
				return net.ErrClosed
			}
			if _, err := c.Write(b[i : i+1]); err != nil {
				return err
			}
			t.Reset(every)
		}
		return nil
	}
}

// Flood sends what r holds, until r ends or a write fails (the client has
// gone, or the server closed).
func Flood(r io.Reader) Step {
	return func(c *Conn) error {
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
}

// Cut closes the proxy's writing side, so the client reads an end of file,
// and ends the script; the proxy then reads until the client closes, and
// closes.
func Cut() Step {
	return func(c *Conn) error {
		c.CloseWrite()
		return errCut
	}
}

// Reset closes the connection with a TCP reset (SO_LINGER 0) and ends the
// script.
func Reset() Step {
	return func(c *Conn) error {
		c.SetLinger(0)
		c.Close()
		return errReset
	}
}

// Silence reads and drops whatever the client sends and answers nothing,
// until the client closes or the server does.
func Silence() Step {
	return func(c *Conn) error {
		_, err := io.Copy(io.Discard, c)
		return err
	}
}

// Await waits until ch is closed: the test's cue.
func Await(ch <-chan struct{}) Step {
	return func(c *Conn) error {
		select {
		case <-ch:
			return nil
		case <-c.Done:
			return net.ErrClosed
		}
	}
}

// ReadGreeting reads a SOCKS5 greeting (version and methods).
func ReadGreeting() Step {
	return func(c *Conn) error {
		_, err := srvwire.ReadGreeting(c)
		return err
	}
}

// ReadUserPass reads an RFC 1929 username/password request.
func ReadUserPass() Step {
	return func(c *Conn) error {
		_, _, err := srvwire.ReadUserPass(c)
		return err
	}
}

// ReadRequest reads a SOCKS5 request.
func ReadRequest() Step {
	return func(c *Conn) error {
		_, _, err := srvwire.ReadRequest(c)
		return err
	}
}

// maxRequestHead bounds what ReadHTTPHead reads.
const maxRequestHead = 64 << 10

// ReadHTTPHead reads an HTTP request's head, up to the empty line that ends
// it, one byte at a time so that nothing after it is taken.
func ReadHTTPHead() Step {
	return func(c *Conn) error {
		var head []byte
		b := make([]byte, 1)
		for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			if len(head) > maxRequestHead {
				return fmt.Errorf("hostile: request head longer than %d bytes", maxRequestHead)
			}
			if _, err := io.ReadFull(c, b); err != nil {
				return err
			}
			head = append(head, b[0])
		}
		return nil
	}
}

// A Stream is an endless stream of bytes that looks random and is the same
// for the same seed, for checking that every byte of a flood arrives, in
// order, once.
type Stream struct{ r *rand.ChaCha8 }

// NewStream returns the stream of seed.
func NewStream(seed byte) *Stream {
	return &Stream{rand.NewChaCha8([32]byte{seed})}
}

// Read fills p with the next bytes of the stream.
func (s *Stream) Read(p []byte) (int, error) { return s.r.Read(p) }

// A Server plays its script on every connection it accepts.
type Server struct {
	ln     net.Listener
	script []Step
	done   chan struct{}
	base   srvbase.Base
	wg     sync.WaitGroup
	conns  tracker.Set
}

// NewServer starts a Server on a port of 127.0.0.1 that plays script on
// every connection. The caller must Close it.
func NewServer(script ...Step) *Server {
	s := &Server{ln: srvbase.Listen("hostile"), script: script, done: make(chan struct{})}
	s.base.Init("hostile", &s.wg, &s.conns, func() { close(s.done) })
	s.base.Start(resetListener{s.ln}, s.handle)
	return s
}

// resetListener accepts connections that close with a reset.
type resetListener struct{ net.Listener }

func (l resetListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return resetConn{c.(*net.TCPConn)}, nil
}

// resetConn closes with a reset (SO_LINGER 0), whoever closes it: the end
// of a script, or Server.Close while the client has not closed yet.
type resetConn struct{ *net.TCPConn }

func (c resetConn) Close() error {
	c.SetLinger(0)
	return c.TCPConn.Close()
}

// Addr returns the address the server listens on, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server: it closes the listener and every connection, and
// waits for every step to return. It is safe to call more than once.
func (s *Server) Close() { s.base.Close(s.ln) }

func (s *Server) handle(nc net.Conn) {
	defer s.conns.Release(nc)
	c := &Conn{TCPConn: nc.(resetConn).TCPConn, Done: s.done}
	for _, step := range s.script {
		if err := step(c); err != nil {
			if err == errCut {
				// The client reads the end of file, then closes;
				// a reset before that could overtake the end of
				// file.
				io.Copy(io.Discard, c)
			}
			return
		}
	}
	io.Copy(io.Discard, c)
}
