package socksbind_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/socksbind/socksbind"
)

// pipeDialer hands the client one end of a pipe whose other end answers
// with fixed bytes and then closes.
type pipeDialer struct{ answer []byte }

func (p pipeDialer) Dial(network, addr string) (net.Conn, error) {
	return p.DialContext(context.Background(), network, addr)
}

func (p pipeDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		go io.Copy(io.Discard, server) // take whatever the client sends
		server.Write(p.answer)
	}()
	return client, nil
}

// FuzzHandshake gives the client arbitrary answers from the proxy, for
// CONNECT and BIND: every one must end in a connection or a *net.OpError,
// never a panic or a hang.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte{5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 2, 1, 0, 5, 0, 0, 3, 1, 'a', 0, 1})
	f.Add([]byte{5, 0, 5, 5, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{5, 0xff})
	f.Fuzz(func(t *testing.T, answer []byte) {
		d := &socksbind.Dialer{
			ProxyAddress: "127.0.0.1:1080",
			Forward:      pipeDialer{answer},
			Auth:         []socksbind.Authenticator{socksbind.NoAuth{}, &socksbind.UsernamePassword{Username: "u", Password: "p"}},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		check := func(c io.Closer, err error) {
			var op *net.OpError
			switch {
			case err == nil:
				c.Close()
			case !errors.As(err, &op):
				t.Fatalf("error %v (%T) is not a *net.OpError", err, err)
			case errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("the handshake hung on %x", answer)
			}
		}
		c, err := d.DialContext(ctx, "tcp", "example.com:80")
		check(c, err)
		ln, err := d.Listen(ctx, "tcp", ":0")
		check(ln, err)
	})
}
