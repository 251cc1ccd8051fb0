// Command httpserve serves HTTP through a SOCKS5 proxy's BIND: the proxy
// listens, and an unchanged http.Serve answers what reaches it.
//
// With no flags it starts an in-process SOCKS5 server on loopback as the
// proxy, sends a few requests to the address the proxy bound, prints the
// answers and exits:
//
//	go run ./examples/httpserve
//
// With -proxy it uses a real SOCKS5 server and serves until interrupted:
//
//	go run ./examples/httpserve -proxy 127.0.0.1:1080 -listen :8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/socks5test"
)

func main() {
	proxyAddr := flag.String("proxy", "", "SOCKS5 server host:port (default: an in-process one)")
	listen := flag.String("listen", ":0", "BIND address: \":PORT\" for a fixed port, \":0\" for any")
	user := flag.String("user", "", "username for the proxy (password in $SOCKS5_PASSWORD)")
	requests := flag.Int("n", 3, "requests to send to the in-process setup before exiting")
	flag.Parse()
	log.SetFlags(0)

	embedded := *proxyAddr == ""
	if embedded {
		srv := socks5test.NewUnstartedServer()
		srv.BindMode = socks5test.BindReuse // keep the port from one connection to the next
		srv.Start()
		defer srv.Close()
		*proxyAddr = srv.Addr()
		fmt.Println("in-process SOCKS5 server on", srv.Addr())
	}
	var auth *proxy.Auth
	if *user != "" {
		auth = &proxy.Auth{User: *user, Password: os.Getenv("SOCKS5_PASSWORD")}
	}
	d, err := socksbind.SOCKS5("tcp", *proxyAddr, auth, nil)
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lc := socksbind.ListenConfig{Dialer: d, Armed: func(a net.Addr) { log.Println("listening again on", a) }}
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	fmt.Println("the proxy listens for us on", ln.Addr())

	served := make(chan error, 1)
	go func() {
		served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s, you reached %s through the proxy\n", r.RemoteAddr, r.Host)
		}))
	}()

	if !embedded {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, os.Interrupt)
		select {
		case <-stop:
		case err := <-served:
			log.Fatal(err)
		}
		return
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range *requests {
		resp, err := client.Get(fmt.Sprintf("http://%s/%d", ln.Addr(), i))
		if err != nil {
			log.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("GET /%d: %s %s", i, resp.Status, body)
	}
	ln.Close()
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		log.Fatal(err)
	}
}
