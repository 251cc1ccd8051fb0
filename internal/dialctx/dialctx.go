// Package dialctx dials through any golang.org/x/net/proxy.Dialer under a
// context.
package dialctx

import (
	"context"
	"net"

	"golang.org/x/net/proxy"
)

// Dial dials address through d under ctx: with net.Dialer when d is nil,
// with d's DialContext when it has one. A dialer without DialContext runs in
// a goroutine that closes its connection if the caller has given up by the
// time it returns, so nothing leaks; that goroutine lives as long as d's
// Dial, which nothing can cut short.
func Dial(ctx context.Context, d proxy.Dialer, network, address string) (net.Conn, error) {
	switch f := d.(type) {
	case nil:
		var nd net.Dialer
		return nd.DialContext(ctx, network, address)
	case proxy.ContextDialer:
		return f.DialContext(ctx, network, address)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result)
	go func() {
		c, err := d.Dial(network, address)
		select {
		case ch <- result{c, err}:
		case <-ctx.Done():
			if c != nil {
				c.Close()
			}
		}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
