package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	v4   = netip.MustParseAddr("192.0.2.1")
	v6   = netip.MustParseAddr("2001:db8::1")
	name = strings.Repeat("a", 255)
)

func TestEncode(t *testing.T) {
	tests := []struct {
		name string
		got  func() ([]byte, error)
		want []byte
	}{
		{"greeting none", func() ([]byte, error) { return AppendGreeting(nil, []AuthMethod{AuthNone}), nil },
			[]byte{5, 1, 0}},
		{"greeting none userpass", func() ([]byte, error) {
			return AppendGreeting(nil, []AuthMethod{AuthNone, AuthUsernamePassword}), nil
		}, []byte{5, 2, 0, 2}},
		{"userpass", func() ([]byte, error) { return AppendUserPass(nil, "u", "pw"), nil },
			[]byte{1, 1, 'u', 2, 'p', 'w'}},
		{"userpass empty password", func() ([]byte, error) { return AppendUserPass(nil, "u", ""), nil },
			[]byte{1, 1, 'u', 0}},
		{"connect ipv4", func() ([]byte, error) { return AppendRequest(nil, CmdConnect, Addr{IP: v4, Port: 80}) },
			[]byte{5, 1, 0, 1, 192, 0, 2, 1, 0, 80}},
		{"connect ipv4-mapped ipv6 stays ipv6", func() ([]byte, error) {
			return AppendRequest(nil, CmdConnect, Addr{IP: netip.AddrFrom16(v4.As16()), Port: 80})
		}, append(append([]byte{5, 1, 0, 4}, netip.AddrFrom16(v4.As16()).AsSlice()...), 0, 80)},
		{"bind ipv6 port 0", func() ([]byte, error) { return AppendRequest(nil, CmdBind, Addr{IP: v6}) },
			append(append([]byte{5, 2, 0, 4}, v6.AsSlice()...), 0, 0)},
		{"bind any", func() ([]byte, error) { return AppendRequest(nil, CmdBind, Addr{}) },
			[]byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"connect domain 255", func() ([]byte, error) {
			return AppendRequest(nil, CmdConnect, Addr{Name: name, Port: 65535})
		}, append(append([]byte{5, 1, 0, 3, 255}, name...), 0xff, 0xff)},
		{"udp associate", func() ([]byte, error) { return AppendRequest(nil, CmdUDPAssociate, Addr{IP: v4, Port: 0x1234}) },
			[]byte{5, 3, 0, 1, 192, 0, 2, 1, 0x12, 0x34}},
		{"reply", func() ([]byte, error) { return AppendReply(nil, ReplyNotAllowed, Addr{IP: v4, Port: 1}), nil },
			[]byte{5, 2, 0, 1, 192, 0, 2, 1, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.got()
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	t.Run("domain too long", func(t *testing.T) {
		_, err := AppendRequest(nil, CmdConnect, Addr{Name: name + "a", Port: 1})
		assert.ErrorIs(t, err, ErrNameTooLong)
	})
}

func TestReadReply(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		rep  Reply
		addr Addr
	}{
		{"ipv4", []byte{5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90}, ReplySucceeded, Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 8080}},
		{"ipv6", append(append([]byte{5, 5, 0, 4}, v6.AsSlice()...), 0, 1), ReplyConnectionRefused, Addr{IP: v6, Port: 1}},
		{"domain", []byte{5, 0, 0, 3, 3, 'a', '.', 'b', 0, 2}, ReplySucceeded, Addr{Name: "a.b", Port: 2}},
		{"reserved byte ignored", []byte{5, 0, 0xee, 1, 0, 0, 0, 0, 0, 0}, ReplySucceeded, Addr{IP: netip.IPv4Unspecified()}},
		{"unassigned code kept", []byte{5, 0x42, 0, 1, 0, 0, 0, 0, 0, 0}, 0x42, Addr{IP: netip.IPv4Unspecified()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The bytes after the reply belong to the relay: they must
			// still be there.
			r := bytes.NewReader(append(tt.in, "payload"...))
			rep, a, err := ReadReply(r, nil)
			require.NoError(t, err)
			assert.Equal(t, tt.rep, rep)
			assert.Equal(t, tt.addr, a)
			rest, _ := io.ReadAll(r)
			assert.Equal(t, "payload", string(rest))
		})
	}

	corrupted := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.ErrUnexpectedEOF},
		{"short head", []byte{5, 0}, io.ErrUnexpectedEOF},
		{"short ipv4", []byte{5, 0, 0, 1, 127, 0}, io.ErrUnexpectedEOF},
		{"short ipv6", []byte{5, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0}, io.ErrUnexpectedEOF},
		{"short domain", []byte{5, 0, 0, 3, 5, 'a'}, io.ErrUnexpectedEOF},
		{"no domain length", []byte{5, 0, 0, 3}, io.ErrUnexpectedEOF},
		{"version 4", []byte{4, 0, 0, 1, 0, 0, 0, 0, 0, 0}, ErrMalformed},
		{"http answer", []byte("HTTP/1.1 400 Bad Request\r\n"), ErrMalformed},
		{"address type 2", []byte{5, 0, 0, 2, 0, 0, 0, 0, 0, 0}, ErrMalformed},
		{"address type 0xff", []byte{5, 0, 0, 0xff, 0, 0, 0, 0, 0, 0}, ErrMalformed},
		{"empty domain", []byte{5, 0, 0, 3, 0, 0, 0}, ErrMalformed},
		{"domain with NUL", []byte{5, 0, 0, 3, 5, 'a', ':', 'b', 0, 'c', 0x9c, 0x40}, ErrMalformed},
		{"domain with CR LF", []byte{5, 0, 0, 3, 4, 'a', '\r', '\n', 'b', 0, 1}, ErrMalformed},
		{"domain with ESC", []byte{5, 0, 0, 3, 5, 0x1b, '[', '2', 'J', 'a', 0, 1}, ErrMalformed},
		{"domain with colon", []byte{5, 0, 0, 3, 3, 'a', ':', 'b', 0, 1}, ErrMalformed},
		{"domain with space", []byte{5, 0, 0, 3, 3, 'a', ' ', 'b', 0, 1}, ErrMalformed},
		{"domain in UTF-8", []byte{5, 0, 0, 3, 3, 0xc3, 0xa9, 'b', 0, 1}, ErrMalformed},
	}
	for _, tt := range corrupted {
		t.Run("corrupted/"+tt.name, func(t *testing.T) {
			_, _, err := ReadReply(bytes.NewReader(tt.in), make([]byte, 0, 22))
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

// TestReplyNameBytes holds every byte value to the host-name rule: a
// reply's domain name is refused unless each byte may be in a host name.
func TestReplyNameBytes(t *testing.T) {
	for b := 0; b < 256; b++ {
		in := []byte{5, 0, 0, 3, 3, 'a', byte(b), 'z', 0, 80}
		_, a, err := ReadReply(bytes.NewReader(in), nil)
		allowed := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '.' || b == '_'
		if allowed {
			assert.NoError(t, err, "byte 0x%02x", b)
			assert.Equal(t, "a"+string(rune(b))+"z:80", a.String())
			continue
		}
		assert.ErrorIs(t, err, ErrMalformed, "byte 0x%02x", b)
		if err != nil {
			assert.True(t, printable(err.Error()), "the error holds no raw byte: %q", err.Error())
		}
	}
	// A request's name is the server's to judge.
	_, a, err := ReadRequest(bytes.NewReader([]byte{5, 1, 0, 3, 3, 'a', '\n', 'b', 0, 80}))
	require.NoError(t, err)
	assert.Equal(t, "a\nb", a.Name)
}

func TestValidName(t *testing.T) {
	for _, name := range []string{"a", "example.com", "example.com.", "xn--bcher-kva.example", "_sip._tcp.example", "host-1", "127.0.0.1", strings.Repeat("a", 255)} {
		assert.True(t, ValidName(name), name)
	}
	for _, name := range []string{"", "a b", "a:b", "[::1]", "b\u00fccher.example", "a\x00", "a%25eth0", "user@host", "a/b", strings.Repeat("a", 256)} {
		assert.False(t, ValidName(name), name)
	}
}

func TestAddrStringNeverControl(t *testing.T) {
	assert.Equal(t, `"a\nb":80`, Addr{Name: "a\nb", Port: 80}.String())
	assert.Equal(t, `"a:b\x00c":40000`, Addr{Name: "a:b\x00c", Port: 40000}.String())
	assert.Equal(t, `"\x1b[2J":1`, Addr{Name: "\x1b[2J", Port: 1}.String())
	assert.Equal(t, "example.com:443", Addr{Name: "example.com", Port: 443}.String())
	assert.Equal(t, "[2001:db8::1]:80", Addr{IP: v6, Port: 80}.String())
}

func TestQuote(t *testing.T) {
	assert.Equal(t, `"Forbidden"`, Quote("Forbidden"))
	assert.Equal(t, `"a\r\nb\x1b[31m\u00e9\xff"`, Quote("a\r\nb\x1b[31m\u00e9\xff"))
	long := Quote(strings.Repeat("x", 1000))
	assert.Equal(t, `"`+strings.Repeat("x", MaxQuoted)+`"...`, long)
}

func TestEscape(t *testing.T) {
	assert.Equal(t, `x509: certificate is valid for "a", not b`, Escape(`x509: certificate is valid for "a", not b`))
	assert.Equal(t, `valid for evil\x1b[2J\r\n\u00e9\xff, not b`, Escape("valid for evil\x1b[2J\r\n\u00e9\xff, not b"))
}

func TestReadSmallMessages(t *testing.T) {
	m, err := ReadMethodSelection(bytes.NewReader([]byte{5, 2}), nil)
	require.NoError(t, err)
	assert.Equal(t, AuthUsernamePassword, m)
	_, err = ReadMethodSelection(bytes.NewReader([]byte{4, 0}), nil)
	assert.ErrorIs(t, err, ErrMalformed)
	_, err = ReadMethodSelection(bytes.NewReader([]byte{5}), nil)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

	st, err := ReadUserPassStatus(bytes.NewReader([]byte{1, 0}))
	require.NoError(t, err)
	assert.Zero(t, st)
	_, err = ReadUserPassStatus(bytes.NewReader([]byte{5, 0}))
	assert.ErrorIs(t, err, ErrMalformed)

	u, p, err := ReadUserPass(bytes.NewReader(AppendUserPass(nil, "user", "")))
	require.NoError(t, err)
	assert.Equal(t, [2]string{"user", ""}, [2]string{u, p})
	_, _, err = ReadUserPass(bytes.NewReader([]byte{1, 4, 'u'}))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

	ms, err := ReadGreeting(bytes.NewReader([]byte{5, 2, 0, 2}))
	require.NoError(t, err)
	assert.Equal(t, []AuthMethod{AuthNone, AuthUsernamePassword}, ms)
	_, err = ReadGreeting(bytes.NewReader([]byte{4, 1, 0}))
	assert.ErrorIs(t, err, ErrMalformed)
}

func TestStrings(t *testing.T) {
	assert.Equal(t, "connection not allowed by ruleset", ReplyNotAllowed.String())
	assert.Equal(t, "general SOCKS server failure", ReplyGeneralFailure.String())
	assert.Equal(t, "TTL expired", ReplyTTLExpired.String())
	assert.Equal(t, "unknown reply 9", Reply(9).String())
	assert.Equal(t, "bind", CmdBind.String())
	assert.Equal(t, "udp associate", CmdUDPAssociate.String())
	assert.Equal(t, "username/password", AuthUsernamePassword.String())
	assert.Equal(t, "IPv6", AddrIPv6.String())
	assert.Equal(t, "[2001:db8::1]:80", Addr{IP: v6, Port: 80}.String())
	assert.Equal(t, "example.com:0", Addr{Name: "example.com"}.String())
}

// FuzzReadReply holds the parser to its contract on any input: it either
// fails with ErrMalformed or a short read, or returns an address that
// prints as printable ASCII and encodes back to exactly the bytes it
// consumed.
func FuzzReadReply(f *testing.F) {
	f.Add([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add(append(append([]byte{5, 0, 0, 4}, v6.AsSlice()...), 0, 1))
	f.Add([]byte{5, 0, 0, 3, 3, 'a', '.', 'b', 0, 2, 'x'})
	f.Add([]byte{5, 0, 0, 9})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		rep, a, err := ReadReply(r, nil)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !printable(a.String()) {
			t.Fatalf("address %q holds bytes that are not printable ASCII", a.String())
		}
		used := len(in) - r.Len()
		b := AppendReply(nil, rep, a)
		if !bytes.Equal(b[4:], in[4:used]) || b[0] != in[0] || b[1] != in[1] || b[3] != in[3] {
			t.Fatalf("round trip: read %x, encoded %x", in[:used], b)
		}
	})
}

// TestStages checks that the stages keep the words errors have always
// printed, and that StageOf finds a stage through wrapping.
func TestStages(t *testing.T) {
	for cmd, want := range map[Command]string{
		CmdConnect:       "CONNECT reply",
		CmdBind:          "BIND reply 1",
		CmdUDPAssociate:  "UDP ASSOCIATE reply",
		CmdMultiplexBind: "MBIND reply",
		Command(9):       "UNKNOWN COMMAND 9 reply",
	} {
		assert.Equal(t, Stage(want), ReplyStage(cmd))
	}
	err := fmt.Errorf("socks bind: %w", AtStage(StageBindReply2, io.ErrUnexpectedEOF))
	assert.Equal(t, "socks bind: BIND reply 2: unexpected EOF", err.Error())
	assert.Equal(t, StageBindReply2, StageOf(err))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, Stage(""), StageOf(io.ErrUnexpectedEOF))
	assert.Equal(t, Stage(""), StageOf(nil))
	assert.NoError(t, AtStage(StageGreeting, nil))
}
