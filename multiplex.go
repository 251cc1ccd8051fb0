package socksbind

import "strconv"

// Multiplex selects the command a [Listener] asks the proxy to listen with.
type Multiplex int

const (
	// MultiplexOff uses the standard BIND command of RFC 1928: one
	// connection per request, the listener re-arming after each.
	MultiplexOff Multiplex = iota

	// MultiplexOn uses GOST's multiplexed BIND (MBIND, command 0xF2): one
	// request, one port at the proxy, and every peer arriving as its own
	// stream over the control connection. A proxy without it fails
	// Listen with an error matching [ErrCommandNotSupported], or what its
	// reply code says.
	MultiplexOn

	// MultiplexAuto uses MBIND when the proxy has it and BIND otherwise.
	// The answer is learned once per [Dialer] and remembered.
	MultiplexAuto
)

func (m Multiplex) String() string {
	switch m {
	case MultiplexOff:
		return "off"
	case MultiplexOn:
		return "on"
	case MultiplexAuto:
		return "auto"
	}
	return "multiplex " + strconv.Itoa(int(m))
}
