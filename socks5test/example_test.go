package socks5test_test

import (
	"fmt"
	"io"
	"net"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind/socks5test"
)

func ExampleServer() {
	// A target to reach through the proxy: it greets and closes.
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer target.Close()
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hello from the target"))
		c.Close()
	}()

	srv := socks5test.NewUnstartedServer()
	srv.Users = map[string]string{"alice": "secret"}
	srv.Start()
	defer srv.Close()

	d, err := proxy.SOCKS5("tcp", srv.Addr(), &proxy.Auth{User: "alice", Password: "secret"}, proxy.Direct)
	if err != nil {
		panic(err)
	}
	conn, err := d.Dial("tcp", target.Addr().String())
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	b, err := io.ReadAll(conn)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))

	req := srv.Requests()[0]
	fmt.Println(req.Command, req.Dst.Type(), req.User)
	// Output:
	// hello from the target
	// connect IPv4 alice
}
