package proxyext

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/connectproxy"
	"github.com/socksbind/socksbind/internal/hostile"
	"github.com/socksbind/socksbind/internal/testkit"
)

// testTimeout is a safety net against a hung test, never a wait.
const testTimeout = 30 * time.Second

// The names tests dial. They are not "localhost", which net/http's NO_PROXY
// rules never send to a proxy.
const (
	echoName = "echo.proxyext.test"
	httpName = "app.proxyext.test"
)

var loopback4 = netip.MustParseAddr("127.0.0.1")

// clearEnv makes the proxy variables empty for the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, n := range []string{"ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"} {
		t.Setenv(n, "")
	}
}

// assertEcho checks that c carries bytes both ways to an echo server.
func assertEcho(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(testTimeout))
	msg := "hello through the chain"
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, msg, string(buf))
}

// refusedAddr returns an address of 127.0.0.1 that refuses connections
// until the test ends.
func refusedAddr(t *testing.T) string {
	t.Helper()
	addr, release, err := hostile.RefusedAddr()
	require.NoError(t, err)
	t.Cleanup(release)
	return addr
}

// listenFreePort calls listen with ":PORT", PORT a port that was free a
// moment ago, and again with another port while the proxy reports that it
// bound a different one because the port was taken meanwhile (by another
// test process, or as the local port of an outgoing connection).
func listenFreePort(t *testing.T, listen func(address string) (net.Listener, error)) (net.Listener, error) {
	t.Helper()
	for range 4 {
		ln, err := listen(":" + strconv.Itoa(testkit.FreePort(t, net.ListenConfig{})))
		if !errors.Is(err, socksbind.ErrAddressInUse) {
			return ln, err
		}
		t.Logf("port taken meanwhile, trying another: %v", err)
	}
	return listen(":" + strconv.Itoa(testkit.FreePort(t, net.ListenConfig{})))
}

// serveHTTP runs an unchanged http.Serve on ln until the test ends, and
// checks that n requests sent to ln.Addr() are answered, each on a new
// connection.
func serveHTTP(t *testing.T, ln net.Listener, n int) {
	t.Helper()
	var hits atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "served "+r.URL.Path)
	})
	done := make(chan error, 1)
	go func() { done <- http.Serve(ln, h) }()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: testTimeout}
	addr := ln.Addr().String()
	for i := range n {
		path := "/req" + string(rune('a'+i))
		resp, err := client.Get("http://" + addr + path)
		require.NoError(t, err, "request %d", i)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "served "+path, string(body))
		assert.Equal(t, addr, ln.Addr().String(), "the listener keeps its address")
	}
	assert.Equal(t, int32(n), hits.Load())
}

// assertNoSecret checks that neither err nor any String of v shows secret.
func assertNoSecret(t *testing.T, secret string, v any) {
	t.Helper()
	if secret == "" || v == nil {
		return
	}
	var s string
	switch v := v.(type) {
	case error:
		s = v.Error()
	case interface{ String() string }:
		s = v.String()
	default:
		return
	}
	assert.NotContains(t, s, secret, "a password shows")
}

// mustParse parses a URL of a test.
func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u
}

// trustTestCA makes the https dialer d, as FromURL or FromEnvironment made
// it, trust the certificate of connectproxy's servers in place of the
// system's roots.
func trustTestCA(t *testing.T, d proxy.Dialer) {
	t.Helper()
	switch v := d.(type) {
	case *httpDialer:
		require.NotNil(t, v.tls, "%s is not an https proxy", v.url)
		v.tls.RootCAs = connectproxy.CertPool()
	case *envDialer:
		trustTestCA(t, v.proxy)
	default:
		t.Fatalf("no https dialer in %T", d)
	}
}

// withResolver makes the SOCKS dialer inside d, as FromURL or
// FromEnvironment made it, resolve names with r.
func withResolver(t *testing.T, d proxy.Dialer, r *net.Resolver) {
	t.Helper()
	switch v := d.(type) {
	case *socksDialer:
		v.d.Resolver = r
	case *envListenDialer:
		withResolver(t, v.ld, r)
	default:
		t.Fatalf("no SOCKS dialer in %T", d)
	}
}

// fakeResolver is a resolver that answers from hosts, without DNS: its
// queries go over an in-memory connection to a tiny DNS server. It counts
// the queries it answers.
type fakeResolver struct {
	hosts   map[string]netip.Addr
	queries atomic.Int32
}

func (f *fakeResolver) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			client, server := net.Pipe()
			go f.serve(server)
			return client, nil
		},
	}
}

// serve answers DNS messages framed as over TCP until c closes.
func (f *fakeResolver) serve(c net.Conn) {
	defer c.Close()
	for {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		resp, err := f.answer(msg)
		if err != nil {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

func (f *fakeResolver) answer(msg []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	f.queries.Add(1)
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionAvailable: true})
	b.EnableCompression()
	ip, ok := f.hosts[strings.TrimSuffix(q.Name.String(), ".")]
	if !ok {
		b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError})
	}
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if ok && q.Type == dnsmessage.TypeA && ip.Is4() {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}
		if err := b.AResource(rh, dnsmessage.AResource{A: ip.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// newRecorder returns a forward dialer that records every address it is
// asked for and dials the test names at 127.0.0.1, so that "direct"
// connections to them need no DNS. It dials nothing but loopback: other
// addresses fail.
func newRecorder() *testkit.Dialer {
	return &testkit.Dialer{Hosts: map[string]string{echoName: loopback4.String(), httpName: loopback4.String()}}
}
