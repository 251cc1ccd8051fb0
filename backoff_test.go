package socksbind

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBackoff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var b backoff
	var waits []time.Duration
	for range 10 {
		w, ok := b.next(t0)
		assert.True(t, ok)
		waits = append(waits, w)
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second}, waits)

	b.reset()
	w, _ := b.next(t0)
	assert.Equal(t, 5*ms, w, "after reset")

	limited := backoff{limit: 100 * ms}
	w, ok := limited.next(t0)
	assert.True(t, ok)
	assert.Equal(t, 5*ms, w)
	w, ok = limited.next(t0.Add(98 * ms))
	assert.True(t, ok)
	assert.Equal(t, 2*ms, w, "the wait ends at the limit")
	_, ok = limited.next(t0.Add(100 * ms))
	assert.False(t, ok, "the limit has passed")
	limited.reset()
	assert.Equal(t, 100*ms, limited.limit, "reset keeps the limit")
	_, ok = limited.next(t0.Add(time.Hour))
	assert.True(t, ok, "the limit counts from the first failure after a reset")

	paced := backoff{limit: time.Minute}
	paced.next(t0)
	paced.next(t0)
	paced.restart()
	w, ok = paced.next(t0.Add(time.Hour))
	assert.True(t, ok, "the limit counts from the first failure after a restart")
	assert.Equal(t, 20*ms, w, "restart keeps the pace")
}
