// Package socksbind is a SOCKS version 5 client (RFC 1928, with the
// username/password authentication of RFC 1929) for the
// golang.org/x/net/proxy ecosystem, whose [Listener] turns the BIND command
// into a [net.Listener]: a standard Go server runs unchanged behind a remote
// proxy.
//
//	d, _ := socksbind.SOCKS5("tcp", "proxy.example:1080", nil, nil)
//	ln, err := d.Listen(ctx, "tcp", ":0") // the proxy listens for us
//	if err != nil { ... }
//	fmt.Println("serving on", ln.Addr())    // the address the proxy bound
//	http.Serve(ln, handler)
//
// A [Dialer] is a drop-in for golang.org/x/net/proxy.SOCKS5: the same
// constructor, and Dial and DialContext perform CONNECT. Every connection it
// returns is a [*Conn], which keeps the fast paths of the connection to the
// proxy (io.ReaderFrom, io.WriterTo, CloseWrite), so io.Copy can splice.
//
// # BIND semantics
//
// A BIND request carries one connection: the proxy sends a first reply when
// it listens, a second when a peer connects, and then relays. A [Listener]
// re-arms after each connection on a goroutine of its own, retries trouble
// that may pass without returning it from Accept, and returns a permanent
// error only when retrying cannot help; [Listener] has the whole contract,
// with the table of which failure is which. [ListenConfig.Once] gives the
// classic single-connection BIND.
//
// # Serving many peers: GOST's multiplexed BIND
//
// With [MultiplexOn] (or [MultiplexAuto]) the listener sends GOST's MBIND
// once and every peer arrives as a stream of one smux session, at one
// address, concurrently: what a server needs. The listener then behaves as
// a kernel listener does: it keeps taking streams whatever Accept does,
// holds ready ones in a bounded backlog ([ListenConfig.Backlog]) and closes
// those beyond it at once, speaks the smux version the proxy opens the
// session with, and asks for the same address again when the session is
// lost (the proxy restarted, or went silent), with Accept blocking
// meanwhile. See [MultiplexOn].
//
// # UDP
//
// [Dialer.ListenPacket] relays datagrams through the proxy as a
// [net.PacketConn] (a [*PacketConn]), with UDP ASSOCIATE (RFC 1928, section
// 7: Dante, and GOST with udp=true) or GOST's UDP-TUN, which carries them
// inside the TCP connection to the proxy and so passes through forward hops
// ([Dialer.UDP], [UDPMode]). [Dialer.DialContext] with "udp" returns a
// connected datagram conn, on which the Go resolver asks DNS through the
// proxy. The association ends with its TCP control connection, and every
// read and write then fails with [ErrAssociationEnded]; UDP ASSOCIATE
// through a forward dialer is refused with [ErrForwardedAssociate].
//
// # Errors
//
// Every error is a [*net.OpError]. A failure reply is a [*ReplyError] that
// matches both a sentinel of this package and the errno of the classic C
// client API, so errors.Is(err, syscall.ECONNREFUSED) holds for a CONNECT
// the proxy refused; see [ErrGeneralFailure] for the table.
//
// # Wire discipline
//
// Each protocol message goes out in one Write (some servers cannot
// reassemble a split message) and every reply is read to its exact length
// (no byte that follows a reply is consumed, even when a proxy sends reply
// and data in one segment). Contexts bound handshakes and are watched for
// cancellation, not only for their deadline; no deadline set during a
// handshake is left on a connection.
//
// The package socks5test provides an in-process server for tests, and
// proxyext configures dialers and listeners from URLs and the environment.
package socksbind
