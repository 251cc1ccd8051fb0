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

// SetMuxBuffers sets the receive buffers of a multiplexed listener's
// sessions, until the benchmark or test ends.
func SetMuxBuffers(tb testing.TB, session, stream int) {
	oldSession, oldStream := muxSessionBuffer, muxStreamBuffer
	muxSessionBuffer, muxStreamBuffer = session, stream
	tb.Cleanup(func() { muxSessionBuffer, muxStreamBuffer = oldSession, oldStream })
}

// SessionLost is the error the streams of a lost MBIND session fail with.
type SessionLost = sessionLost

// The errors a malformed UDP-TUN frame or datagram header wraps, and the
// FRAG byte of a UDP-TUN frame.
var (
	ErrTunFrame    = errTunFrame
	ErrUDPAddrType = errUDPAddrType
	ErrUDPName     = errUDPName
)

const TunFrag = tunFrag
