// Package deadlines holds the one way the library bounds blocking I/O on a
// connection by a context.
package deadlines

import (
	"context"
	"errors"
	"net"
	"time"
)

// LongAgo is a deadline in the past: setting it aborts blocked I/O at once.
var LongAgo = time.Unix(1, 0)

// A Watch makes a connection's deadline follow a context for the length of
// one exchange: the context's deadline (or an earlier one) becomes the
// connection's, and a cancellation aborts the blocked read or write at
// once. Call Done when the exchange is over.
type Watch struct {
	ctx      context.Context
	c        net.Conn
	deadline time.Time
	stop     func() bool
}

// Start sets c's deadline to deadline (none when zero) and watches ctx.
func Start(ctx context.Context, c net.Conn, deadline time.Time) Watch {
	if !deadline.IsZero() {
		c.SetDeadline(deadline)
	}
	w := Watch{ctx: ctx, c: c, deadline: deadline}
	if ctx.Done() != nil {
		w.stop = context.AfterFunc(ctx, func() { c.SetDeadline(LongAgo) })
	}
	return w
}

// Done stops watching and returns the exchange's outcome: ctx's error when
// ctx ended (the connection then cannot be handed over, as its deadline
// may be set at any moment), context.DeadlineExceeded when the deadline
// passed, else err. On success the connection's deadline is cleared.
func (w Watch) Done(err error) error {
	if w.stop != nil && !w.stop() {
		return w.ctx.Err()
	}
	if err != nil {
		var ne net.Error
		if !w.deadline.IsZero() && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(w.deadline) {
			return context.DeadlineExceeded
		}
		return err
	}
	if !w.deadline.IsZero() {
		w.c.SetDeadline(time.Time{})
	}
	return nil
}
