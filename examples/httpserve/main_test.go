package main

import (
	"bytes"
	"context"
	"log"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/socks5test"
)

// "listening again on" is logged when a re-arm lands at another address,
// and only then: a proxy that keeps the port (BindReuse) gives no line
// for three connections; one that cannot while the last connection holds
// the port (BindDante) gives one line for each.
func TestListeningAgain(t *testing.T) {
	for _, tt := range []struct {
		mode  socks5test.BindMode
		lines int
	}{
		{socks5test.BindReuse, 0},
		{socks5test.BindDante, 3},
	} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			leakcheck.Check(t)
			srv := socks5test.NewUnstartedServer()
			srv.BindMode = tt.mode
			srv.Start()
			t.Cleanup(srv.Close)

			var out bytes.Buffer // written by the listener's goroutine, read once it is closed
			moved := &moves{log: log.New(&out, "", 0)}
			armed := make(chan net.Addr, 1)
			lc := socksbind.ListenConfig{
				Dialer: &socksbind.Dialer{ProxyAddress: srv.Addr()},
				Armed:  func(a net.Addr) { moved.armed(a); armed <- a },
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ln, err := lc.Listen(ctx, "tcp", ":0")
			require.NoError(t, err)
			moved.listening(ln.Addr())

			addr, addrs := ln.Addr(), []string{ln.Addr().String()}
			for range 3 {
				peer, err := net.Dial("tcp", addr.String())
				require.NoError(t, err)
				defer peer.Close()
				c, err := ln.AcceptContext(ctx)
				require.NoError(t, err)
				defer c.Close() // held open: the proxy cannot bind its port again meanwhile
				select {
				case addr = <-armed:
					addrs = append(addrs, addr.String())
				case <-ctx.Done():
					require.FailNow(t, "the listener did not re-arm")
				}
			}
			require.NoError(t, ln.Close())

			text := out.String()
			assert.Equal(t, tt.lines, strings.Count(text, "listening again on"), "%s", text)
			for i := 1; i <= tt.lines; i++ {
				assert.Contains(t, text, "listening again on "+addrs[i]+" (was "+addrs[i-1]+")")
			}
		})
	}
}
