package socksbind_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/hostile"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/wire"
)

// replyOutcome is what a client must make of the bytes at the start of a
// stream read as a SOCKS5 reply.
type replyOutcome int

const (
	replyOK        replyOutcome = iota // a complete, valid reply of n bytes
	replyShort                         // the stream ends inside it
	replyMalformed                     // not a reply
)

// judgeReply reads a reply from the start of b by RFC 1928 and the rule for
// names (wire.ValidName), in the order the client reads it: the head, then
// the address. It is the fuzz target's oracle, written apart from the
// parser.
func judgeReply(b []byte) (n int, rep byte, out replyOutcome) {
	if len(b) < 4 {
		return 0, 0, replyShort
	}
	if b[0] != 5 {
		return 0, 0, replyMalformed
	}
	switch b[3] {
	case 1:
		n = 4 + 4 + 2
	case 4:
		n = 4 + 16 + 2
	case 3:
		if len(b) < 5 {
			return 0, 0, replyShort
		}
		n = 5 + int(b[4]) + 2
	default:
		return 0, 0, replyMalformed
	}
	if len(b) < n {
		return 0, 0, replyShort
	}
	if b[3] == 3 && (b[4] == 0 || !wire.ValidName(string(b[5:5+int(b[4])]))) {
		return 0, 0, replyMalformed
	}
	return n, b[1], replyOK
}

// FuzzListener plays a proxy that answers BIND with reply1, then sends
// reply2 and trailing data, and checks what a Once listener makes of it
// against judgeReply: Listen and Accept fail with the error the bytes call
// for, or Accept returns a connection that delivers the bytes that follow
// the second reply, in order. Nothing may panic, hang or leak.
func FuzzListener(f *testing.F) {
	ok1 := ipv4Reply(0, boundAddr)
	ok2 := ipv4Reply(0, peerAddr)
	f.Add(ok1, ok2, []byte("hello"))
	f.Add(ok1, ok2, []byte(nil))
	f.Add(append(ok1, ok2...), []byte("data"), []byte("more"))
	f.Add(ok1[:5], []byte(nil), []byte(nil))
	f.Add(ok1, ok2[:7], []byte(nil))
	f.Add(ok1, ipv4Reply(2, peerAddr), []byte("x"))
	f.Add(socksReply(0, 3, append([]byte{4}, "host\x00\x50"...)...), socksReply(0, 4, addrBody(4)...), make([]byte, 4096))
	f.Add(ok1, socksReply(0, 3, 3, 'a', 0x1b, 'b', 0, 1), []byte("x"))
	f.Add(socksReply(5, 9), []byte(nil), []byte(nil))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"), []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, reply1, reply2, trailing []byte) {
		leakcheck.Check(t)
		stream := append(append(append([]byte(nil), reply1...), reply2...), trailing...)
		n1, rep1, out1 := judgeReply(stream)
		n2, rep2, out2 := judgeReply(stream[n1:])
		script := []hostile.Step{
			hostile.ReadGreeting(), hostile.Write([]byte{5, 0}),
			hostile.ReadRequest(), hostile.Write(reply1),
			hostile.Write(append(append([]byte(nil), reply2...), trailing...)),
		}
		if out1 == replyShort || out1 == replyOK && rep1 == 0 && out2 == replyShort {
			// Only an end of file tells a reply cut short; a cut
			// leaves a port in TIME_WAIT, so only then.
			script = append(script, hostile.Cut())
		}
		srv := hostile.NewServer(script...)
		t.Cleanup(srv.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		lc := socksbind.ListenConfig{Dialer: &socksbind.Dialer{ProxyAddress: srv.Addr()}, Once: true}

		fail := func(what string, err error, out replyOutcome, rep byte) {
			t.Helper()
			var op *net.OpError
			switch {
			case err == nil:
				t.Fatalf("%s succeeded on %x", what, stream)
			case !errors.As(err, &op):
				t.Fatalf("%s: %v (%T) is not a *net.OpError", what, err, err)
			case out == replyShort && !errors.Is(err, io.ErrUnexpectedEOF):
				t.Fatalf("%s: %v on a reply cut short: %x", what, err, stream)
			case out == replyMalformed && !errors.Is(err, socksbind.ErrProtocolViolation):
				t.Fatalf("%s: %v on a malformed reply: %x", what, err, stream)
			case out == replyOK:
				var re *socksbind.ReplyError
				if !errors.As(err, &re) || re.Reply != socksbind.Reply(rep) {
					t.Fatalf("%s: %v, want reply %d: %x", what, err, rep, stream)
				}
			}
		}

		ln, err := lc.Listen(ctx, "tcp", ":0")
		if out1 != replyOK || rep1 != 0 {
			fail("Listen", err, out1, rep1)
			return
		}
		if err != nil {
			t.Fatalf("Listen: %v on %x", err, stream)
		}
		defer ln.Close()
		printableOrFail(t, ln.Addr().String())

		c, err := ln.AcceptContext(ctx)
		if out2 != replyOK || rep2 != 0 {
			fail("Accept", err, out2, rep2)
			return
		}
		if err != nil {
			t.Fatalf("Accept: %v on %x", err, stream)
		}
		defer c.Close()
		printableOrFail(t, c.RemoteAddr().String())
		// The proxy sends no end of file (see hostile), so the bytes
		// are read by count.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		want := stream[n1+n2:]
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("reading the connection: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("the connection delivered %x, want %x", got, want)
		}
	})
}

func printableOrFail(t *testing.T, s string) {
	t.Helper()
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			t.Fatalf("address %q holds byte 0x%02x", s, s[i])
		}
	}
}
