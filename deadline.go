package socksbind

import (
	"sync"
	"time"
)

// acceptDeadline is the deadline of a Listener's Accept, with the semantics
// of net/pipe.go's pipeDeadline: wait returns a channel that is closed when
// the deadline passes. A waiter keeps its channel when set moves the
// deadline, and so sees the new one too.
type acceptDeadline struct {
	mu     sync.Mutex // guards timer and cancel
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

func makeAcceptDeadline() acceptDeadline {
	return acceptDeadline{cancel: make(chan struct{})}
}

// set sets the deadline; the zero time means none.
func (d *acceptDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait until it has closed cancel
	}
	d.timer = nil
	closed := isDone(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// wait returns a channel that is closed when the deadline passes.
func (d *acceptDeadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// stop releases the timer. A stopped timer that has not fired leaves
// cancel open for good, so it is forgotten: a later set must not wait for
// it to close cancel.
func (d *acceptDeadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
