package proxyext_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"

	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind/proxyext"
	"github.com/socksbind/socksbind/socks5test"
)

// A dialer from a proxy URL with credentials, as a program reads one from
// its configuration: the dialer authenticates as the URL's user.
func ExampleFromURL() {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer target.Close()
	go func() {
		c, err := target.Accept()
		if err == nil {
			io.WriteString(c, "hello from the target")
			c.Close()
		}
	}()
	srv := socks5test.NewUnstartedServer()
	srv.Users = map[string]string{"alice": "s3cret"}
	srv.Start()
	defer srv.Close()

	u, err := url.Parse(srv.URLWithUser("alice", "s3cret")) // socks5://alice:s3cret@127.0.0.1:PORT
	if err != nil {
		log.Fatal(err)
	}
	d, err := proxyext.FromURL(u, nil)
	if err != nil {
		log.Fatal(err)
	}
	c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", target.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	fmt.Println(string(b))
	fmt.Println("the proxy was asked by", srv.Requests()[0].User)
	// Output:
	// hello from the target
	// the proxy was asked by alice
}

// An http.Transport whose connections go through the proxy of ALL_PROXY.
// The test server resolves the made-up name app.example.test itself: with
// socks5h the name is sent to the proxy.
func ExampleFromEnvironment() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from the app")
	}))
	defer app.Close()
	srv := socks5test.NewUnstartedServer()
	srv.Hosts = map[string]netip.Addr{"app.example.test": netip.MustParseAddr("127.0.0.1")}

	srv.Start()
	defer srv.Close()
	os.Setenv("ALL_PROXY", "socks5h://"+srv.Addr())
	defer os.Unsetenv("ALL_PROXY")

	d, err := proxyext.FromEnvironment()
	if err != nil {
		log.Fatal(err)
	}
	tr := &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())
	resp, err := client.Get("http://app.example.test:" + port + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	req := srv.Requests()[0]
	fmt.Println("the proxy was asked for", req.Dst.Name)
	// Output:
	// hello from the app
	// the proxy was asked for app.example.test
}

// A server whose listener comes from the environment: through the proxy's
// BIND when ALL_PROXY names a SOCKS5 proxy, on this host when it is unset.
// The handler and http.Serve are the same either way. An empty host in the
// address (":0") means "any peer" to the proxy and "any interface" here.
func ExampleListen() {
	srv := socks5test.NewUnstartedServer()
	srv.BindMode = socks5test.BindReuse
	srv.Start()
	defer srv.Close()

	for _, env := range []struct{ name, allProxy string }{
		{"a SOCKS5 proxy", "socks5h://" + srv.Addr()},
		{"no proxy", ""},
	} {
		os.Setenv("ALL_PROXY", env.allProxy)

		ln, err := proxyext.Listen(context.Background(), "tcp", ":0")
		if err != nil {
			log.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			done <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, "hello")
			}))
		}()

		tr := &http.Transport{}
		resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		fmt.Printf("with %s: %s, from a %T\n", env.name, body, ln)
		ln.Close()
		<-done
	}
	os.Unsetenv("ALL_PROXY")
	// Output:
	// with a SOCKS5 proxy: hello, from a *socksbind.Listener
	// with no proxy: hello, from a *net.TCPListener
}
