package socks5test

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/xtaci/smux"

	"github.com/socksbind/socksbind"
)

func TestDialReply(t *testing.T) {
	dialErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	errno := func(e syscall.Errno) error {
		return dialErr(os.NewSyscallError("connect", e))
	}
	for _, tc := range []struct {
		name string
		err  error
		want socksbind.Reply
	}{
		{"refused", errno(syscall.ECONNREFUSED), socksbind.ReplyConnectionRefused},
		{"network unreachable", errno(syscall.ENETUNREACH), socksbind.ReplyNetworkUnreachable},
		{"host unreachable", errno(syscall.EHOSTUNREACH), socksbind.ReplyHostUnreachable},
		{"no such host", dialErr(&net.DNSError{Err: "no such host", Name: "example.invalid", IsNotFound: true}), socksbind.ReplyHostUnreachable},
		{"dns timeout", dialErr(&net.DNSError{Err: "i/o timeout", Name: "example.com", IsTimeout: true}), socksbind.ReplyTTLExpired},
		{"connect timeout", errno(syscall.ETIMEDOUT), socksbind.ReplyTTLExpired},
		{"dial deadline", dialErr(os.ErrDeadlineExceeded), socksbind.ReplyTTLExpired},
		{"context deadline", dialErr(context.DeadlineExceeded), socksbind.ReplyTTLExpired},
		{"canceled", dialErr(context.Canceled), socksbind.ReplyGeneralFailure},
		{"dns failure", dialErr(&net.DNSError{Err: "server misbehaving", Name: "example.com"}), socksbind.ReplyGeneralFailure},
		{"other", errors.New("something else"), socksbind.ReplyGeneralFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, dialReply(tc.err))
		})
	}
}

func TestStrings(t *testing.T) {
	assert.Equal(t, "bind reply", StageBindReply.String())
	assert.Equal(t, "stage 7", Stage(7).String())
	assert.Equal(t, "dante", BindDante.String())
	assert.Equal(t, "reuse", BindReuse.String())
}

// The tests open the client's side of MBIND sessions with smux's default
// configuration, which is GOST v3's, as the server's own is.
func TestMultiplexConfigIsSmuxDefault(t *testing.T) {
	assert.Equal(t, smux.DefaultConfig(), multiplexConfig())
}
