package socks5test_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/xtaci/smux"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
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
	fmt.Println(req.Command, req.Dst.Host(), req.User)
	// Output:
	// hello from the target
	// connect 127.0.0.1 alice
}

func ExampleServer_multiplex() {
	srv := socks5test.NewUnstartedServer()
	srv.Multiplex = true
	srv.Start()
	defer srv.Close()

	// MBIND by hand: a greeting offering no authentication, then the
	// request for 0.0.0.0:0, and reply 1 with the bound address.
	ctrl, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		panic(err)
	}
	defer ctrl.Close()
	ctrl.Write([]byte{5, 1, 0})
	if _, err := io.ReadFull(ctrl, make([]byte, 2)); err != nil {
		panic(err)
	}
	ctrl.Write([]byte{5, byte(socksbind.CmdMultiplexBind), 0, 1, 0, 0, 0, 0, 0, 0})
	reply := make([]byte, 10)
	if _, err := io.ReadFull(ctrl, reply); err != nil {
		panic(err)
	}
	bound := netip.AddrPortFrom(netip.AddrFrom4([4]byte(reply[4:8])), uint16(reply[8])<<8|uint16(reply[9]))

	// The control connection now carries an smux session, the client's
	// side of which is an smux server: every peer arrives as a stream.
	sess, err := smux.Server(ctrl, smux.DefaultConfig())
	if err != nil {
		panic(err)
	}
	defer sess.Close()
	for i := range 2 {
		peer, err := net.Dial("tcp", bound.String())
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(peer, "hello from peer %d", i)
		peer.Close()

		st, err := sess.AcceptStream()
		if err != nil {
			panic(err)
		}
		// Each stream begins with a SOCKS5 reply naming its peer.
		header := make([]byte, 10)
		if _, err := io.ReadFull(st, header); err != nil {
			panic(err)
		}
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte(header[4:8])), uint16(header[8])<<8|uint16(header[9]))
		b, err := io.ReadAll(st)
		if err != nil {
			panic(err)
		}
		st.Close()
		fmt.Printf("%x %v %q\n", header[:4], from.String() == peer.LocalAddr().String(), b)
	}
	// Output:
	// 05000001 true "hello from peer 0"
	// 05000001 true "hello from peer 1"
}
