package socksbind

import "time"

const (
	firstRetryDelay = 5 * time.Millisecond
	maxRetryDelay   = time.Second
)

// backoff paces the retries of a listener's engine: a wait that starts at
// 5 ms and doubles up to 1 s (what net/http.Server uses), bounded by a
// limit counted from the first failure since the last reset. The zero
// value with limit 0 retries for ever.
type backoff struct {
	limit time.Duration // 0: none
	since time.Time     // the first failure since the last reset
	delay time.Duration // the last wait
}

// next returns the wait before the attempt after a failure at now, and
// false when the limit has passed.
func (b *backoff) next(now time.Time) (time.Duration, bool) {
	if b.since.IsZero() {
		b.since = now
	}
	if b.limit > 0 && now.Sub(b.since) >= b.limit {
		return 0, false
	}
	b.delay = min(max(2*b.delay, firstRetryDelay), maxRetryDelay)
	if b.limit > 0 {
		b.delay = min(b.delay, b.since.Add(b.limit).Sub(now))
	}
	return b.delay, true
}

// reset starts afresh, after a success.
func (b *backoff) reset() { *b = backoff{limit: b.limit} }

// restart counts the limit afresh from the next failure, keeping the
// pace: after a success that may not last.
func (b *backoff) restart() { b.since = time.Time{} }
