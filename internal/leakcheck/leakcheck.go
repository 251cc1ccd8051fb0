// Package leakcheck fails a test that leaves goroutines of this module or
// file descriptors behind, in the manner of net/http's main_test.go.
package leakcheck

import (
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// How long Check waits for goroutines and descriptors to go away: they end
// asynchronously after a Close returns (the kernel, the runtime's poller).
const settle = 5 * time.Second

// Check records the goroutines and file descriptors in use now, and fails
// the test, at its cleanup, if goroutines running this module's code or
// more descriptors are still there. Register it before anything the test
// closes in its own cleanups, since cleanups run last-in first-out.
func Check(t testing.TB) {
	t.Helper()
	before := goroutines()
	fds := openFDs()
	t.Cleanup(func() {
		var leaked []string
		var nfd int
		for deadline := time.Now().Add(settle); ; time.Sleep(5 * time.Millisecond) {
			leaked = leaked[:0]
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok {
					leaked = append(leaked, stack)
				}
			}
			nfd = openFDs()
			if (len(leaked) == 0 && nfd <= fds) || time.Now().After(deadline) {
				break
			}
		}
		sort.Strings(leaked)
		for _, s := range leaked {
			t.Errorf("goroutine leaked:\n%s", s)
		}
		if nfd > fds {
			t.Errorf("file descriptors leaked: %d open before, %d after", fds, nfd)
		}
	})
}

// goroutines returns the stacks, by goroutine header, of the goroutines
// that run code of this module, except test functions' own.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	m := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if !strings.Contains(g, "github.com/socksbind/socksbind") ||
			strings.Contains(g, "testing.tRunner") ||
			strings.Contains(g, "leakcheck.goroutines") {
			continue
		}
		id := strings.Fields(header)
		if len(id) < 2 {
			continue
		}
		m[id[1]] = g
	}
	return m
}

// openFDs counts this process's open file descriptors, or returns 0 where
// /proc is missing.
func openFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(entries)
}
