package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind/internal/dnsserver"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/socks5test"
)

// With no flags, the name is looked up through the in-process proxy.
func TestRunInProcess(t *testing.T) {
	leakcheck.Check(t)
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), nil, &out))
	assert.Contains(t, out.String(), demoName+"\t127.0.0.1\n")
	assert.Contains(t, out.String(), demoName+"\t::1\n")
}

// With -proxy and -dns, through a proxy of the test's with UDP-TUN; a name
// the server does not know is reported, and fails the run.
func TestRunProxyTun(t *testing.T) {
	leakcheck.Check(t)
	dns := dnsserver.Start(t, map[string][]netip.Addr{"db.example": {netip.MustParseAddr("127.0.0.9")}})
	srv := socks5test.NewUnstartedServer()
	srv.UDPTun = true
	srv.Start()
	t.Cleanup(srv.Close)
	var out bytes.Buffer
	err := run(context.Background(), []string{"-proxy", "socks5h://" + srv.Addr() + "?udp=tun", "-dns", dns.String(), "-net", "ip4", "db.example", "nowhere.example"}, &out)
	require.Error(t, err)
	assert.Contains(t, out.String(), "db.example\t127.0.0.9\n")
	assert.True(t, strings.Contains(out.String(), "nowhere.example: lookup nowhere.example"), out.String())
	assert.Positive(t, dns.Queries())
	for _, r := range srv.Requests() {
		assert.Equal(t, socks5test.CmdUDPTun, r.Command)
	}
}
