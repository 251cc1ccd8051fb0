package socksbind

import (
	"testing"
	"time"
)

// A deadline set after stop (as SetDeadline racing Close does) must not
// wait for the stopped timer to fire.
func TestAcceptDeadlineSetAfterStop(t *testing.T) {
	d := makeAcceptDeadline()
	d.set(time.Now().Add(time.Hour))
	d.stop()
	done := make(chan struct{})
	go func() {
		d.set(time.Now().Add(time.Hour))
		d.set(time.Time{})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("set after stop hung")
	}
	d.stop()
}
