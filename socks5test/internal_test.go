package socks5test

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/socksbind/socksbind/internal/wire"
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
		want wire.Reply
	}{
		{"refused", errno(syscall.ECONNREFUSED), wire.ReplyConnectionRefused},
		{"network unreachable", errno(syscall.ENETUNREACH), wire.ReplyNetworkUnreachable},
		{"host unreachable", errno(syscall.EHOSTUNREACH), wire.ReplyHostUnreachable},
		{"no such host", dialErr(&net.DNSError{Err: "no such host", Name: "example.invalid", IsNotFound: true}), wire.ReplyHostUnreachable},
		{"dns timeout", dialErr(&net.DNSError{Err: "i/o timeout", Name: "example.com", IsTimeout: true}), wire.ReplyTTLExpired},
		{"connect timeout", errno(syscall.ETIMEDOUT), wire.ReplyTTLExpired},
		{"dial deadline", dialErr(os.ErrDeadlineExceeded), wire.ReplyTTLExpired},
		{"context deadline", dialErr(context.DeadlineExceeded), wire.ReplyTTLExpired},
		{"canceled", dialErr(context.Canceled), wire.ReplyGeneralFailure},
		{"dns failure", dialErr(&net.DNSError{Err: "server misbehaving", Name: "example.com"}), wire.ReplyGeneralFailure},
		{"other", errors.New("something else"), wire.ReplyGeneralFailure},
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
