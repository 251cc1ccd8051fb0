package socksbind_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"

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
