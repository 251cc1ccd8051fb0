// Command httpserve serves HTTP through a SOCKS5 proxy: the proxy listens,
// and an unchanged http.Serve answers what reaches it.
//
// With no flags it starts an in-process SOCKS5 server on loopback as the
// proxy (socks5test, with GOST's multiplexed BIND), sends a few requests at
// once to the address the proxy bound, prints the answers and exits:
//
//	go run ./examples/httpserve
//
// With -proxy it uses a real SOCKS5 server and serves until interrupted,
// saying what that proxy can and cannot do for a server:
//
//	go run ./examples/httpserve -proxy socks5h://127.0.0.1:1080 -listen :8080
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
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/proxyext"
	"github.com/socksbind/socksbind/socks5test"
)

func main() {
	proxyURL := flag.String("proxy", "", "SOCKS5 proxy URL, such as socks5h://127.0.0.1:1080 (default: an in-process one)")
	listen := flag.String("listen", ":18080", "BIND address: \":PORT\" for a fixed port, \":0\" for any port")
	var multiplex socksbind.Multiplex
	flag.TextVar(&multiplex, "mux", socksbind.MultiplexAuto, "multiplexed BIND: auto (when the proxy has it), on, or off;\nwithout -mux, the proxy URL's bind=on or bind=auto, if any")
	requests := flag.Int("n", 6, "requests to send, at once, to the in-process setup before exiting")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("httpserve: ")

	embedded := *proxyURL == ""
	if embedded {
		srv := socks5test.NewUnstartedServer()
		srv.Multiplex = true // answer GOST's multiplexed BIND
		srv.Start()
		defer srv.Close()
		*proxyURL = srv.URL
		fmt.Println("in-process SOCKS5 server on", srv.Addr())
	}
	lc, err := listenConfig(*proxyURL)
	if err != nil {
		log.Fatal(err)
	}
	if flagSet("mux") || lc.Multiplex == socksbind.MultiplexOff {
		lc.Multiplex = multiplex
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	moved := &moves{log: log.Default()}
	lc.Armed = moved.armed
	lc.Retrying = quietRetries()
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if embedded && errors.Is(err, socksbind.ErrAddressInUse) && !flagSet("listen") {
		fmt.Printf("port %s is taken on this machine; any port will do for the demonstration\n", strings.TrimPrefix(*listen, ":"))
		ln, err = lc.Listen(ctx, "tcp", ":0")
	}
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	moved.listening(ln.Addr())
	fmt.Println("the proxy listens for us on", ln.Addr())
	fmt.Println(capabilities(ln))

	served := make(chan error, 1)
	go func() {
		served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s, you reached %s through the proxy\n", r.RemoteAddr, r.Host)
		}))
	}()

	if !embedded {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
		select {
		case <-stop:
		case err := <-served:
			log.Fatal(err)
		}
		return
	}

	// Requests at once: a multiplexed listener takes them all.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	answers := make([]string, *requests)
	var wg sync.WaitGroup
	for i := range *requests {
		wg.Go(func() {
			resp, err := client.Get(fmt.Sprintf("http://%s/%d", ln.Addr(), i))
			if err != nil {
				answers[i] = err.Error() + "\n"
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				answers[i] = err.Error() + "\n"
				return
			}
			answers[i] = resp.Status + " " + string(body)
		})
	}
	wg.Wait()
	for i, a := range answers {
		fmt.Printf("GET /%d: %s", i, a)
	}
	ln.Close()
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		log.Fatal(err)
	}
}

// listenConfig returns the listen settings of a proxy URL (its dialer, and
// the multiplexing its bind= asks for); a bare host:port is taken for
// socks5h://host:port.
func listenConfig(raw string) (socksbind.ListenConfig, error) {
	if !strings.Contains(raw, "://") {
		raw = "socks5h://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return socksbind.ListenConfig{}, fmt.Errorf("-proxy: %v", err)
	}
	pd, err := proxyext.FromURL(u, nil)
	if err != nil {
		return socksbind.ListenConfig{}, err
	}
	lc, ok := proxyext.ListenConfig(pd)
	if !ok {
		return socksbind.ListenConfig{}, fmt.Errorf("-proxy %s: not a SOCKS5 proxy, which cannot listen", proxyext.Redact(u))
	}
	return lc, nil
}

// flagSet reports whether the flag name was given.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// capabilities says what the listener can do for a server.
func capabilities(ln *socksbind.Listener) string {
	if ln.Multiplexed() {
		return "the proxy has multiplexed BIND: any number of connections at once, at this one address"
	}
	return "the proxy has standard BIND only: one connection at a time (a peer arriving meanwhile is refused);\n" +
		"the listener re-arms after each. Behind Dante a fixed port is refused for about 60 s\n" +
		"after the server closes a connection first (the port sits in TIME_WAIT at the proxy)"
}

// moves logs the re-arms of a listener that land at another address than
// the one before: with port 0, the proxy may bind another port for the
// next connection. A re-arm at the same address is nothing to report.
type moves struct {
	log *log.Logger

	mu   sync.Mutex // guards last: armed runs on the listener's goroutine
	last string
}

// listening records the address Listen got.
func (m *moves) listening(a net.Addr) { m.swap(a) }

// armed is the listener's Armed callback.
func (m *moves) armed(a net.Addr) {
	if prev := m.swap(a); prev != "" && prev != a.String() {
		m.log.Printf("listening again on %v (was %s)", a, prev)
	}
}

// swap records a and returns the address recorded before, if any.
func (m *moves) swap(a net.Addr) (prev string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev, m.last = m.last, a.String()
	return prev
}

// quietRetries logs each distinct trouble the listener retries once, not
// at every attempt.
func quietRetries() func(error, time.Duration) {
	var last string
	return func(err error, wait time.Duration) {
		if msg := err.Error(); msg != last {
			last = msg
			log.Printf("%v (retrying, next in %v)", err, wait)
		}
	}
}
