//go:build !race

package integration

// The race detector allows 8,128 goroutines at once, fewer than 3,000
// clients and the server's goroutines for them: this test runs in the
// plain "go test ./..." of CI only.

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// 3,000 peers connect at once to http.Serve on an MBIND listener: every
// one is answered, at either smux version.
func TestMBINDGostBurst(t *testing.T) {
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			ln := listenMux(t, v)
			serveHTTP(t, ln)
			const peers = 3000
			client := newClient(t, 60*time.Second)
			var ok atomic.Int64
			var firstErr sync.Once
			var wg sync.WaitGroup
			begin := make(chan struct{})
			for i := range peers {
				wg.Go(func() {
					<-begin
					code, err := get(client, fmt.Sprintf("http://%s/%d", ln.Addr(), i))
					if err == nil && code == http.StatusOK {
						ok.Add(1)
						return
					}
					firstErr.Do(func() { t.Logf("first failure: %d %v", code, err) })
				})
			}
			start := time.Now()
			close(begin)
			wg.Wait()
			t.Logf("smux v%d: %d of %d answered 200 in %v", v, ok.Load(), peers, time.Since(start).Round(time.Millisecond))
			assert.EqualValues(t, peers, ok.Load())
		})
	}
}
