// Package socks5test provides an in-process SOCKS version 5 server for
// tests, shaped like net/http/httptest's Server.
//
// The server speaks RFC 1928 (SOCKS5) and RFC 1929 (username/password
// authentication) on a kernel-chosen port of 127.0.0.1. It is a real server,
// not canned bytes: CONNECT dials the target and relays data both ways, BIND
// listens on a loopback port, waits for one peer and relays the control
// connection to it. Its BIND follows what Dante 1.4.2 does, down to the
// socket options, so that code tested against it behaves the same against
// Dante:
//
//   - The family of DST.ADDR picks the family of the bound socket: an IPv4
//     address binds 127.0.0.1, an IPv6 address binds ::1. A domain name gets
//     reply 8 (address type not supported).
//   - An unspecified DST.ADDR (0.0.0.0 or ::) accepts any peer; its DST.PORT,
//     when not 0, is the port to bind if it is free. When it is not free, the
//     server silently binds another port.
//   - Any other DST.ADDR is a peer filter: only that IP may connect, and
//     DST.PORT is ignored. Another peer gets reply 2 = 2 (connection not
//     allowed by ruleset) carrying its own address, then both connections
//     close.
//   - One connection per BIND: the listening socket closes when the peer is
//     accepted. It is made without SO_REUSEADDR, so a port still held by the
//     accepted connection, or in TIME_WAIT, counts as in use.
//   - Any byte the client sends, or its closing the control connection,
//     before reply 2 kills the BIND.
//
// [BindReuse] switches to the other behaviour seen in the wild, where a
// server keeps its listening socket for the next BIND of the same port.
//
// [Server.Multiplex] adds GOST v3's multiplexed BIND (MBIND,
// [socksbind.CmdMultiplexBind]): one request, one listening socket, and an
// smux session on the control connection that carries every peer as a
// stream of its own.
//
// [Server.UDP] adds UDP ASSOCIATE, as Dante relays it: a relay socket on
// 127.0.0.1 that takes datagrams only from the client (the address the
// request declares, or the first datagram from the control connection's IP),
// drops those with a malformed header, RSV or FRAG not 0, and ends with the
// control connection. [Server.UDPTun] adds GOST's UDP-TUN ([CmdUDPTun]):
// datagrams framed on the control connection. [Hooks.Datagram] sees every
// datagram the relay sends the client, and can drop, corrupt, duplicate,
// reorder, fragment or spoof it, or end the association.
//
// Fields of [Server] set between [NewUnstartedServer] and [Server.Start]
// add authentication ([Server.Users]), refusals ([Server.Rules],
// [Server.PeerRules]) and fault injection ([Server.Hooks]). Every request is
// recorded for [Server.Requests].
//
// A short example, with golang.org/x/net/proxy as the client:
//
//	func TestThroughProxy(t *testing.T) {
//		srv := socks5test.NewServer()
//		defer srv.Close()
//
//		d, err := proxy.SOCKS5("tcp", srv.Addr(), nil, proxy.Direct)
//		if err != nil {
//			t.Fatal(err)
//		}
//		conn, err := d.Dial("tcp", target) // target is a test's own listener
//		if err != nil {
//			t.Fatal(err)
//		}
//		defer conn.Close()
//		// ... use conn; srv.Requests() tells what the client asked for.
//	}
//
// The server only listens on loopback and is meant for tests: it applies no
// limits and keeps every request it received in memory until it is closed.
package socks5test
