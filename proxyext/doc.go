// Package proxyext builds dialers and listeners from proxy URLs and from the
// environment (ALL_PROXY, NO_PROXY), and composes them into chains. It is
// the place where socksbind meets programs that are configured by URL.
//
// # Schemes
//
// [FromURL] understands:
//
//	socks5://[user[:pass]@]host[:port]   SOCKS5 (RFC 1928), target names resolved
//	                                     locally and sent as IP addresses, as curl does
//	socks5h://[user[:pass]@]host[:port]  SOCKS5, target names sent to the proxy
//	http://[user[:pass]@]host[:port]     HTTP CONNECT tunnel (port 80 by default)
//	https://[user[:pass]@]host[:port]    HTTP CONNECT over TLS to the proxy (port 443)
//	anything else                        golang.org/x/net/proxy.FromURL, which knows
//	                                     the schemes of proxy.RegisterDialerType
//
// SOCKS4 is not supported: unless a socks4 or socks4a dialer was
// registered, such a URL is an error that matches [errors.ErrUnsupported]
// and names the socks5 (socks5h for socks4a) URL to try instead, since
// most SOCKS4 proxies speak SOCKS5 too.
//
// SOCKS5 proxies default to port 1080. An IPv6 address is written in
// brackets ("socks5h://[2001:db8::1]:1080"); without them it is an error,
// never read as an address and a port. A user name or password holding
// "/", "?", "#" or "@" must be percent-encoded (%2F, %3F, %23, %40): an
// unencoded "/", "?" or "#" ends the host early, and a URL left with an "@"
// after its host is an error, never a connection to a wrong host.
//
// The userinfo of a SOCKS5 URL becomes RFC 1929 username/password
// credentials (a user without a password sends an empty password); that
// of an HTTP URL becomes a Basic Proxy-Authorization header. What FromURL returns for socks5 and socks5h
// also listens with the BIND command: find that with a type assertion to
// [ListenDialer]. An HTTP CONNECT dialer cannot listen.
//
// The query parameter bind of a socks5 or socks5h URL selects how its
// [ListenDialer] listens ([socksbind.ListenConfig.Multiplex]):
//
//	no bind, bind=off   standard BIND (RFC 1928), socksbind.MultiplexOff
//	bind=on, bind=mux   GOST's multiplexed BIND, socksbind.MultiplexOn
//	bind=auto           multiplexed BIND when the proxy has it, socksbind.MultiplexAuto
//
// These are the words of [socksbind.Multiplex.UnmarshalText], which reads
// them; any other value of bind, or bind given twice, is an error.
// [ListenConfig] returns the settings a URL describes, for a program that
// makes its own [socksbind.ListenConfig]. The query
// parameter pipeline=1 sets [socksbind.Dialer.Pipeline]: greeting,
// authentication and request go out in one write (one round trip instead of
// two or three; Dante and GOST answer it, microsocks cannot), and
// pipeline=0 is the default. The query parameter udp selects how it relays
// UDP ([PacketListener], [socksbind.Dialer.UDP]):
//
//	no udp      UDP ASSOCIATE (RFC 1928), socksbind.UDPAssociate
//	udp=tun     GOST's UDP-over-TCP, socksbind.UDPTunnel
//	udp=auto    UDP ASSOCIATE, else UDP-TUN, socksbind.UDPAuto
//
// Other query parameters, and bind, pipeline and udp in an http or https
// URL, are ignored.
//
// # HTTP CONNECT
//
// The handshake with an HTTP proxy (reaching it, TLS for https, CONNECT
// and the proxy's answer) is bounded by the context of DialContext and,
// when the context sets no earlier deadline, by
// [socksbind.DefaultHandshakeTimeout]; the expiry of that bound matches
// [os.ErrDeadlineExceeded]. The head of the proxy's answer (status line and
// header fields) may be at most 64 KiB, the default limit of Squid; a
// longer one is an error matching [socksbind.ErrProtocolViolation]. Any
// 2xx status opens the tunnel, and the bytes that follow the head belong to
// it.
//
// # Chains
//
// The forward dialer of FromURL reaches the proxy. Any [proxy.Dialer] will
// do, including what FromURL returned for another URL, so a SOCKS5 proxy
// can be reached through an HTTP CONNECT proxy or through another SOCKS5
// proxy, for dialing and for listening alike. Every hop dials the one
// before it with DialContext when it has one, so the context passed to the
// last hop bounds the whole chain.
//
// # Environment
//
// [FromEnvironment] reads ALL_PROXY and NO_PROXY each time it is called:
// nothing is cached, so a program that changes its environment gets the new
// setting on the next call. Each variable may also be spelled in lower case
// (all_proxy, no_proxy); when both spellings are set and not empty, the
// upper case one wins, as in golang.org/x/net/http/httpproxy. An unset or
// empty ALL_PROXY means a direct connection; a value that is not a valid
// URL of a known scheme is an error, never a silent direct connection.
//
// NO_PROXY is applied to each target by golang.org/x/net/http/httpproxy, so
// it means what it means to net/http: a comma-separated list of domain
// names ("example.com" matches it and its subdomains, ".example.com" and
// "*.example.com" only its subdomains), IP addresses and CIDR ranges, each
// optionally with a port, or "*" for every host. Like net/http, and
// whatever NO_PROXY says, the name "localhost" and loopback addresses
// (127.0.0.0/8, ::1) are never reached through the proxy.
//
// [Listen] listens through the environment's proxy when it is a SOCKS5 one,
// and locally when no proxy is configured, so the same program runs with
// and without a proxy. [ListenProxy] never falls back. [ListenPacket] and
// [ListenPacketProxy] do the same for UDP.
//
// # Errors
//
// Dial and listen errors are *net.OpError, as in socksbind: the SOCKS5
// dialers return socksbind's own, and the HTTP CONNECT dialer one with Op
// "proxy connect", Source the proxy and Addr the target. A CONNECT the
// proxy refuses carries its status code and reason phrase, quoted as a Go
// string literal so that the proxy's bytes cannot pass for anything else
// (proxy refused the tunnel: 403 "Forbidden"); a 407 matches
// [socksbind.ErrAuthRejected] and a 403 [socksbind.ErrNotAllowed]. An
// answer cut short names the stage, "HTTP CONNECT response: unexpected
// EOF", and matches [io.ErrUnexpectedEOF]. A cancelled context matches
// [context.Canceled] through every hop. Errors about a proxy URL start
// with "proxyext: " and name the URL redacted.
//
// # Secrets
//
// A URL is only ever printed by [Redact], with its password replaced by
// "xxxxx": no error or String method of this package shows a password, nor
// does any verb of the fmt package applied to a dialer or an error of this
// package (%v, %+v, %#v and the others). When a URL was misread (an "@"
// after the host), everything between the scheme and the last "@" but the
// user name is replaced, as the password's extent is unknown.
package proxyext
