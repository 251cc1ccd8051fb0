package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUDPHeaderRoundTrip(t *testing.T) {
	for _, a := range []Addr{
		{IP: netip.MustParseAddr("127.0.0.1"), Port: 53},
		{IP: netip.MustParseAddr("2001:db8::1"), Port: 65535},
		{Name: "dns.example", Port: 853},
	} {
		b, err := AppendUDPHeader(nil, a)
		require.NoError(t, err)
		b = append(b, "data"...)
		got, n, err := ParseUDPHeader(b)
		require.NoError(t, err)
		assert.Equal(t, a, got)
		assert.Equal(t, "data", string(b[n:]))

		f, err := AppendTunHeader(nil, 4, a)
		require.NoError(t, err)
		f = append(f, "data"...)
		got, data, err := ReadTunFrame(bufio.NewReader(bytes.NewReader(f)), make([]byte, MaxTunData))
		require.NoError(t, err)
		assert.Equal(t, a, got)
		assert.Equal(t, "data", string(data))
	}
}

func TestTunHeaderLength(t *testing.T) {
	for _, n := range []int{0, -1, MaxTunData + 1} {
		_, err := AppendTunHeader(nil, n, Addr{})
		assert.Error(t, err, "%d bytes", n)
	}
	b, err := AppendTunHeader(nil, MaxTunData, Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 1})
	require.NoError(t, err)
	assert.Equal(t, []byte{0xff, 0xff, 0xff, 1, 192, 0, 2, 1, 0, 1}, b)
}

func TestReadTunFrameEnd(t *testing.T) {
	_, _, err := ReadTunFrame(bufio.NewReader(bytes.NewReader(nil)), make([]byte, MaxTunData))
	assert.Equal(t, io.EOF, err, "the end between frames is io.EOF")
	f, _ := AppendTunHeader(nil, 3, Addr{IP: netip.MustParseAddr("192.0.2.1")})
	f = append(f, "abc"...)
	for k := 1; k < len(f); k++ {
		_, _, err := ReadTunFrame(bufio.NewReader(bytes.NewReader(f[:k])), make([]byte, MaxTunData))
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d", k)
	}
}

// FuzzUDPHeader holds ParseUDPHeader to its contract: any input parses
// or fails with ErrMalformed, never panics, and what parses encodes back to
// the same bytes.
func FuzzUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 'x'})
	f.Add(append(append([]byte{0, 0, 0, 4}, v6.AsSlice()...), 0, 1))
	f.Add([]byte{0, 0, 0, 3, 3, 'a', '.', 'b', 0, 2, 'x'})
	f.Add([]byte{0, 0, 1, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		a, n, err := ParseUDPHeader(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n > len(in) {
			t.Fatalf("header of %d bytes in %d", n, len(in))
		}
		if !printable(a.String()) {
			t.Fatalf("address %q holds bytes that are not printable ASCII", a.String())
		}
		b, err := AppendUDPHeader(nil, a)
		if err != nil {
			t.Fatal(err)
		}
		// An IPv4-mapped IPv6 address reads as IPv4, and is encoded so.
		if in[3] != byte(AddrIPv6) || !netip.AddrFrom16([16]byte(in[4:20])).Is4In6() {
			if !bytes.Equal(b, in[:n]) {
				t.Fatalf("round trip: read %x, encoded %x", in[:n], b)
			}
		}
	})
}

// FuzzTunFrame holds ReadTunFrame to its contract over a stream of frames:
// each frame reads whole or fails with ErrMalformed or an EOF, and never
// panics.
func FuzzTunFrame(f *testing.F) {
	f.Add([]byte{0, 1, 0xff, 1, 127, 0, 0, 1, 0, 53, 'x', 0, 2, 0xff, 3, 1, 'a', 0, 1, 'y', 'z'})
	f.Add([]byte{0, 0, 0xff, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 4})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		buf := make([]byte, MaxTunData)
		for {
			a, data, err := ReadTunFrame(r, buf)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(data) == 0 || !printable(a.String()) {
				t.Fatalf("frame of %d bytes from %q", len(data), a.String())
			}
		}
	})
}
