// Command ftpactive is an FTP client in active mode through a SOCKS5 proxy,
// the use RFC 1928 gives for the BIND command: the control connection goes
// to the FTP server through the proxy with CONNECT, and for each data
// connection the proxy listens with a one-shot BIND that only the FTP server
// may connect to. PORT (or EPRT, RFC 2428) gives the server the address the
// proxy bound.
//
//	go run ./examples/ftpactive -proxy socks5://127.0.0.1:1080 -server 192.0.2.10 ls
//	go run ./examples/ftpactive -proxy socks5://127.0.0.1:1080 -server 192.0.2.10 -user alice get report.pdf
//	go run ./examples/ftpactive -h
//
// After each transfer it prints the size and the SHA-256 of the data that
// went through.
//
// The BIND request names the FTP server's IP as the expected peer, as RFC
// 1928 intends: Dante lets no other address connect, and the program checks
// the peer the proxy reports. That IP is the one the proxy reaches the server
// at: known when the server is given as an IP address, or when its name is
// resolved here (a socks5:// proxy URL); when the proxy resolves the name
// (socks5h://), -expect-peer must give it. A proxy that reads the field as
// the address to listen on instead (GOST does) needs -expect-peer 0.0.0.0,
// which lets any peer connect.
//
// The server must accept a data address that is the proxy's: most check that
// it is the address the control connection comes from, which holds when the
// proxy connects out and listens on the same address.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/proxyext"
)

const usage = `Usage: ftpactive [flags] COMMAND [ARG...]

An FTP client in active mode through a SOCKS5 proxy: the control connection
goes through the proxy with CONNECT, and for each data connection the proxy
listens with a one-shot BIND that only the FTP server may connect to.

Commands:
  ls [DIR]              list DIR, or the current directory
  get REMOTE [LOCAL]    download REMOTE into LOCAL (default: REMOTE's base name)
  put LOCAL [REMOTE]    upload LOCAL as REMOTE (default: LOCAL's base name)

After each transfer, the size and SHA-256 of the data are printed.

Flags:
`

func main() {
	log.SetFlags(0)
	log.SetPrefix("ftpactive: ")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
		fmt.Fprint(flag.CommandLine.Output(), "\nExample:\n  ftpactive -proxy socks5://127.0.0.1:1080 -server 192.0.2.10:21 -user alice get report.pdf\n")
	}
	proxyURL := flag.String("proxy", "", "SOCKS5 proxy `URL`, socks5://HOST:PORT or socks5h://HOST:PORT (default: $ALL_PROXY)")
	server := flag.String("server", "", "FTP server `HOST[:PORT]` (port 21 if none)")
	user := flag.String("user", "anonymous", "FTP user `name`")
	pass := flag.String("pass", "", "FTP `password` (default: $FTP_PASSWORD)")
	eprt := flag.Bool("eprt", false, "announce data addresses with EPRT (RFC 2428) instead of PORT; IPv6 always uses EPRT")
	expectPeer := flag.String("expect-peer", "", "`IP` the server's data connections come from (default: the server's IP); 0.0.0.0 or :: lets any peer connect")
	repeat := flag.Int("repeat", 1, "do the transfer `N` times in a row, each over a new BIND, and check that the SHA-256 stays the same")
	timeout := flag.Duration("timeout", 30*time.Second, "bound of each reply, of the wait for each data connection, and of a stalled transfer")
	verbose := flag.Bool("v", false, "show the control dialogue on stderr")
	flag.Parse()

	job, err := parseCommand(flag.Args())
	if err != nil {
		usageError(err)
	}
	if *server == "" {
		usageError(errors.New("-server is required"))
	}
	if *pass == "" {
		*pass = os.Getenv("FTP_PASSWORD")
	}
	if *repeat < 1 {
		usageError(errors.New("-repeat must be at least 1"))
	}
	opts := options{EPRT: *eprt, Timeout: *timeout}
	if *expectPeer != "" {
		if opts.ExpectPeer, err = netip.ParseAddr(*expectPeer); err != nil {
			usageError(fmt.Errorf("-expect-peer: %v", err))
		}
	}
	if *verbose {
		opts.Trace = os.Stderr
	}
	d, err := proxyDialer(*proxyURL)
	if err != nil {
		usageError(err)
	}

	if err := session(d, withDefaultPort(*server), opts, *user, *pass, job, *repeat); err != nil {
		fail(err)
	}
}

// session logs in to the server, does the job and logs out.
func session(d *socksbind.Dialer, server string, opts options, user, pass string, job command, repeat int) error {
	c, err := dial(context.Background(), d, server, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.login(user, pass); err != nil {
		return err
	}
	if err := job.run(c, repeat); err != nil {
		return err
	}
	return c.quit()
}

// A command is what the command line asks for.
type command struct {
	verb   string // "ls", "get" or "put"
	remote string
	local  string
}

func parseCommand(args []string) (command, error) {
	if len(args) == 0 {
		return command{}, errors.New("no command")
	}
	verb, args := args[0], args[1:]
	switch {
	case verb == "ls" && len(args) <= 1:
		cmd := command{verb: verb}
		if len(args) == 1 {
			cmd.remote = args[0]
		}
		return cmd, nil
	case verb == "get" && (len(args) == 1 || len(args) == 2):
		cmd := command{verb: verb, remote: args[0], local: path.Base(args[0])}
		if len(args) == 2 {
			cmd.local = args[1]
		}
		return cmd, nil
	case verb == "put" && (len(args) == 1 || len(args) == 2):
		cmd := command{verb: verb, local: args[0], remote: filepath.Base(args[0])}
		if len(args) == 2 {
			cmd.remote = args[1]
		}
		return cmd, nil
	case verb == "ls" || verb == "get" || verb == "put":
		return command{}, fmt.Errorf("%s: wrong number of arguments", verb)
	}
	return command{}, fmt.Errorf("unknown command %q", verb)
}

// run does the command n times over c, printing a line for each transfer
// of a file and failing when the SHA-256 of one differs from the first's.
func (cmd command) run(c *client, n int) error {
	var first []byte
	var total int64
	began := time.Now()
	for i := 1; i <= n; i++ {
		h := sha256.New()
		start := time.Now()
		size, err := cmd.once(c, h)
		if err != nil {
			if n > 1 {
				return fmt.Errorf("transfer %d of %d: %w", i, n, err)
			}
			return err
		}
		total += size
		sum := h.Sum(nil)
		if cmd.verb == "ls" {
			continue
		}
		fmt.Printf("%s %s: %d bytes in %v, sha256 %x\n", cmd.verb, cmd.remote, size,
			time.Since(start).Round(time.Millisecond), sum)
		if first == nil {
			first = sum
		} else if string(sum) != string(first) {
			return fmt.Errorf("transfer %d of %d: SHA-256 %x differs from the first transfer's %x", i, n, sum, first)
		}
	}
	if n > 1 {
		elapsed := time.Since(began)
		fmt.Printf("%d transfers, %d bytes in %v (%.1f MiB/s)\n", n, total,
			elapsed.Round(time.Millisecond), float64(total)/(1<<20)/elapsed.Seconds())
	}
	return nil
}

// once does the command once, writing the data that goes through to h too.
func (cmd command) once(c *client, h io.Writer) (int64, error) {
	switch cmd.verb {
	case "ls":
		return c.list(cmd.remote, io.MultiWriter(os.Stdout, h))
	case "get":
		f, err := os.Create(cmd.local)
		if err != nil {
			return 0, err
		}
		n, err := c.retrieve(cmd.remote, io.MultiWriter(f, h))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return n, err
	default: // put
		f, err := os.Open(cmd.local)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		return c.store(cmd.remote, io.TeeReader(f, h))
	}
}

// proxyDialer returns the SOCKS5 dialer of a proxy URL, or of ALL_PROXY when
// raw is empty. NO_PROXY does not apply: the FTP server is always reached
// through the proxy.
func proxyDialer(raw string) (*socksbind.Dialer, error) {
	const want = "socks5://HOST:PORT or socks5h://HOST:PORT"
	if raw == "" {
		d, err := proxyext.FromEnvironment()
		if err != nil {
			return nil, err
		}
		sd, ok := proxyext.SOCKS5Dialer(d)
		if !ok {
			if os.Getenv("ALL_PROXY") == "" && os.Getenv("all_proxy") == "" {
				return nil, fmt.Errorf("no proxy: set -proxy or ALL_PROXY to %s", want)
			}
			return nil, fmt.Errorf("ALL_PROXY (%v) is not a SOCKS5 proxy: active mode needs BIND; use -proxy %s", d, want)
		}
		return sd, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		// The text may hold a password: it is not repeated.
		return nil, fmt.Errorf("-proxy is not a URL: want %s", want)
	}
	if (u.Scheme != "socks5" && u.Scheme != "socks5h") || u.Host == "" {
		return nil, fmt.Errorf("-proxy %s: want %s (BIND is a SOCKS5 command)", proxyext.Redact(u), want)
	}
	d, err := proxyext.FromURL(u, nil)
	if err != nil {
		return nil, err
	}
	sd, ok := proxyext.SOCKS5Dialer(d)
	if !ok {
		return nil, fmt.Errorf("-proxy %s: not a SOCKS5 proxy", proxyext.Redact(u))
	}
	return sd, nil
}

// withDefaultPort adds FTP's port 21 to an address without one.
func withDefaultPort(address string) string {
	if _, _, err := net.SplitHostPort(address); err == nil {
		return address
	}
	if ip, err := netip.ParseAddr(address); err == nil {
		return netip.AddrPortFrom(ip, 21).String()
	}
	return net.JoinHostPort(address, "21")
}

// usageError reports a mistake on the command line and exits with status 2,
// as the flag package does.
func usageError(err error) {
	log.Printf("%v (ftpactive -h for help)", err)
	os.Exit(2)
}

// fail reports err, with a hint when the proxy turned the data connection
// away, and exits with status 1.
func fail(err error) {
	log.Print(err)
	var re *socksbind.ReplyError
	if errors.As(err, &re) && re.Command == socksbind.CmdBind && re.Addr != nil && errors.Is(err, socksbind.ErrNotAllowed) {
		log.Printf("the proxy turned away the data connection from %v: it lets only the expected peer connect; "+
			"if the server's data connections come from another address, name it with -expect-peer", re.Addr)
	}
	os.Exit(1)
}
