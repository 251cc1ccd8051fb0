package deadlines

import (
	"context"
	"os"
	"time"
)

// Bound returns when a handshake started now under ctx must end: the
// earlier of ctx's deadline and now plus limit. A limit of zero or less
// means no bound but ctx's. own reports that the limit, not ctx, set the
// deadline; the caller then reports its expiry as a [TimeoutError].
func Bound(ctx context.Context, limit time.Duration) (deadline time.Time, own bool) {
	deadline, _ = ctx.Deadline()
	if limit <= 0 {
		return deadline, false
	}
	if mine := time.Now().Add(limit); deadline.IsZero() || mine.Before(deadline) {
		return mine, true
	}
	return deadline, false
}

// A TimeoutError reports a handshake that outlived the library's own bound
// (not the caller's). It matches [os.ErrDeadlineExceeded], and its Timeout
// method reports true.
type TimeoutError struct {
	Limit time.Duration
	Hint  string // said after the message, in parentheses, when not empty
}

func (e *TimeoutError) Error() string {
	s := "proxy did not complete the handshake within " + e.Limit.String()
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *TimeoutError) Unwrap() error { return os.ErrDeadlineExceeded }
func (e *TimeoutError) Timeout() bool { return true }
