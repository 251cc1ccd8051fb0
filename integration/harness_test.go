package integration

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/socksbind/socksbind/internal/testkit"
)

// envRequire names the environment variable that makes missing servers an
// error. With SOCKSBIND_INTEGRATION=require (set by CI) a test whose server is
// not installed fails; otherwise it is skipped with a message saying how to
// run it.
const envRequire = "SOCKSBIND_INTEGRATION"

// TestUser and TestPassword are the system account that Dante's username
// method checks; .ci/install-deps creates it.
const (
	TestUser     = "socksbindtest"
	TestPassword = "socksbind-pass"
)

const (
	// readyTimeout bounds how long a server may take to be ready: long
	// enough for a machine whose cores are busy (a server starved under
	// nice, beside a burst of another test, took over 10 s).
	readyTimeout = 30 * time.Second
	// stopTimeout bounds how long a server may take to exit after SIGTERM
	// before it is killed.
	stopTimeout = 3 * time.Second
	// startAttempts is how often a start is tried when the server exits
	// before it is ready or its port is another process's (the free port
	// may have been taken in between).
	startAttempts = 3
	// logTail is how much of a server's log a failed test prints.
	logTail = 64 << 10
)

const howToRun = "install dante-server, microsocks, tinyproxy, nginx and GOST " +
	"(sudo bash .ci/install-deps; where it cannot install GOST: " + gostInstall + "), " +
	"or set " + envRequire + "=require to fail instead of skipping"

// gostInstall is how to get GOST v3 where .ci/install-deps has no copy of it.
const gostInstall = "go install github.com/go-gost/gost/cmd/gost@latest"

// Server is a real proxy server process started for one test by startDante,
// startMicrosocks, startTinyproxy or startGost. The start functions return once the
// server answers; they must be called from the test's goroutine. The test's
// cleanup stops the server and every process it forked (SIGTERM, then SIGKILL)
// and, when the test failed, logs the server's captured output.
type Server struct {
	Name  string // "danted", "microsocks", "tinyproxy" or "gost"
	Addr  string // "127.0.0.1:PORT"
	Addr6 string // "[::1]:PORT" when the server also listens on IPv6, else ""
	Port  int

	cmd     *exec.Cmd
	pid     int
	logPath string
	exited  chan struct{} // closed once cmd.Wait has returned
	waitErr error         // cmd.Wait's result, valid after exited is closed
}

// DanteConfig selects the rules of a Dante server started by startDante.
type DanteConfig struct {
	// Username makes the server require RFC 1929 username/password
	// authentication, checked against the system user TestUser. It needs
	// the tests to run as root.
	Username bool
	// IPv6 makes the server also listen on ::1 (same port, see
	// Server.Addr6) and use ::1 as an external address.
	IPv6 bool
	// BlockBind refuses every BIND: reply 1 is 0x02.
	BlockBind bool
	// BlockBindReplyFrom, when set (e.g. "127.0.0.2/32"), refuses peers from
	// that source: reply 2 is 0x02 carrying the peer's address.
	BlockBindReplyFrom string
	// BlockConnectPort, when non-zero, refuses CONNECT to that port on any
	// host: the reply is 0x02.
	BlockConnectPort int
}

// GostConfig selects how startGost runs GOST. The zero value is a SOCKS5
// server with BIND and MBIND enabled and no authentication.
type GostConfig struct {
	// User, when not empty, makes the server require RFC 1929
	// username/password authentication with User and Password.
	User, Password string
	// NoBind leaves out bind=true: GOST then refuses BIND and MBIND with
	// reply 2 (not allowed).
	NoBind bool
	// Metadata adds options to the service URL's query, such as
	// {"comp": "true"} for GOST v2's MBIND without per-stream headers.
	Metadata map[string]string
}

// danteTemplateData fills testdata/danted.conf.tmpl.
type danteTemplateData struct {
	DanteConfig
	Port int
	Root bool
}

// requireMode reports whether missing servers must fail the test.
func requireMode() bool {
	return strings.EqualFold(strings.TrimSpace(os.Getenv(envRequire)), "require")
}

// unavailable skips the test, or fails it under SOCKSBIND_INTEGRATION=require,
// because something the test needs is not there.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if requireMode() {
		t.Fatalf("integration: %s (%s=require); sudo bash .ci/install-deps installs what the tests need",
			msg, envRequire)
	}
	t.Skipf("integration: %s; to run the integration tests %s", msg, howToRun)
}

// requireTools skips the test, or fails it under SOCKSBIND_INTEGRATION=require,
// unless every named program is found in PATH.
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	var missing []string
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		unavailable(t, "%s not found in PATH", strings.Join(missing, ", "))
	}
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago. It
// is taken below the kernel's ephemeral range, where no outgoing connection
// (of this process or another) can take it, or leave it in TIME_WAIT, before
// the test binds it: tests ask Dante for such ports by number.
func freePort(t testing.TB) int { return testkit.FreePortIn(t, 20000, 32000) }

// freePortBoth returns a TCP port that was free on both 127.0.0.1 and ::1.
func freePortBoth(t testing.TB) int {
	t.Helper()
	for range 20 {
		port := freePort(t)
		ln, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatalf("integration: no port free on both 127.0.0.1 and ::1")
	return 0
}

// startDante starts danted with the rules cfg selects, on a free loopback port.
func startDante(t testing.TB, cfg DanteConfig) *Server {
	t.Helper()
	requireTools(t, "danted")
	root := os.Geteuid() == 0
	if cfg.Username {
		if !root {
			unavailable(t, "Dante's username method needs the tests to run as root (it reads /etc/shadow)")
		}
		if _, err := user.Lookup(TestUser); err != nil {
			unavailable(t, "system user %s for Dante's username method is missing (%v)", TestUser, err)
		}
	}
	if cfg.IPv6 {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			unavailable(t, "IPv6 loopback ::1 is not usable: %v", err)
		}
		ln.Close()
	}
	dir := t.TempDir()
	tmpl := parseTemplate(t, "danted.conf.tmpl")
	return start(t, "danted", readiness{ipv6: cfg.IPv6, socks: true}, func(attempt int) (int, []string) {
		port := 0
		if cfg.IPv6 {
			port = freePortBoth(t)
		} else {
			port = freePort(t)
		}
		conf := filepath.Join(dir, fmt.Sprintf("danted-%d.conf", attempt))
		writeTemplate(t, tmpl, conf, danteTemplateData{DanteConfig: cfg, Port: port, Root: root})
		pidfile := filepath.Join(dir, fmt.Sprintf("danted-%d.pid", attempt))
		return port, []string{"-f", conf, "-p", pidfile}
	})
}

// startMicrosocks starts microsocks on a free loopback port. An empty user
// means no authentication; otherwise RFC 1929 with user and pass.
func startMicrosocks(t testing.TB, user, pass string) *Server {
	t.Helper()
	requireTools(t, "microsocks")
	return start(t, "microsocks", readiness{socks: true}, func(int) (int, []string) {
		port := freePort(t)
		args := []string{"-i", "127.0.0.1", "-p", strconv.Itoa(port)}
		if user != "" {
			args = append(args, "-u", user, "-P", pass)
		}
		return port, args
	})
}

// startTinyproxy starts tinyproxy as an HTTP CONNECT proxy on a free loopback
// port, allowing CONNECT to every port.
func startTinyproxy(t *testing.T) *Server {
	t.Helper()
	requireTools(t, "tinyproxy")
	dir := t.TempDir()
	tmpl := parseTemplate(t, "tinyproxy.conf.tmpl")
	return start(t, "tinyproxy", readiness{}, func(attempt int) (int, []string) {
		port := freePort(t)
		conf := filepath.Join(dir, fmt.Sprintf("tinyproxy-%d.conf", attempt))
		writeTemplate(t, tmpl, conf, struct{ Port int }{port})
		return port, []string{"-d", "-c", conf}
	})
}

// startGost starts GOST v3 as a SOCKS5 server on a free loopback port:
// gost -L "socks5://[USER:PASS@]127.0.0.1:PORT?bind=true&...".
func startGost(t testing.TB, cfg GostConfig) *Server {
	t.Helper()
	requireTools(t, "gost")
	return start(t, "gost", readiness{socks: true}, func(int) (int, []string) {
		port := freePort(t)
		return port, []string{"-L", gostURL(cfg, port)}
	})
}

// gostURL returns the service URL of a GOST started by startGost.
func gostURL(cfg GostConfig, port int) string {
	q := url.Values{}
	if !cfg.NoBind {
		q.Set("bind", "true")
	}
	for k, v := range cfg.Metadata {
		q.Set(k, v)
	}
	u := url.URL{
		Scheme:   "socks5",
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		RawQuery: q.Encode(),
	}
	if cfg.User != "" {
		u.User = url.UserPassword(cfg.User, cfg.Password)
	}
	return u.String()
}

func parseTemplate(t testing.TB, name string) *template.Template {
	t.Helper()
	tmpl, err := template.New(name).Option("missingkey=error").ParseFiles(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("integration: %v", err)
	}
	return tmpl
}

func writeTemplate(t testing.TB, tmpl *template.Template, path string, data any) {
	t.Helper()
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
		t.Fatalf("integration: %s: %v", tmpl.Name(), err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatalf("integration: %v", err)
	}
}

// readiness says what start waits for besides TCP connections on 127.0.0.1.
type readiness struct {
	ipv6  bool // TCP connections on ::1 as well
	socks bool // an answer to a SOCKS5 greeting on each address
}

// start runs the named program with the port and arguments setup returns for
// each attempt, until it is ready as r says. An attempt that exits before it is
// ready, or whose port turns out to be another process's, is retried with a
// new port; a server that never comes up fails the test with its log.
func start(t testing.TB, name string, r readiness, setup func(attempt int) (port int, args []string)) *Server {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, "%s not found in PATH", name)
	}
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		port, args := setup(attempt)
		s := &Server{
			Name:    name,
			Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Port:    port,
			logPath: filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, attempt)),
			exited:  make(chan struct{}),
		}
		if r.ipv6 {
			s.Addr6 = net.JoinHostPort("::1", strconv.Itoa(port))
		}
		began := time.Now()
		if err := s.run(path, args); err != nil {
			t.Fatalf("integration: start %s: %v", name, err)
		}
		err := s.waitReady(r.socks)
		if err == nil {
			t.Logf("integration: %s (pid %d) ready on %s after %v", name, s.pid, s.Addr,
				time.Since(began).Round(time.Millisecond))
			t.Cleanup(func() {
				if err := s.stop(); err != nil {
					t.Errorf("integration: stop %s: %v", name, err)
				}
				if t.Failed() {
					t.Logf("integration: %s log (%s):\n%s", name, s.logPath, s.logText())
				}
			})
			return s
		}
		stopErr := s.stop()
		if (errors.Is(err, errExited) || errors.Is(err, errPortTaken)) && stopErr == nil && attempt < startAttempts {
			t.Logf("integration: %s %v, retrying; log:\n%s", name, err, s.logText())
			continue
		}
		if stopErr != nil {
			t.Errorf("integration: stop %s: %v", name, stopErr)
		}
		t.Fatalf("integration: %s %s: %v; log (%s):\n%s", path, strings.Join(args, " "), err, s.logPath, s.logText())
	}
}

var (
	errExited    = errors.New("server exited")
	errPortTaken = errors.New("port taken by another process")
)

// run starts the process in its own process group, so that helpers it forks
// can be stopped with it, with stdout and stderr going to the log file.
func (s *Server) run(path string, args []string) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own copy
	s.cmd = exec.Command(path, args...)
	s.cmd.Stdout = logf
	s.cmd.Stderr = logf
	inOwnGroup(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.pid = s.cmd.Process.Pid
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	return nil
}

// waitReady polls the server's addresses with TCP connects until they accept,
// the process exits, or readyTimeout passes. With socks set it then waits for
// an answer to a SOCKS5 greeting on each address: Dante accepts connections
// well before it answers the first one (about 100 ms), and a test that bounds
// its own handshake should not pay for that. Dante logs each probe as
// "block(1): tcp/accept ]: ... eof from local client".
func (s *Server) waitReady(socks bool) error {
	addrs := []string{s.Addr}
	if s.Addr6 != "" {
		addrs = append(addrs, s.Addr6)
	}
	deadline := time.Now().Add(readyTimeout)
	for _, addr := range addrs {
		var err error
		exited := false
		testkit.PollEvery(pollInterval, time.Until(deadline), func() bool {
			if err = s.probe(addr, socks, deadline); err == nil || errors.Is(err, errPortTaken) {
				return true
			}
			select {
			case <-s.exited:
				exited = true
			default:
			}
			return exited
		})
		switch {
		case err == nil:
		case errors.Is(err, errPortTaken):
			return err
		case exited:
			return fmt.Errorf("%w before it was ready on %s: %v", errExited, addr, s.waitErr)
		default:
			return fmt.Errorf("not ready on %s after %v: %w", addr, readyTimeout, err)
		}
	}
	return nil
}

// probe connects to addr once, checks that the listener there is the
// server's, and with socks set greets it.
func (s *Server) probe(addr string, socks bool, deadline time.Time) error {
	c, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	// Another process may have taken the port between freePort and the
	// server's bind; then the server exits, but the probe may reach the other
	// process first.
	if !ownsListener(s.pid, s.Port) {
		return fmt.Errorf("%w: no process of %s (pid %d) listens on port %d", errPortTaken, s.Name, s.pid, s.Port)
	}
	if !socks {
		return nil
	}
	// A greeting that goes unanswered for a second is tried again on a new
	// connection, so that the loop notices when the server has exited.
	if d := time.Now().Add(time.Second); d.Before(deadline) {
		deadline = d
	}
	if err := greet(c, deadline); err != nil {
		return fmt.Errorf("SOCKS5 greeting: %w", err)
	}
	return nil
}

// greet sends a SOCKS5 greeting offering no authentication and reads the
// two-byte answer, whichever method the server picks.
func greet(c net.Conn, deadline time.Time) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := c.Write([]byte{0x05, 0x01, 0x00}); err != nil {
		return err
	}
	var ans [2]byte
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		return err
	}
	if ans[0] != 0x05 {
		return fmt.Errorf("answer %x is not SOCKS5", ans)
	}
	return nil
}

// ownsListener reports whether a process of the group pgid holds a TCP socket
// listening on port. Without /proc to look at, it reports true.
func ownsListener(pgid, port int) bool {
	addrs, ok := groupListeners(pgid, port)
	return !ok || len(addrs) > 0
}

// groupListeners returns the local addresses of the TCP sockets listening on
// port that processes of the group pgid hold. ok is false without /proc.
func groupListeners(pgid, port int) (addrs []netip.AddrPort, ok bool) {
	sockets, ok := listenSockets(port)
	if !ok {
		return nil, false
	}
	for _, pid := range liveGroupMembers(pgid) {
		dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(dir, fd.Name()))
			if err != nil {
				continue
			}
			inode, found := strings.CutPrefix(link, "socket:[")
			if a, ok := sockets[strings.TrimSuffix(inode, "]")]; found && ok {
				addrs = append(addrs, a)
			}
		}
	}
	return addrs, true
}

// listenSockets returns the TCP listeners on port, their local addresses by
// socket inode, from /proc/net/tcp and /proc/net/tcp6. ok is false when
// neither can be read.
func listenSockets(port int) (sockets map[string]netip.AddrPort, ok bool) {
	const stateListen = "0A"
	sockets = make(map[string]netip.AddrPort)
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		ok = true
		// "sl local_address rem_address st tx_queue:rx_queue tr:tm->when
		// retrnsmt uid timeout inode ...", local_address as HEXIP:HEXPORT.
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != stateListen {
				continue
			}
			host, hexPort, _ := strings.Cut(f[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil || int(p) != port {
				continue
			}
			sockets[f[9]] = netip.AddrPortFrom(procIP(host), uint16(p))
		}
	}
	return sockets, ok
}

// procIP decodes an address of /proc/net/tcp: the hex digits of each 32-bit
// word of the address in the machine's byte order, here little-endian. The
// zero Addr stands for one that cannot be decoded.
func procIP(h string) netip.Addr {
	b, err := hex.DecodeString(h)
	if err != nil || len(b)%4 != 0 {
		return netip.Addr{}
	}
	for i := 0; i < len(b); i += 4 {
		slices.Reverse(b[i : i+4])
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip.Unmap()
}

// stop ends the server: SIGTERM, then SIGKILL when it has not exited within
// stopTimeout, and likewise for whatever is left of its process group. It
// returns once the process has been reaped and no live process remains in the
// group.
func (s *Server) stop() error {
	if s.cmd == nil {
		return nil
	}
	pgid := s.pid // inOwnGroup: the group id is the leader's pid
	select {
	case <-s.exited:
	default:
		terminate(s.pid)
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			killGroup(pgid)
			<-s.exited
		}
	}
	// The leader is gone; helpers it forked (Dante's children) may still be
	// on their way out.
	if waitGroupGone(pgid, stopTimeout) {
		return nil
	}
	killGroup(pgid)
	if waitGroupGone(pgid, stopTimeout) {
		return nil
	}
	return fmt.Errorf("processes %v of group %d still alive after SIGKILL", liveGroupMembers(pgid), pgid)
}

// waitGroupGone polls until no live process is left in the process group, or
// the timeout passes.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	return testkit.PollEvery(pollInterval, timeout, func() bool { return len(liveGroupMembers(pgid)) == 0 })
}

// liveGroupMembers lists the processes of the group that are neither gone nor
// zombies. Zombies are left out: orphans are reaped by init, not by us, and
// hold no sockets.
func liveGroupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, group, ok := procStat(pid)
		if ok && group == pgid && state != 'Z' && state != 'X' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processAlive reports whether pid names a process that is neither gone nor a
// zombie.
func processAlive(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != 'Z' && state != 'X'
}

// procStat reads the state and process group of pid from /proc/PID/stat.
func procStat(pid int) (state byte, pgid int, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pgid, err = strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], pgid, true
}

// logText returns the server's captured output, its last logTail bytes when
// longer.
func (s *Server) logText() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	if len(b) > logTail {
		b = append([]byte("...\n"), b[len(b)-logTail:]...)
	}
	return string(b)
}
