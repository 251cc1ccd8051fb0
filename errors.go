package socksbind

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/socksbind/socksbind/internal/wire"
)

// Sentinel errors. Every error the library returns is a [*net.OpError];
// match its cause with [errors.Is]. A failure reply from the proxy is a
// [*ReplyError] that matches both the sentinel of its code and the errno a
// C program would get from the same failure, so both of these hold for a
// CONNECT the proxy refused:
//
//	errors.Is(err, socksbind.ErrConnectionRefused)
//	errors.Is(err, syscall.ECONNREFUSED)
//
// The table, with the names of the classic C client API:
//
//	C name           reply  sentinel                  also matches
//	S5_ESRVFAIL      0x01   ErrGeneralFailure
//	S5_EPERM         0x02   ErrNotAllowed             syscall.EACCES
//	S5_ENETUNREACH   0x03   ErrNetworkUnreachable     syscall.ENETUNREACH
//	S5_EHOSTUNREACH  0x04   ErrHostUnreachable        syscall.EHOSTUNREACH
//	S5_ECONNREFUSED  0x05   ErrConnectionRefused      syscall.ECONNREFUSED
//	S5_ETIMEDOUT     0x06   ErrTTLExpired             syscall.ETIMEDOUT
//	S5_EOPNOTSUPP    0x07   ErrCommandNotSupported    syscall.EOPNOTSUPP
//	S5_EAFNOSUPPORT  0x08   ErrAddressNotSupported    syscall.EAFNOSUPPORT
//	S5_EADDRINUSE    -      ErrAddressInUse           syscall.EADDRINUSE
//	S5_ENOSERV       -      ErrNoProxy
//
// Unassigned reply codes (0x09 to 0xFF) match ErrGeneralFailure.
//
// A proxy that closes the connection instead of replying to BIND or to
// GOST's multiplexed BIND, as Dante and OpenSSH's ssh -D do for a command
// they lack, fails with an error matching ErrCommandNotSupported. For BIND
// this holds until the proxy has replied to one from the same Dialer;
// after that such a close is a failure that may pass, which a [Listener]
// retries.
var (
	ErrGeneralFailure      error = &codeError{msg: "general SOCKS server failure"}
	ErrNotAllowed          error = &codeError{msg: "connection not allowed by ruleset", errno: syscall.EACCES}
	ErrNetworkUnreachable  error = &codeError{msg: "network unreachable", errno: syscall.ENETUNREACH}
	ErrHostUnreachable     error = &codeError{msg: "host unreachable", errno: syscall.EHOSTUNREACH}
	ErrConnectionRefused   error = &codeError{msg: "connection refused", errno: syscall.ECONNREFUSED}
	ErrTTLExpired          error = &codeError{msg: "TTL expired", errno: syscall.ETIMEDOUT}
	ErrCommandNotSupported error = &codeError{msg: "command not supported", errno: syscall.EOPNOTSUPP}
	ErrAddressNotSupported error = &codeError{msg: "address type not supported", errno: syscall.EAFNOSUPPORT}

	// ErrAddressInUse reports that the proxy bound another port than the
	// one a listener asked for.
	ErrAddressInUse error = &codeError{msg: "proxy bound another port than the one requested", errno: syscall.EADDRINUSE}

	// ErrNoProxy reports that no proxy is configured where one is required.
	ErrNoProxy error = &codeError{msg: "no proxy configured"}

	// ErrAuthRejected reports that the proxy rejected the credentials
	// (an RFC 1929 status other than 0, or a failed custom method).
	ErrAuthRejected = errors.New("authentication rejected")

	// ErrNoAcceptableAuth reports that the proxy accepted none of the
	// offered authentication methods (method 0xFF).
	ErrNoAcceptableAuth = errors.New("no acceptable authentication methods")

	// ErrProtocolViolation reports bytes from the proxy that are not valid
	// SOCKS version 5: a wrong version, an unknown address type, a method
	// that was not offered, or a reply cut short.
	ErrProtocolViolation = errMalformed
)

// The errors of a call the API does not allow: a method of a nil *Dialer, a
// ListenConfig without a Dialer, a nil context.
var (
	errNilDialer  = fmt.Errorf("%w: nil Dialer", ErrNoProxy)
	errNilContext = errors.New("nil context")
)

// errMalformed is the error every decoding failure of the codec wraps.
var errMalformed = wire.ErrMalformed

// codeError is a sentinel that also matches the errno of the same failure.
type codeError struct {
	msg   string
	errno syscall.Errno
}

func (e *codeError) Error() string { return e.msg }

// Is reports whether target is the errno of e, or a portable error the errno
// matches (so ErrNotAllowed also matches fs.ErrPermission).
func (e *codeError) Is(target error) bool {
	if e.errno == 0 {
		return false
	}
	return target == e.errno || e.errno.Is(target)
}

// A ReplyError is a failure reply from the proxy. Use [errors.As] to read
// the code; [errors.Is] matches the sentinel of the code and its errno.
type ReplyError struct {
	// Command is the request that failed.
	Command Command

	// Reply is the code the proxy sent.
	Reply Reply

	// Addr is the peer the proxy turned away, for a failed second BIND
	// reply that names one; nil otherwise.
	Addr net.Addr
}

func (e *ReplyError) Error() string {
	s := e.Reply.String()
	if e.Addr != nil {
		s += " (" + e.Addr.String() + ")"
	}
	return s
}

// Unwrap returns the sentinel of the code.
func (e *ReplyError) Unwrap() error {
	switch e.Reply {
	case ReplyNotAllowed:
		return ErrNotAllowed
	case ReplyNetworkUnreachable:
		return ErrNetworkUnreachable
	case ReplyHostUnreachable:
		return ErrHostUnreachable
	case ReplyConnectionRefused:
		return ErrConnectionRefused
	case ReplyTTLExpired:
		return ErrTTLExpired
	case ReplyCommandNotSupported:
		return ErrCommandNotSupported
	case ReplyAddressTypeNotSupported:
		return ErrAddressNotSupported
	}
	return ErrGeneralFailure
}

// Timeout reports whether the proxy gave up on a timer (TTL expired).
func (e *ReplyError) Timeout() bool { return e.Reply == ReplyTTLExpired }

// replyError builds the error for a failure reply.
func replyError(cmd Command, rep Reply) *ReplyError {
	return &ReplyError{Command: cmd, Reply: rep}
}

// peerReplyError builds the error for a failed second BIND reply, whose
// address is the peer's. (The address of any other failure reply means
// nothing: Dante puts one of its own ports there.)
func peerReplyError(rep Reply, peer Addr) *ReplyError {
	e := replyError(CmdBind, rep)
	if peer.Name != "" || peer.Port != 0 || (peer.IP.IsValid() && !peer.IP.IsUnspecified()) {
		e.Addr = netAddr(peer)
	}
	return e
}
