// Command resolve looks names up through a SOCKS5 proxy: the DNS queries
// travel as UDP datagrams relayed by the proxy (UDP ASSOCIATE, or GOST's
// UDP-TUN with ?udp=tun in the URL), so the DNS server sees the proxy, not
// this host, and nothing leaks around the proxy.
//
// With no flags it starts an in-process SOCKS5 server (socks5test, with UDP)
// and an in-process DNS server on loopback that knows one name, and looks
// that name up through the one with the other:
//
//	go run ./examples/resolve
//
// With -proxy it uses a real proxy; the DNS server is then the one of this
// host's resolver configuration unless -dns names another (one the proxy
// can reach: a stub resolver on 127.0.0.53 is the proxy's own, if it has
// one):
//
//	go run ./examples/resolve -proxy socks5h://127.0.0.1:1080 example.com
//	go run ./examples/resolve -proxy 'socks5h://127.0.0.1:1080?udp=tun' -dns 192.0.2.53:53 example.com
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"net/url"
	"os"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind/internal/dnsserver"
	"github.com/socksbind/socksbind/proxyext"
	"github.com/socksbind/socksbind/socks5test"
)

// demoName is the name the in-process DNS server knows.
const demoName = "service.example"

func main() {
	log.SetFlags(0)
	log.SetPrefix("resolve: ")
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("resolve", flag.ContinueOnError)
	proxyURL := fs.String("proxy", "", "SOCKS5 proxy URL, such as socks5h://127.0.0.1:1080 or socks5h://127.0.0.1:1080?udp=tun (default: an in-process one)")
	dns := fs.String("dns", "", "DNS server host:port, reached through the proxy (default: this host's resolver configuration, or the in-process one)")
	network := fs.String("net", "ip", "address family: ip, ip4 or ip6")
	timeout := fs.Duration("timeout", 10*time.Second, "bound of each lookup")
	if err := fs.Parse(args); err != nil {
		return err
	}
	names := fs.Args()
	if *proxyURL == "" {
		srv := socks5test.NewUnstartedServer()
		srv.UDP, srv.UDPTun = true, true
		srv.Start()
		defer srv.Close()
		*proxyURL = srv.URL
		fmt.Fprintln(out, "in-process SOCKS5 server on", srv.Addr())
		if *dns == "" {
			ds, err := dnsserver.Listen("127.0.0.1:0", map[string][]netip.Addr{
				demoName: {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
			})
			if err != nil {
				return err
			}
			defer ds.Close()
			*dns = ds.String()
			fmt.Fprintln(out, "in-process DNS server on", *dns)
		}
		if len(names) == 0 {
			names = []string{demoName}
		}
	}
	if len(names) == 0 {
		return errors.New("no name to look up: give one or more after the flags")
	}
	u, err := url.Parse(*proxyURL)
	if err != nil {
		return err
	}
	d, err := proxyext.FromURL(u, nil)
	if err != nil {
		return err
	}
	cd, ok := d.(proxy.ContextDialer)
	if !ok {
		return fmt.Errorf("%s cannot carry DNS", proxyext.Redact(u))
	}
	r := &net.Resolver{
		PreferGo: true, // the Go resolver, which dials through Dial
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			if *dns != "" {
				address = *dns
			}
			// "udp" gives a datagram conn through the proxy; "tcp", for
			// an answer too long for UDP, a CONNECT.
			return cd.DialContext(ctx, network, address)
		},
	}
	var failed error
	for _, name := range names {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		ips, err := r.LookupNetIP(ctx, *network, name)
		cancel()
		if err != nil {
			fmt.Fprintf(out, "%s: %v\n", name, err)
			failed = errors.New("some lookups failed")
			continue
		}
		for _, ip := range ips {
			fmt.Fprintf(out, "%s\t%s\n", name, ip)
		}
	}
	return failed
}
