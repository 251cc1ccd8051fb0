package socksbind_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/socks5test"
)

// BenchmarkMultiplexBulk measures one stream's throughput from a peer to
// the application through an in-process MBIND proxy at smux version 2, for
// several sizes of the listener's per-stream window (its MaxStreamBuffer,
// how much the proxy may send ahead on a stream), beside a direct socket:
//
//	go test -run '^$' -bench MultiplexBulk -benchtime 20x -count 5 .
func BenchmarkMultiplexBulk(b *testing.B) {
	const size = 32 << 20
	payload := make([]byte, 1<<20)
	run := func(b *testing.B, ln net.Listener) {
		b.SetBytes(size)
		for b.Loop() {
			peer, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(b, err)
			c, err := ln.Accept()
			require.NoError(b, err)
			go func() {
				for sent := 0; sent < size; sent += len(payload) {
					if _, err := peer.Write(payload); err != nil {
						break
					}
				}
				peer.Close()
			}()
			n, err := io.Copy(io.Discard, c)
			require.NoError(b, err)
			require.EqualValues(b, size, n)
			c.Close()
		}
	}
	b.Run("direct", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		defer ln.Close()
		run(b, ln)
	})
	for _, window := range []int{64 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("mbind-v2-window=%dKiB", window>>10), func(b *testing.B) {
			socksbind.SetMuxBuffers(b, 4<<20, window)
			srv := socks5test.NewUnstartedServer()
			srv.Multiplex, srv.MultiplexVersion = true, 2
			srv.Start()
			defer srv.Close()
			d, err := socksbind.SOCKS5("tcp", srv.Addr(), nil, nil)
			require.NoError(b, err)
			lc := socksbind.ListenConfig{Dialer: d, Multiplex: socksbind.MultiplexOn}
			ln, err := lc.Listen(context.Background(), "tcp", ":0")
			require.NoError(b, err)
			defer ln.Close()
			run(b, ln)
		})
	}
}
