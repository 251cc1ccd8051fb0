package socksbind

import (
	"testing"
	"time"
)

// SetMuxSilence sets how long a multiplexed listener's session may be
// silent, until the test ends.
func SetMuxSilence(t *testing.T, d time.Duration) {
	old := muxSilence
	muxSilence = d
	t.Cleanup(func() { muxSilence = old })
}
