// Package connectproxy provides an in-process HTTP CONNECT proxy for tests,
// shaped like net/http/httptest's Server.
//
// The proxy listens on a kernel-chosen port of 127.0.0.1, plain or with TLS,
// answers CONNECT host:port by dialing the target and relaying both ways, and
// records every request it reads. It can require Basic proxy authorization
// (407 otherwise), refuse requests with a status of the test's choosing, and
// stall without answering, so that a client's cancellation can be tested.
// Close shuts everything down and waits for every goroutine it started.
package connectproxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/socksbind/socksbind/internal/relay"
	"github.com/socksbind/socksbind/internal/srvbase"
	"github.com/socksbind/socksbind/internal/tracker"
)

// A Server is an HTTP CONNECT proxy on a loopback port, for use in tests.
//
// The exported fields other than Listener and URL may be set between
// [NewUnstartedServer] and [Server.Start] or [Server.StartTLS]; they must
// not change afterwards.
type Server struct {
	// Listener is the proxy's listening socket, on a port of 127.0.0.1
	// chosen by the kernel.
	Listener net.Listener

	// URL is "http://127.0.0.1:PORT", or "https://..." once started with
	// TLS, without credentials. See [Server.URLWithUser].
	URL string

	// Users, when non-nil, makes the proxy require Basic proxy
	// authorization with these credentials, user name to password. A
	// request without valid credentials gets 407 and a close.
	Users map[string]string

	// Refuse, when non-nil, is called for every authorized request; a
	// non-zero result is sent as the response status, then the
	// connection closes.
	Refuse func(req *Request) int

	// Stall makes the proxy read and record each request and then never
	// answer it: the connection stays open until the client closes it or
	// Close is called.
	Stall bool

	// Hosts are names the proxy resolves without DNS: a CONNECT target
	// whose host is one of them is dialed at its address.
	Hosts map[string]netip.Addr

	// OnRequest, when non-nil, is called with each request as soon as it
	// is recorded, before it is answered (or stalled).
	OnRequest func(req Request)

	setupOnce sync.Once
	base      srvbase.Base
	ctx       context.Context // cancelled by Close
	wg        sync.WaitGroup
	conns     tracker.Set
	tls       bool

	mu       sync.Mutex // guards requests
	requests []Request
}

// A Request is what the proxy read from a client.
type Request struct {
	// Method is the request's method; the proxy answers anything but
	// CONNECT with 405.
	Method string

	// Target is the request target: "host:port" for CONNECT.
	Target string

	// ProxyAuthorization is the Proxy-Authorization header as received.
	ProxyAuthorization string

	// User is the Basic user name the request authenticated as, or ""
	// when the proxy requires no authorization or the credentials were
	// wrong.
	User string

	// Client is the remote address of the client's connection.
	Client net.Addr
}

// NewServer starts and returns a new plain HTTP proxy. The caller should call
// Close when finished.
func NewServer() *Server {
	s := NewUnstartedServer()
	s.Start()
	return s
}

// NewUnstartedServer returns a new Server listening on 127.0.0.1 but not
// yet serving.
func NewUnstartedServer() *Server {
	s := &Server{Listener: srvbase.Listen("connectproxy")}
	s.setup()
	return s
}

// setup readies the server's own state once, for a Server made by
// NewUnstartedServer or as a struct literal with a Listener.
func (s *Server) setup() {
	s.setupOnce.Do(func() { s.ctx = s.base.Init("connectproxy", &s.wg, &s.conns, nil) })
}

// Start starts serving plain HTTP. It panics if the server was already
// started or closed.
func (s *Server) Start() {
	s.start("http")
}

// StartTLS starts serving HTTP over TLS with the certificate of
// [Certificate]. It panics if the server was already started or closed.
func (s *Server) StartTLS() {
	cert, err := certificate()
	if err != nil {
		panic(fmt.Sprintf("connectproxy: %v", err))
	}
	s.tls = true
	s.Listener = tls.NewListener(s.Listener, &tls.Config{Certificates: []tls.Certificate{cert}})
	s.start("https")
}

// NewTLSServer starts and returns a new proxy that speaks TLS, with a
// self-signed certificate for 127.0.0.1 and ::1 (see [Certificate]).
func NewTLSServer() *Server {
	s := NewUnstartedServer()
	s.StartTLS()
	return s
}

func (s *Server) start(scheme string) {
	s.setup()
	s.base.Start(s.Listener, s.handle)
	s.URL = scheme + "://" + s.Addr()
}

// Certificate returns the certificate of a server started with TLS, or nil.
// Every such server of the process has the same one.
func (s *Server) Certificate() *x509.Certificate {
	if !s.tls {
		return nil
	}
	return Certificate()
}

// Certificate returns the self-signed certificate, for 127.0.0.1 and ::1,
// that every server started with TLS presents. It is made once per
// process.
func Certificate() *x509.Certificate {
	cert, err := certificate()
	if err != nil {
		panic(fmt.Sprintf("connectproxy: %v", err))
	}
	return cert.Leaf
}

// CertPool returns a new pool holding only [Certificate], for a client's
// RootCAs.
func CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(Certificate())
	return p
}

var certificate = sync.OnceValues(selfSigned)

// Addr returns the address the proxy listens on, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.Listener.Addr().String() }

// URLWithUser returns the proxy's URL carrying the user name and password,
// escaped as needed.
func (s *Server) URLWithUser(user, pass string) string {
	u, err := url.Parse(s.URL)
	if err != nil {
		panic(fmt.Sprintf("connectproxy: %v", err))
	}
	u.User = url.UserPassword(user, pass)
	return u.String()
}

// Requests returns a copy of every request the proxy read, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Close shuts the proxy down: it closes the listener and every connection
// and waits for every goroutine the proxy started. It is safe to call more
// than once.
func (s *Server) Close() {
	s.setup()
	s.base.Close(s.Listener)
}

func (s *Server) handle(c net.Conn) {
	defer s.conns.Release(c)
	br := bufio.NewReader(c)
	hr, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	req := Request{
		Method:             hr.Method,
		Target:             hr.RequestURI,
		ProxyAuthorization: hr.Header.Get("Proxy-Authorization"),
		Client:             c.RemoteAddr(),
	}
	authorized := s.Users == nil
	if !authorized {
		if user, ok := s.authorize(req.ProxyAuthorization); ok {
			req.User, authorized = user, true
		}
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	if s.OnRequest != nil {
		s.OnRequest(req)
	}
	if s.Stall {
		// Read until the client goes away or Close closes c.
		io.Copy(io.Discard, br)
		return
	}
	switch {
	case req.Method != http.MethodConnect:
		respond(c, http.StatusMethodNotAllowed, "")
		return
	case !authorized:
		respond(c, http.StatusProxyAuthRequired, "Proxy-Authenticate: Basic realm=\"connectproxy\"\r\n")
		return
	}
	if s.Refuse != nil {
		if code := s.Refuse(&req); code != 0 {
			respond(c, code, "")
			return
		}
	}
	target := req.Target
	if host, port, err := net.SplitHostPort(target); err == nil {
		if ip, ok := s.Hosts[host]; ok {
			target = net.JoinHostPort(ip.String(), port)
		}
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	out, err := d.DialContext(s.ctx, "tcp", target)
	if err != nil {
		respond(c, http.StatusBadGateway, "")
		return
	}
	if !s.conns.Track(out) {
		return
	}
	defer s.conns.Release(out)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent after its request are already in br.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := out.Write(b); err != nil {
			return
		}
	}
	relay.Run(&s.wg, c, out)
}

// authorize checks a Basic Proxy-Authorization value against Users.
func (s *Server) authorize(h string) (string, bool) {
	enc, ok := strings.CutPrefix(h, "Basic ")
	if !ok {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return "", false
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", false
	}
	if want, found := s.Users[user]; !found || want != pass {
		return "", false
	}
	return user, true
}

func respond(c net.Conn, code int, header string) {
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n", code, http.StatusText(code), header)
}

// selfSigned makes a certificate for 127.0.0.1 and ::1 that is its own
// issuer.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "connectproxy"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
