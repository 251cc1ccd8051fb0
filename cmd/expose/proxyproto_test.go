package main

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The cases come from HAProxy's proxy-protocol.txt: the example and the
// longest headers of section 2.1, and the layout of section 2.2.
func TestProxyProtocolHeader(t *testing.T) {
	tcp := func(s string) net.Addr {
		a, err := net.ResolveTCPAddr("tcp", s)
		require.NoError(t, err)
		return a
	}
	v2 := func(famProto byte, addrs ...byte) []byte {
		b := append([]byte("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"), 0x21, famProto, 0, byte(len(addrs)))
		return append(b, addrs...)
	}
	tests := []struct {
		name     string
		src, dst net.Addr
		v1       string
		v2       []byte
	}{
		{"Example", tcp("192.168.0.1:56324"), tcp("192.168.0.11:443"),
			"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
			v2(0x11, 192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb)},
		{"LongestIPv4", tcp("255.255.255.255:65535"), tcp("255.255.255.255:65535"),
			"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
			v2(0x11, 255, 255, 255, 255, 255, 255, 255, 255, 0xff, 0xff, 0xff, 0xff)},
		{"LongestIPv6", tcp("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), tcp("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
			"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
			v2(0x21, append(ones(32), 0xff, 0xff, 0xff, 0xff)...)},
		{"Loopback6", tcp("[::1]:40000"), tcp("[::1]:8080"),
			"PROXY TCP6 ::1 ::1 40000 8080\r\n",
			v2(0x21, append(append(append(make([]byte, 15), 1), append(make([]byte, 15), 1)...), 0x9c, 0x40, 0x1f, 0x90)...)},
		{"MixedFamilies", tcp("192.0.2.1:1234"), tcp("[2001:db8::1]:80"),
			"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1234 80\r\n",
			v2(0x21, append(append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1},
				0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), 0x04, 0xd2, 0x00, 0x50)...)},
		{"MappedIPv4", tcp("[::ffff:10.1.2.3]:5"), tcp("10.0.0.1:6"),
			"PROXY TCP4 10.1.2.3 10.0.0.1 5 6\r\n",
			v2(0x11, 10, 1, 2, 3, 10, 0, 0, 1, 0, 5, 0, 6)},
		{"Unknown", fakeAddr("proxy.example:80"), tcp("127.0.0.1:80"),
			"PROXY UNKNOWN\r\n",
			v2(0x00)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v1 := proxyProtocolV1.header(tt.src, tt.dst)
			assert.Equal(t, tt.v1, string(v1))
			assert.LessOrEqual(t, len(v1), 107, "section 2.1: at most 107 bytes")
			assert.Equal(t, tt.v2, proxyProtocolV2.header(tt.src, tt.dst))
			assert.Nil(t, proxyProtocolNone.header(tt.src, tt.dst))
		})
	}
}

func ones(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 0xff
	}
	return b
}

// fakeAddr is an address given by name, as a proxy may report one.
type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
