package socks5test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/netutil"
	"github.com/socksbind/socksbind/internal/relay"
	"github.com/socksbind/socksbind/internal/srvbase"
	"github.com/socksbind/socksbind/internal/srvwire"
	"github.com/socksbind/socksbind/internal/tracker"
)

// DefaultDialTimeout bounds the outbound dial of a CONNECT when
// [Server.DialTimeout] is zero.
const DefaultDialTimeout = 10 * time.Second

// A Server is a SOCKS5 server listening on a loopback port, for use in tests.
//
// The exported fields other than Listener and URL may be set between
// [NewUnstartedServer] and [Server.Start]; they must not change afterwards.
type Server struct {
	// Listener is the server's listening socket, on a port of 127.0.0.1
	// chosen by the kernel. It may be replaced before Start.
	Listener net.Listener

	// URL is "socks5://127.0.0.1:PORT", without credentials. Start sets
	// it; see [Server.URLWithUser] for a URL that carries some.
	URL string

	// Users, when non-nil, makes the server require RFC 1929
	// username/password authentication (method 2) with these
	// credentials, user name to password. When nil, the server accepts
	// only method 0 (no authentication). A client that offers no
	// acceptable method gets 05 FF and a close; bad credentials get
	// status 1 and a close.
	Users map[string]string

	// Rules are evaluated in order for every request, after it was
	// recorded. The first one that returns a non-zero reply refuses the
	// request with that reply, carrying BND 0.0.0.0:0, and the server
	// closes the connection. For BIND this is reply 1, as Dante does.
	// Rules run on the server's goroutines, concurrently for different
	// connections.
	Rules []Rule

	// PeerRules are evaluated in order for each peer that connects to a
	// BIND socket. The first one that returns a non-zero reply refuses
	// the peer: reply 2 carries that code and the peer's address, then
	// both the peer and the client are closed, like Dante's "bindreply"
	// block rules. Like Rules, they run concurrently.
	PeerRules []PeerRule

	// BindMode selects what happens to a BIND's listening socket once its
	// peer is accepted. The zero value is [BindDante].
	BindMode BindMode

	// Multiplex makes the server answer GOST's multiplexed BIND,
	// [socksbind.CmdMultiplexBind], as GOST v3 does. When false, the
	// command is unknown: the server closes the connection without a
	// reply.
	//
	// Reply 1 is that of BIND, and so are the address rules (see the
	// package documentation: a taken port gets another, where GOST
	// answers reply 1 with code 1; add a [RefusePort] rule for that) and
	// Rules. Then the control connection carries an smux session (GOST
	// v3's configuration, which is smux's default, at the version of
	// MultiplexVersion) in which the server is the smux client: every
	// peer that connects to the bound socket arrives as a stream the
	// server opens, which begins with a SOCKS5 reply (code 0) carrying the
	// peer's address, followed by the peer's bytes. The socket stays open
	// for further peers until the session ends: the client closes it or
	// the control connection, or the session's keep-alive times out.
	// Then the socket, and every stream with its peer, close. Streams the
	// client opens are closed at once.
	//
	// A peer that DST.ADDR or PeerRules refuse is closed, and the client
	// sees nothing of it: GOST has no peer rules, and MBIND no message to
	// carry a refusal. The relay passes a half-close on each way (smux's
	// CloseWrite), where GOST 3.3.0 ends the whole stream on the first
	// EOF from either side.
	Multiplex bool

	// UDP makes the server answer UDP ASSOCIATE, as Dante and GOST
	// (udp=true) do; see the package documentation. When false, UDP
	// ASSOCIATE gets reply 7 (command not supported), as from microsocks.
	UDP bool

	// UDPTun makes the server answer GOST's UDP-TUN, [CmdUDPTun], as GOST
	// with udp=true does: reply 0 carrying 0.0.0.0 and a port, then
	// datagrams framed on the connection both ways. When false, the
	// command is unknown: the server closes the connection without a
	// reply, as Dante does.
	UDPTun bool

	// MultiplexNoHeader leaves out the SOCKS5 reply at the start of each
	// MBIND stream: the stream carries the peer's bytes alone, as GOST
	// does with comp=true, its GOST v2 compatibility mode.
	MultiplexNoHeader bool

	// MultiplexVersion is the smux protocol version of MBIND sessions: 1
	// (the zero value means 1, GOST's default) or 2, which gives each
	// stream flow control of its own (GOST's mux.version=2).
	MultiplexVersion int

	// ReportUnspecified makes the CONNECT reply and reply 1 of BIND carry
	// the unspecified address (0.0.0.0 or ::, by the family of the real
	// one) instead of the real IP, keeping the real port, as some servers
	// do. A client must then substitute the server's own IP.
	ReportUnspecified bool

	// DialTimeout bounds the outbound dial of a CONNECT. Zero means
	// [DefaultDialTimeout].
	DialTimeout time.Duration

	// Hosts maps names to addresses that a CONNECT to a domain name
	// resolves to before any lookup, like a hosts file of the server's
	// own: tests can use realistic names ("api.example") without DNS.
	// Names not in Hosts are looked up as usual.
	Hosts map[string]netip.Addr

	// Hooks inject faults into the protocol; see [Hooks].
	Hooks Hooks

	setupOnce sync.Once
	base      srvbase.Base
	ctx       context.Context // cancelled by Close
	wg        sync.WaitGroup
	conns     tracker.Set

	mu       sync.Mutex
	closed   bool // set by Close: no BIND socket is registered after it
	binds    map[net.Listener]struct{}
	pool     map[netip.AddrPort]net.Listener
	requests []Request
}

// A Request is what the server received from a client: the command and the
// destination of a SOCKS request, who sent it and as which user.
type Request struct {
	// Command is the CMD field, as received, even one the server does
	// not support.
	Command socksbind.Command

	// Dst is DST.ADDR and DST.PORT as received: Dst.Name is set when the
	// client sent a domain name, and Dst.IP.Is4 tells an IPv4 address
	// from an IPv6 one (an IPv4-mapped IPv6 address stays IPv6).
	Dst socksbind.Addr

	// Client is the remote address of the client's connection.
	Client net.Addr

	// User is the RFC 1929 user name the client authenticated as, or ""
	// when the server requires no authentication.
	User string
}

// A Rule decides whether the server refuses a request: a non-zero reply
// refuses it with that code, [socksbind.ReplySucceeded] lets it through. See
// [Server.Rules].
type Rule func(req *Request) socksbind.Reply

// A PeerRule decides whether the server refuses a peer that connected to the
// socket of the BIND request req: a non-zero reply refuses it with that code
// in reply 2. See [Server.PeerRules].
type PeerRule func(req *Request, peer net.Addr) socksbind.Reply

// RefuseCommand returns a [Rule] that refuses every request with command cmd
// with reply rep.
func RefuseCommand(cmd socksbind.Command, rep socksbind.Reply) Rule {
	return func(req *Request) socksbind.Reply {
		if req.Command == cmd {
			return rep
		}
		return socksbind.ReplySucceeded
	}
}

// RefusePort returns a [Rule] that refuses CONNECT, BIND and MBIND requests
// whose DST.PORT is port with reply rep.
func RefusePort(port uint16, rep socksbind.Reply) Rule {
	return func(req *Request) socksbind.Reply {
		switch req.Command {
		case socksbind.CmdConnect, socksbind.CmdBind, socksbind.CmdMultiplexBind:
			if req.Dst.Port == port {
				return rep
			}
		}
		return socksbind.ReplySucceeded
	}
}

// RefuseHost returns a [Rule] that refuses every request whose DST.ADDR, as
// text ([socksbind.Addr.Host]), is host with reply rep. A name matches only
// as a name and an IP only as an IP: no name is resolved.
func RefuseHost(host string, rep socksbind.Reply) Rule {
	return func(req *Request) socksbind.Reply {
		if req.Dst.Host() == host {
			return rep
		}
		return socksbind.ReplySucceeded
	}
}

// RefusePeer returns a [PeerRule] that refuses BIND peers connecting from ip
// with [socksbind.ReplyNotAllowed].
func RefusePeer(ip netip.Addr) PeerRule {
	ip = ip.Unmap()
	return func(_ *Request, peer net.Addr) socksbind.Reply {
		if netutil.AddrPort(peer).Addr().Unmap() == ip {
			return socksbind.ReplyNotAllowed
		}
		return socksbind.ReplySucceeded
	}
}

// A Stage is a point of the protocol where [Hooks.Fault] is called.
type Stage int

const (
	// StageGreeting is after the client's greeting (version and
	// methods) was read, before the server answers it.
	StageGreeting Stage = iota
	// StageRequest is after the request was read and recorded, before
	// the rules run and the server answers it.
	StageRequest
	// StageBindReply is in BIND, after a peer was accepted, before
	// reply 2 is sent. The BIND socket is already closed (or pooled).
	StageBindReply
)

func (s Stage) String() string {
	switch s {
	case StageGreeting:
		return "greeting"
	case StageRequest:
		return "request"
	case StageBindReply:
		return "bind reply"
	}
	return fmt.Sprintf("stage %d", int(s))
}

// Hooks are fault-injection points.
type Hooks struct {
	// Fault, when non-nil, is called at each [Stage] with the raw client
	// connection and, from StageRequest on, the request (nil at
	// StageGreeting). If it returns false the server goes on as usual.
	// If it returns true the server considers the connection handled: it
	// writes nothing more, and when Fault returns it closes conn and
	// everything else it holds for it (a BIND's peer, an outbound
	// connection).
	//
	// This lets a test write malformed bytes, close early, or stall: a
	// Fault that blocks reading conn returns when [Server.Close] closes
	// it. Fault runs on the connection's own goroutine, one call at a
	// time for a given connection, but concurrently for different ones.
	Fault func(stage Stage, conn net.Conn, req *Request) bool

	// Datagram, when non-nil, is called for each datagram the UDP relay
	// is about to send the client, with its bytes as on the wire: the
	// RFC 1928 header and the data for UDP ASSOCIATE, the frame for
	// UDP-TUN. The relay sends what it returns instead, in order: nil
	// drops the datagram, a changed copy corrupts it, several send
	// several; a hook that keeps one back and returns it after the next
	// reorders them. A [Datagram] with Spoofed set is sent from another
	// socket of the server than the relay (UDP ASSOCIATE only). It runs on
	// the relay's goroutine, one call at a time for an association.
	Datagram func(pkt []byte) []Datagram
}

// A Datagram is what [Hooks.Datagram] has the relay send.
type Datagram struct {
	// Bytes are sent as they are: one datagram for UDP ASSOCIATE, bytes
	// on the connection for UDP-TUN. Nil sends nothing.
	Bytes []byte
	// Spoofed sends Bytes from another socket of the server than the
	// relay (UDP ASSOCIATE only).
	Spoofed bool
	// Close ends the association once Bytes is sent: the server closes
	// the control connection.
	Close bool
}

// NewServer starts and returns a new [Server]. The caller should call Close
// when finished, to shut it down.
func NewServer() *Server {
	s := NewUnstartedServer()
	s.Start()
	return s
}

// NewUnstartedServer returns a new [Server] listening on 127.0.0.1 but not
// yet serving. The caller may change its configuration, then calls
// [Server.Start], and calls Close when finished.
func NewUnstartedServer() *Server {
	s := &Server{Listener: srvbase.Listen("socks5test")}
	s.setup()
	return s
}

// setup readies the server's own state once, for a Server made by
// NewUnstartedServer or, as an httptest.Server may be, as a struct literal
// with a Listener.
func (s *Server) setup() {
	s.setupOnce.Do(func() {
		s.binds = make(map[net.Listener]struct{})
		s.pool = make(map[netip.AddrPort]net.Listener)
		s.ctx = s.base.Init("socks5test", &s.wg, &s.conns, s.closeBinds)
	})
}

// Start starts a server from [NewUnstartedServer]. It panics if the server
// was already started or closed.
func (s *Server) Start() {
	s.setup()
	s.base.Start(s.Listener, s.handle)
	s.URL = "socks5://" + s.Addr()
}

// Addr returns the address the server listens on, "127.0.0.1:PORT".
func (s *Server) Addr() string {
	return s.Listener.Addr().String()
}

// URLWithUser returns the server's URL carrying the user name and password,
// "socks5://user:pass@127.0.0.1:PORT", escaped as needed.
func (s *Server) URLWithUser(user, pass string) string {
	u := url.URL{Scheme: "socks5", User: url.UserPassword(user, pass), Host: s.Addr()}
	return u.String()
}

// Requests returns a copy of every request the server received, in the
// order they were read, including refused and unsupported ones. A request is
// recorded as soon as it is read, before it is answered.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ActiveBinds returns the number of BIND listening sockets currently open:
// those waiting for a peer, in [BindReuse] mode the pooled ones, and the one
// of each MBIND session.
func (s *Server) ActiveBinds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.binds)
}

// Close shuts the server down: it closes the listener, every client
// connection, every outbound and peer connection, every BIND socket and
// every MBIND session with its streams, and
// waits for every goroutine the server started, [Hooks.Fault] calls
// included, to return. It is safe to call more than once and from several
// goroutines; every call returns after the shutdown is complete. It must not
// be called from a rule or a hook, which run on those goroutines.
func (s *Server) Close() {
	s.setup()
	s.base.Close(s.Listener)
}

// closeBinds closes every BIND socket, the pooled ones included, for the
// first Close.
func (s *Server) closeBinds() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.binds {
		ln.Close()
	}
	clear(s.binds)
	clear(s.pool)
	s.closed = true
}

// fault calls the Fault hook, if any, and reports whether it took the
// connection over.
func (s *Server) fault(stage Stage, c net.Conn, req *Request) bool {
	return s.Hooks.Fault != nil && s.Hooks.Fault(stage, c, req)
}

func (s *Server) handle(c net.Conn) {
	defer s.conns.Release(c)

	methods, err := srvwire.ReadGreeting(c)
	if err != nil {
		return
	}
	if s.fault(StageGreeting, c, nil) {
		return
	}
	method := socksbind.AuthNone
	if s.Users != nil {
		method = socksbind.AuthUsernamePassword
	}
	if !slices.Contains(methods, method) {
		c.Write([]byte{srvwire.Version, byte(socksbind.AuthNoAcceptable)})
		return
	}
	if _, err := c.Write([]byte{srvwire.Version, byte(method)}); err != nil {
		return
	}
	var user string
	if s.Users != nil {
		u, p, err := srvwire.ReadUserPass(c)
		if err != nil {
			return
		}
		if want, ok := s.Users[u]; !ok || want != p {
			c.Write([]byte{srvwire.UserPassVersion, 1})
			return
		}
		if _, err := c.Write([]byte{srvwire.UserPassVersion, 0}); err != nil {
			return
		}
		user = u
	}

	cmd, dst, err := srvwire.ReadRequest(c)
	if err != nil {
		// A malformed request, an unknown address type included, is
		// answered by a close, as Dante does.
		return
	}
	req := &Request{Command: cmd, Dst: dst, Client: c.RemoteAddr(), User: user}
	s.mu.Lock()
	s.requests = append(s.requests, *req)
	s.mu.Unlock()
	if s.fault(StageRequest, c, req) {
		return
	}
	for _, rule := range s.Rules {
		if rep := rule(req); rep != socksbind.ReplySucceeded {
			writeReply(c, rep, socksbind.Addr{})
			return
		}
	}
	switch req.Command {
	case socksbind.CmdConnect:
		s.connect(c, req)
	case socksbind.CmdBind:
		s.bind(c, req)
	case socksbind.CmdUDPAssociate:
		if !s.UDP {
			writeReply(c, socksbind.ReplyCommandNotSupported, socksbind.Addr{})
			return
		}
		s.associate(c, req)
	case CmdUDPTun:
		if s.UDPTun {
			s.udpTun(c, req)
		}
	case socksbind.CmdMultiplexBind:
		if s.Multiplex {
			s.multiplexBind(c, req)
		}
		// Otherwise unknown, and closed without a reply as below.
	default:
		// A command RFC 1928 does not define: Dante closes without a
		// reply, and so does this server.
	}
}

// writeReply sends a reply in one Write.
func writeReply(c net.Conn, rep socksbind.Reply, bnd socksbind.Addr) error {
	_, err := c.Write(srvwire.AppendReply(nil, rep, bnd))
	return err
}

func (s *Server) connect(c net.Conn, req *Request) {
	timeout := s.DialTimeout
	if timeout == 0 {
		timeout = DefaultDialTimeout
	}
	d := net.Dialer{Timeout: timeout}
	var target string
	if ip, ok := s.Hosts[req.Dst.Name]; ok && req.Dst.Name != "" {
		target = netip.AddrPortFrom(ip, req.Dst.Port).String()
	} else if req.Dst.Name != "" {
		target = req.Dst.String()
	} else {
		target = netip.AddrPortFrom(req.Dst.IP.Unmap(), req.Dst.Port).String()
	}
	out, err := d.DialContext(s.ctx, "tcp", target)
	if err != nil {
		writeReply(c, dialReply(err), socksbind.Addr{})
		return
	}
	if !s.conns.Track(out) {
		return
	}
	defer s.conns.Release(out)
	if err := writeReply(c, socksbind.ReplySucceeded, s.bound(out.LocalAddr())); err != nil {
		return
	}
	relay.Run(&s.wg, c, out)
}

// dialReply maps a dial error to the reply code a server sends for it.
func dialReply(err error) socksbind.Reply {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return socksbind.ReplyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return socksbind.ReplyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		return socksbind.ReplyHostUnreachable
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return socksbind.ReplyHostUnreachable
	case errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return socksbind.ReplyTTLExpired
	}
	return socksbind.ReplyGeneralFailure
}

// bound returns the address to report for one of the server's own sockets.
func (s *Server) bound(a net.Addr) socksbind.Addr {
	ap := netutil.AddrPort(a)
	ip := ap.Addr().Unmap()
	if s.ReportUnspecified {
		if ip.Is4() {
			ip = netip.IPv4Unspecified()
		} else {
			ip = netip.IPv6Unspecified()
		}
	}
	return socksbind.Addr{IP: ip, Port: ap.Port()}
}
