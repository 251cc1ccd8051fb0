package socksbind

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/wire"
)

// The tests of the client's codec. The server's side is tested in
// internal/srvwire, written apart so that one mistake cannot hide in both.

var (
	v4   = netip.MustParseAddr("192.0.2.1")
	v6   = netip.MustParseAddr("2001:db8::1")
	name = strings.Repeat("a", 255)
)

// printableASCII reports whether s holds printable ASCII only.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func TestEncode(t *testing.T) {
	tests := []struct {
		name string
		got  func() ([]byte, error)
		want []byte
	}{
		{"userpass", func() ([]byte, error) { return appendUserPass(nil, "u", "pw"), nil },
			[]byte{1, 1, 'u', 2, 'p', 'w'}},
		{"userpass empty password", func() ([]byte, error) { return appendUserPass(nil, "u", ""), nil },
			[]byte{1, 1, 'u', 0}},
		{"connect ipv4", func() ([]byte, error) { return appendRequest(nil, CmdConnect, Addr{IP: v4, Port: 80}) },
			[]byte{5, 1, 0, 1, 192, 0, 2, 1, 0, 80}},
		{"connect ipv4-mapped ipv6 stays ipv6", func() ([]byte, error) {
			return appendRequest(nil, CmdConnect, Addr{IP: netip.AddrFrom16(v4.As16()), Port: 80})
		}, append(append([]byte{5, 1, 0, 4}, netip.AddrFrom16(v4.As16()).AsSlice()...), 0, 80)},
		{"bind ipv6 port 0", func() ([]byte, error) { return appendRequest(nil, CmdBind, Addr{IP: v6}) },
			append(append([]byte{5, 2, 0, 4}, v6.AsSlice()...), 0, 0)},
		{"bind any", func() ([]byte, error) { return appendRequest(nil, CmdBind, Addr{}) },
			[]byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"connect domain 255", func() ([]byte, error) {
			return appendRequest(nil, CmdConnect, Addr{Name: name, Port: 65535})
		}, append(append([]byte{5, 1, 0, 3, 255}, name...), 0xff, 0xff)},
		{"udp associate", func() ([]byte, error) { return appendRequest(nil, CmdUDPAssociate, Addr{IP: v4, Port: 0x1234}) },
			[]byte{5, 3, 0, 1, 192, 0, 2, 1, 0x12, 0x34}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.got()
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	t.Run("domain too long", func(t *testing.T) {
		_, err := appendRequest(nil, CmdConnect, Addr{Name: name + "a", Port: 1})
		assert.ErrorIs(t, err, errNameTooLong)
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
			rep, a, err := readReply(r, nil)
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
		{"version 4", []byte{4, 0, 0, 1, 0, 0, 0, 0, 0, 0}, errMalformed},
		{"http answer", []byte("HTTP/1.1 400 Bad Request\r\n"), errMalformed},
		{"address type 2", []byte{5, 0, 0, 2, 0, 0, 0, 0, 0, 0}, errMalformed},
		{"address type 0xff", []byte{5, 0, 0, 0xff, 0, 0, 0, 0, 0, 0}, errMalformed},
		{"empty domain", []byte{5, 0, 0, 3, 0, 0, 0}, errMalformed},
		{"domain with NUL", []byte{5, 0, 0, 3, 5, 'a', ':', 'b', 0, 'c', 0x9c, 0x40}, errMalformed},
		{"domain with CR LF", []byte{5, 0, 0, 3, 4, 'a', '\r', '\n', 'b', 0, 1}, errMalformed},
		{"domain with ESC", []byte{5, 0, 0, 3, 5, 0x1b, '[', '2', 'J', 'a', 0, 1}, errMalformed},
		{"domain with colon", []byte{5, 0, 0, 3, 3, 'a', ':', 'b', 0, 1}, errMalformed},
		{"domain with space", []byte{5, 0, 0, 3, 3, 'a', ' ', 'b', 0, 1}, errMalformed},
		{"domain in UTF-8", []byte{5, 0, 0, 3, 3, 0xc3, 0xa9, 'b', 0, 1}, errMalformed},
	}
	for _, tt := range corrupted {
		t.Run("corrupted/"+tt.name, func(t *testing.T) {
			_, _, err := readReply(bytes.NewReader(tt.in), make([]byte, 0, 22))
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

// TestReplyNameBytes holds every byte value to the host-name rule: a
// reply's domain name is refused unless each byte may be in a host name.
func TestReplyNameBytes(t *testing.T) {
	for b := 0; b < 256; b++ {
		in := []byte{5, 0, 0, 3, 3, 'a', byte(b), 'z', 0, 80}
		_, a, err := readReply(bytes.NewReader(in), nil)
		allowed := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '.' || b == '_'
		if allowed {
			assert.NoError(t, err, "byte 0x%02x", b)
			assert.Equal(t, "a"+string(rune(b))+"z:80", a.String())
			continue
		}
		assert.ErrorIs(t, err, errMalformed, "byte 0x%02x", b)
		if err != nil {
			assert.True(t, printableASCII(err.Error()), "the error holds no raw byte: %q", err.Error())
		}
	}
}

func TestAddrStringNeverControl(t *testing.T) {
	assert.Equal(t, `"a\nb":80`, Addr{Name: "a\nb", Port: 80}.String())
	assert.Equal(t, `"a:b\x00c":40000`, Addr{Name: "a:b\x00c", Port: 40000}.String())
	assert.Equal(t, `"\x1b[2J":1`, Addr{Name: "\x1b[2J", Port: 1}.String())
	assert.Equal(t, "example.com:443", Addr{Name: "example.com", Port: 443}.String())
	assert.Equal(t, "[2001:db8::1]:80", Addr{IP: v6, Port: 80}.String())
}

func TestReadSmallMessages(t *testing.T) {
	m, err := readMethodSelection(bytes.NewReader([]byte{5, 2}), nil)
	require.NoError(t, err)
	assert.Equal(t, AuthUsernamePassword, m)
	_, err = readMethodSelection(bytes.NewReader([]byte{4, 0}), nil)
	assert.ErrorIs(t, err, errMalformed)
	_, err = readMethodSelection(bytes.NewReader([]byte{5}), nil)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

	st, err := readUserPassStatus(bytes.NewReader([]byte{1, 0}))
	require.NoError(t, err)
	assert.Zero(t, st)
	_, err = readUserPassStatus(bytes.NewReader([]byte{5, 0}))
	assert.ErrorIs(t, err, errMalformed)
}

func TestStrings(t *testing.T) {
	assert.Equal(t, "connection not allowed by ruleset", ReplyNotAllowed.String())
	assert.Equal(t, "general SOCKS server failure", ReplyGeneralFailure.String())
	assert.Equal(t, "TTL expired", ReplyTTLExpired.String())
	assert.Equal(t, "unknown reply 9", Reply(9).String())
	assert.Equal(t, "bind", CmdBind.String())
	assert.Equal(t, "udp associate", CmdUDPAssociate.String())
	assert.Equal(t, "username/password", AuthUsernamePassword.String())
	assert.Equal(t, "GSSAPI", AuthMethod(1).String())
	assert.Equal(t, "method 7", AuthMethod(7).String())
	assert.Equal(t, "[2001:db8::1]:80", Addr{IP: v6, Port: 80}.String())
	assert.Equal(t, "example.com:0", Addr{Name: "example.com"}.String())
}

// FuzzReadReply holds the parser to its contract on any input: it either
// fails with errMalformed or a short read, or returns an address that
// prints as printable ASCII and encodes back to exactly the bytes it
// consumed.
func FuzzReadReply(f *testing.F) {
	f.Add([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add(append(append([]byte{5, 0, 0, 4}, v6.AsSlice()...), 0, 1))
	f.Add([]byte{5, 0, 0, 3, 3, 'a', '.', 'b', 0, 2, 'x'})
	f.Add([]byte{5, 0, 0, 9})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		rep, a, err := readReply(r, nil)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !printableASCII(a.String()) {
			t.Fatalf("address %q holds bytes that are not printable ASCII", a.String())
		}
		used := len(in) - r.Len()
		b, err := appendAddr(nil, a)
		if err != nil || !bytes.Equal(b, in[3:used]) || rep != Reply(in[1]) {
			t.Fatalf("round trip: read %x, encoded %x (%v)", in[:used], b, err)
		}
	})
}

// TestReplyStages checks that the stages keep the words errors have
// always printed.
func TestReplyStages(t *testing.T) {
	for cmd, want := range map[Command]string{
		CmdConnect:       "CONNECT reply",
		CmdBind:          "BIND reply 1",
		CmdUDPAssociate:  "UDP ASSOCIATE reply",
		CmdMultiplexBind: "MBIND reply",
		Command(9):       "UNKNOWN COMMAND 9 reply",
	} {
		assert.Equal(t, wire.Stage(want), replyStage(cmd))
	}
}

func TestUDPHeaderRoundTrip(t *testing.T) {
	for _, a := range []Addr{
		{IP: netip.MustParseAddr("127.0.0.1"), Port: 53},
		{IP: netip.MustParseAddr("2001:db8::1"), Port: 65535},
		{Name: "dns.example", Port: 853},
	} {
		b, err := appendUDPHeader(nil, a)
		require.NoError(t, err)
		b = append(b, "data"...)
		got, n, err := parseUDPHeader(b)
		require.NoError(t, err)
		assert.Equal(t, a, got)
		assert.Equal(t, "data", string(b[n:]))

		f, err := appendTunHeader(nil, 4, a)
		require.NoError(t, err)
		f = append(f, "data"...)
		got, data, err := readTunFrame(bufio.NewReader(bytes.NewReader(f)), make([]byte, maxTunData))
		require.NoError(t, err)
		assert.Equal(t, a, got)
		assert.Equal(t, "data", string(data))
	}
}

func TestTunHeaderLength(t *testing.T) {
	for _, n := range []int{0, -1, maxTunData + 1} {
		_, err := appendTunHeader(nil, n, Addr{})
		assert.Error(t, err, "%d bytes", n)
	}
	b, err := appendTunHeader(nil, maxTunData, Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 1})
	require.NoError(t, err)
	assert.Equal(t, []byte{0xff, 0xff, 0xff, 1, 192, 0, 2, 1, 0, 1}, b)
}

func TestReadTunFrameEnd(t *testing.T) {
	_, _, err := readTunFrame(bufio.NewReader(bytes.NewReader(nil)), make([]byte, maxTunData))
	assert.Equal(t, io.EOF, err, "the end between frames is io.EOF")
	f, _ := appendTunHeader(nil, 3, Addr{IP: netip.MustParseAddr("192.0.2.1")})
	f = append(f, "abc"...)
	for k := 1; k < len(f); k++ {
		_, _, err := readTunFrame(bufio.NewReader(bytes.NewReader(f[:k])), make([]byte, maxTunData))
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d", k)
	}
}

// FuzzUDPHeader holds parseUDPHeader to its contract: any input parses
// or fails with errMalformed, never panics, and what parses encodes back to
// the same bytes.
func FuzzUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 'x'})
	f.Add(append(append([]byte{0, 0, 0, 4}, v6.AsSlice()...), 0, 1))
	f.Add([]byte{0, 0, 0, 3, 3, 'a', '.', 'b', 0, 2, 'x'})
	f.Add([]byte{0, 0, 1, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		a, n, err := parseUDPHeader(in)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n > len(in) {
			t.Fatalf("header of %d bytes in %d", n, len(in))
		}
		if !printableASCII(a.String()) {
			t.Fatalf("address %q holds bytes that are not printable ASCII", a.String())
		}
		b, err := appendUDPHeader(nil, a)
		if err != nil {
			t.Fatal(err)
		}
		// An IPv4-mapped IPv6 address reads as IPv4, and is encoded so.
		if in[3] != atypIPv6 || !netip.AddrFrom16([16]byte(in[4:20])).Is4In6() {
			if !bytes.Equal(b, in[:n]) {
				t.Fatalf("round trip: read %x, encoded %x", in[:n], b)
			}
		}
	})
}

// FuzzTunFrame holds readTunFrame to its contract over a stream of frames:
// each frame reads whole or fails with errMalformed or an EOF, and never
// panics.
func FuzzTunFrame(f *testing.F) {
	f.Add([]byte{0, 1, 0xff, 1, 127, 0, 0, 1, 0, 53, 'x', 0, 2, 0xff, 3, 1, 'a', 0, 1, 'y', 'z'})
	f.Add([]byte{0, 0, 0xff, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 4})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		buf := make([]byte, maxTunData)
		for {
			a, data, err := readTunFrame(r, buf)
			if err != nil {
				if !errors.Is(err, errMalformed) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(data) == 0 || !printableASCII(a.String()) {
				t.Fatalf("frame of %d bytes from %q", len(data), a.String())
			}
		}
	})
}
