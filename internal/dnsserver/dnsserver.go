// Package dnsserver is a small DNS server on a UDP socket that answers A
// and AAAA questions from a fixed table, for tests and examples: names
// never reach real DNS.
package dnsserver

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// A Server answers from its table: the addresses of a name, by the family
// asked for; NXDOMAIN for a name it does not have.
type Server struct {
	conn    *net.UDPConn
	records map[string][]netip.Addr // by lower-case FQDN
	queries atomic.Int64
	wg      sync.WaitGroup
}

// Listen starts a server on address ("127.0.0.1:0") with records, names
// mapped to addresses (a trailing dot is optional).
func Listen(address string, records map[string][]netip.Addr) (*Server, error) {
	ua, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	s := &Server{conn: c, records: make(map[string][]netip.Addr)}
	for name, ips := range records {
		s.records[fqdn(name)] = ips
	}
	running := make(chan struct{})
	s.wg.Go(func() {
		close(running)
		s.serve()
	})
	<-running // so that a leak check sees it as this package's
	return s, nil
}

// Start is Listen on 127.0.0.1 for a test, which fails if it cannot; the
// server closes at the test's cleanup.
func Start(t testing.TB, records map[string][]netip.Addr) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", records)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func fqdn(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// Addr returns the server's address.
func (s *Server) Addr() netip.AddrPort {
	return s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// String returns the server's address as "host:port".
func (s *Server) String() string { return s.Addr().String() }

// Queries returns how many queries the server has answered.
func (s *Server) Queries() int { return int(s.queries.Load()) }

// Close stops the server and waits for it.
func (s *Server) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

func (s *Server) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if resp, ok := s.answer(buf[:n]); ok {
			s.queries.Add(1)
			s.conn.WriteToUDPAddrPort(resp, from)
		}
	}
}

// answer builds the response to one query.
func (s *Server) answer(q []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, false
	}
	question, err := p.Question()
	if err != nil {
		return nil, false
	}
	ips, known := s.records[strings.ToLower(question.Name.String())]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(question) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	rr := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 60}
	for _, ip := range ips {
		switch {
		case question.Type == dnsmessage.TypeA && ip.Is4():
			rr.Type = dnsmessage.TypeA
			if b.AResource(rr, dnsmessage.AResource{A: ip.As4()}) != nil {
				return nil, false
			}
		case question.Type == dnsmessage.TypeAAAA && ip.Is6():
			rr.Type = dnsmessage.TypeAAAA
			if b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: ip.As16()}) != nil {
				return nil, false
			}
		}
	}
	resp, err := b.Finish()
	return resp, err == nil
}
