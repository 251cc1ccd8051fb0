package socksbind_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"syscall"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/socks5test"
)

// An unchanged http.Serve behind a SOCKS5 proxy: the proxy listens, and
// requests sent to the address it bound reach the handler.
func Example() {
	proxy := socks5test.NewServer() // stands in for a remote SOCKS5 server
	defer proxy.Close()

	d, err := socksbind.SOCKS5("tcp", proxy.Addr(), nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := d.Listen(context.Background(), "tcp", ":0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from behind the proxy")
	}))

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))
	// Output: hello from behind the proxy
}

// CONNECT through the proxy, as with golang.org/x/net/proxy.SOCKS5.
func ExampleDialer_DialContext() {
	proxy := socks5test.NewServer()
	defer proxy.Close()
	target, _ := net.Listen("tcp", "127.0.0.1:0")
	defer target.Close()
	go func() {
		c, err := target.Accept()
		if err == nil {
			io.WriteString(c, "hello")
			c.Close()
		}
	}()

	d, _ := socksbind.SOCKS5("tcp", proxy.Addr(), nil, nil)
	c, err := d.DialContext(context.Background(), "tcp", target.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	fmt.Println(string(b), c.RemoteAddr().String() == target.Addr().String())
	// Output: hello true
}

// The classic single-connection BIND: tell one peer where to connect, and
// take its one connection.
func ExampleListenConfig_Listen_once() {
	proxy := socks5test.NewServer()
	defer proxy.Close()
	d, _ := socksbind.SOCKS5("tcp", proxy.Addr(), nil, nil)

	lc := socksbind.ListenConfig{Dialer: d, Once: true}
	ln, err := lc.Listen(context.Background(), "tcp", ":0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	peer, _ := net.Dial("tcp", ln.Addr().String()) // the peer, told ln.Addr()
	defer peer.Close()
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(c.RemoteAddr().String() == peer.LocalAddr().String())
	// Output: true
}

// A multiplexed listener: one MBIND request to a proxy that has GOST's
// extension carries every peer, each as a stream of its own, so the
// listener never re-arms.
func ExampleListenConfig_Listen_multiplex() {
	proxy := socks5test.NewUnstartedServer()
	proxy.Multiplex = true // answer MBIND, as GOST v3 does
	proxy.Start()
	defer proxy.Close()
	d, _ := socksbind.SOCKS5("tcp", proxy.Addr(), nil, nil)

	lc := socksbind.ListenConfig{Dialer: d, Multiplex: socksbind.MultiplexOn}
	ln, err := lc.Listen(context.Background(), "tcp", ":0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	for i := range 3 {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Fprintf(peer, "hello from peer %d", i)
		peer.Close()
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		fmt.Println(string(b))
	}
	reqs := proxy.Requests()
	fmt.Println(len(reqs), "request:", reqs[0].Command)
	// Output:
	// hello from peer 0
	// hello from peer 1
	// hello from peer 2
	// 1 request: mbind
}

// A CONNECT the proxy's rules refuse. The error matches the sentinel of the
// reply code and the errno a C program would get for the same failure, and
// [errors.As] reads the code.
func ExampleReplyError() {
	proxy := socks5test.NewUnstartedServer()
	proxy.Rules = []socks5test.Rule{socks5test.RefusePort(25, socksbind.ReplyNotAllowed)}
	proxy.Start()
	defer proxy.Close()
	d, _ := socksbind.SOCKS5("tcp", proxy.Addr(), nil, nil)

	_, err := d.DialContext(context.Background(), "tcp", "mail.example:25")
	fmt.Println(errors.Is(err, socksbind.ErrNotAllowed), errors.Is(err, syscall.EACCES))
	var re *socksbind.ReplyError
	if errors.As(err, &re) {
		fmt.Printf("%v: %v (%#02x)\n", re.Command, re.Reply, byte(re.Reply))
	}
	// Output:
	// true true
	// connect: connection not allowed by ruleset (0x02)
}
