package srvwire

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/wire"
)

// The bytes here are written out by hand, from RFC 1928 and RFC 1929, not
// made by the client's codec.

func TestAppendMessage(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::1")
	for _, tt := range []struct {
		name string
		a    socksbind.Addr
		want []byte
	}{
		{"ipv4", socksbind.Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 1}, []byte{5, 2, 0, 1, 192, 0, 2, 1, 0, 1}},
		{"ipv4-mapped", socksbind.Addr{IP: netip.MustParseAddr("::ffff:192.0.2.1"), Port: 1}, []byte{5, 2, 0, 1, 192, 0, 2, 1, 0, 1}},
		{"ipv6", socksbind.Addr{IP: v6, Port: 0x1234}, append(append([]byte{5, 2, 0, 4}, v6.AsSlice()...), 0x12, 0x34)},
		{"none", socksbind.Addr{}, []byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"name", socksbind.Addr{Name: "a.b", Port: 80}, []byte{5, 2, 0, 3, 3, 'a', '.', 'b', 0, 80}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendReply(nil, socksbind.ReplyNotAllowed, tt.a)
			assert.Equal(t, tt.want, b)
			code, a, err := ReadMessage(bytes.NewReader(b))
			require.NoError(t, err)
			assert.Equal(t, byte(socksbind.ReplyNotAllowed), code)
			want := tt.a.IP.Unmap()
			if !want.IsValid() && tt.a.Name == "" {
				want = netip.IPv4Unspecified()
			}
			assert.Equal(t, want, a.IP)
			assert.Equal(t, tt.a.Name, a.Name)
		})
	}
}

func TestReadRequest(t *testing.T) {
	// The bytes after the request belong to the relay.
	r := bytes.NewReader([]byte{5, 1, 0, 3, 3, 'a', '\n', 'b', 0, 80, 'x'})
	cmd, a, err := ReadRequest(r)
	require.NoError(t, err)
	assert.Equal(t, socksbind.CmdConnect, cmd)
	assert.Equal(t, socksbind.Addr{Name: "a\nb", Port: 80}, a, "a request's name is the server's to judge")
	assert.Equal(t, 1, r.Len())

	// An IPv4-mapped IPv6 address is kept as received: a test may check
	// how the client sent the address.
	mapped := netip.MustParseAddr("::ffff:1.2.3.4")
	_, a, err = ReadRequest(bytes.NewReader(append(append([]byte{5, 1, 0, 4}, mapped.AsSlice()...), 0, 80)))
	require.NoError(t, err)
	assert.True(t, a.IP.Is4In6(), "%v", a.IP)

	for _, in := range [][]byte{nil, {5}, {5, 1, 0}, {5, 1, 0, 1, 127, 0}, {5, 1, 0, 3}, {5, 1, 0, 3, 4, 'a'}} {
		_, _, err := ReadRequest(bytes.NewReader(in))
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "%x", in)
	}
	for _, in := range [][]byte{{4, 1, 0, 1, 0, 0, 0, 0, 0, 0}, {5, 1, 0, 2, 0}, {5, 1, 0, 3, 0, 0, 0}} {
		_, _, err := ReadRequest(bytes.NewReader(in))
		assert.ErrorIs(t, err, wire.ErrMalformed, "%x", in)
	}
}

func TestReadGreetingAndCredentials(t *testing.T) {
	ms, err := ReadGreeting(bytes.NewReader([]byte{5, 2, 0, 2}))
	require.NoError(t, err)
	assert.Equal(t, []socksbind.AuthMethod{socksbind.AuthNone, socksbind.AuthUsernamePassword}, ms)
	_, err = ReadGreeting(bytes.NewReader([]byte{4, 1, 0}))
	assert.ErrorIs(t, err, wire.ErrMalformed)
	_, err = ReadGreeting(bytes.NewReader([]byte{5, 2, 0}))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

	u, p, err := ReadUserPass(bytes.NewReader([]byte{1, 4, 'u', 's', 'e', 'r', 0}))
	require.NoError(t, err)
	assert.Equal(t, [2]string{"user", ""}, [2]string{u, p})
	for _, in := range [][]byte{nil, {1, 4, 'u'}} {
		_, _, err = ReadUserPass(bytes.NewReader(in))
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "%x", in)
	}
	_, _, err = ReadUserPass(bytes.NewReader([]byte{5, 0, 0}))
	assert.ErrorIs(t, err, wire.ErrMalformed)
}

func TestDatagrams(t *testing.T) {
	a := socksbind.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 53}
	b := append(AppendUDPHeader(nil, a), "data"...)
	assert.Equal(t, []byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 'd', 'a', 't', 'a'}, b)
	got, data, err := ParseUDPHeader(b)
	require.NoError(t, err)
	assert.Equal(t, a, got)
	assert.Equal(t, "data", string(data))
	for _, bad := range [][]byte{{0, 0, 1, 1, 127, 0, 0, 1, 0, 53}, {0, 1, 0, 1, 127, 0, 0, 1, 0, 53}, {0, 0, 0, 1, 127}, {0, 0, 0, 3, 1, ' ', 0, 53}} {
		_, _, err := ParseUDPHeader(bad)
		assert.ErrorIs(t, err, wire.ErrMalformed, "%x", bad)
	}

	f, err := AppendTunHeader(nil, 2, socksbind.Addr{Name: "a.b", Port: 7})
	require.NoError(t, err)
	assert.Equal(t, []byte{0, 2, 0xff, 3, 3, 'a', '.', 'b', 0, 7}, f)
	f = append(f, "hi"...)
	br := bufio.NewReader(bytes.NewReader(append(f, f...)))
	buf := make([]byte, MaxTunData)
	for range 2 {
		got, data, err := ReadTunFrame(br, buf)
		require.NoError(t, err)
		assert.Equal(t, socksbind.Addr{Name: "a.b", Port: 7}, got)
		assert.Equal(t, "hi", string(data))
	}
	_, _, err = ReadTunFrame(br, buf)
	assert.Equal(t, io.EOF, err)
	for k := 1; k < len(f); k++ {
		_, _, err := ReadTunFrame(bufio.NewReader(bytes.NewReader(f[:k])), buf)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d", k)
	}
	for _, n := range []int{0, MaxTunData + 1} {
		_, err := AppendTunHeader(nil, n, a)
		assert.Error(t, err)
	}
}
