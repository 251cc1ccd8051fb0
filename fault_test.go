package socksbind_test

// The fault suite: every message a proxy sends, at every stage of CONNECT,
// BIND and the HTTP CONNECT hop, sent wrong by a hostile proxy (cut at
// every byte, dripped, flooded, reset, withheld, with every reply code and
// address type). Each case must end in a typed error or in a connection
// that delivers every byte, within the caller's deadline, leaving no
// goroutine, descriptor or heap behind and no password in any error.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/hostile"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/wire"
	"github.com/socksbind/socksbind/proxyext"
)

// faultPassword is the password of every case; no error may show it.
const faultPassword = "hunter2-fault-pw"

// A faultStage is a message the proxy sends.
type faultStage int

const (
	stageGreeting faultStage = iota + 1
	stageAuth
	stageConnect
	stageBind1
	stageBind2
	stageHTTP
)

var allStages = []faultStage{stageGreeting, stageAuth, stageConnect, stageBind1, stageBind2, stageHTTP}

// String is the stage's name in the library's errors.
func (s faultStage) String() string {
	return string(s.wire())
}

// wire returns the stage the client's errors name.
func (s faultStage) wire() wire.Stage {
	return [...]wire.Stage{"", wire.StageGreeting, wire.StageAuth, wire.StageConnectReply,
		wire.StageBindReply1, wire.StageBindReply2, wire.StageHTTPConnect}[s]
}

// socksReply builds a SOCKS5 reply: version, code, reserved, address type
// and what follows it.
func socksReply(rep, atyp byte, rest ...byte) []byte {
	return append([]byte{5, rep, 0, atyp}, rest...)
}

// The addresses the hostile proxy reports.
var (
	boundAddr = netip.MustParseAddrPort("127.0.0.1:40000")
	peerAddr  = netip.MustParseAddrPort("127.0.0.1:50000")
)

func ipv4Reply(rep byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().As4()
	return socksReply(rep, 1, ip[0], ip[1], ip[2], ip[3], byte(ap.Port()>>8), byte(ap.Port()))
}

// goodReply is what the proxy sends at each stage when nothing is wrong.
func goodReply(s faultStage) []byte {
	switch s {
	case stageGreeting:
		return []byte{5, 2} // username/password
	case stageAuth:
		return []byte{1, 0}
	case stageConnect, stageBind1:
		return ipv4Reply(0, boundAddr)
	case stageBind2:
		return ipv4Reply(0, peerAddr)
	}
	return []byte("HTTP/1.1 200 Connection established\r\n\r\n")
}

// script is what the proxy plays for a client whose operation ends at
// last: the good reply at each stage but at, where fault replaces it.
// cue, if not nil, holds the second BIND reply back until the test closes
// it (after Listen returned).
func script(last, at faultStage, cue <-chan struct{}, fault ...hostile.Step) []hostile.Step {
	if last == stageHTTP {
		return append([]hostile.Step{hostile.ReadHTTPHead()}, fault...)
	}
	var steps []hostile.Step
	reply := func(s faultStage) {
		if s == at {
			steps = append(steps, fault...)
		} else {
			steps = append(steps, hostile.Write(goodReply(s)))
		}
	}
	steps = append(steps, hostile.ReadGreeting())
	reply(stageGreeting)
	steps = append(steps, hostile.ReadUserPass())
	reply(stageAuth)
	steps = append(steps, hostile.ReadRequest())
	if last == stageBind2 {
		reply(stageBind1)
		if cue != nil {
			steps = append(steps, hostile.Await(cue))
		}
		reply(stageBind2)
		return steps
	}
	reply(last)
	return steps
}

// lastStage is the stage whose reply ends the client's operation when the
// fault is at s.
func lastStage(s faultStage) faultStage {
	if s == stageGreeting || s == stageAuth {
		return stageConnect
	}
	return s
}

// faultDialer offers no authentication and username/password, so that the
// hostile proxy can pick either.
func faultDialer(addr string) *socksbind.Dialer {
	return &socksbind.Dialer{
		ProxyAddress: addr,
		Auth:         []socksbind.Authenticator{socksbind.NoAuth{}, &socksbind.UsernamePassword{Username: "alice", Password: faultPassword}},
	}
}

// faultResult is what the operation of a case returned.
type faultResult struct {
	conn net.Conn     // the connection, or the accepted one
	ln   net.Listener // the listener of a BIND stage
	err  error
}

// runOp runs the client's operation that ends at last against the proxy at
// addr, under ctx: CONNECT, Listen (BIND reply 1), Listen and Accept (BIND
// reply 2, with Once), or an HTTP CONNECT. cue is closed once Listen has
// returned, for a script that waits for it.
func runOp(ctx context.Context, t *testing.T, last faultStage, d *socksbind.Dialer, cue chan struct{}) faultResult {
	switch last {
	case stageBind1, stageBind2:
		lc := socksbind.ListenConfig{Dialer: d, Once: true}
		ln, err := lc.Listen(ctx, "tcp", ":0")
		if cue != nil {
			close(cue)
		}
		if err != nil {
			return faultResult{err: err}
		}
		if last == stageBind1 {
			return faultResult{ln: ln}
		}
		c, err := ln.AcceptContext(ctx)
		return faultResult{conn: c, ln: ln, err: err}
	case stageHTTP:
		u, err := url.Parse("http://" + d.ProxyAddress)
		require.NoError(t, err)
		hd, err := proxyext.FromURL(u, nil)
		require.NoError(t, err)
		c, err := hd.(proxy.ContextDialer).DialContext(ctx, "tcp", "127.0.0.1:9")
		return faultResult{conn: c, err: err}
	}
	c, err := d.DialContext(ctx, "tcp", "127.0.0.1:9")
	return faultResult{conn: c, err: err}
}

// A faultCase is one misbehaviour and what the client must make of it.
type faultCase struct {
	name  string
	at    faultStage
	fault []hostile.Step // what the proxy does instead of the good reply
	last  faultStage     // the stage that ends the operation; lastStage(at) when zero
	steps []hostile.Step // when not nil, the whole script instead

	timeout          time.Duration // the caller's deadline; 5 s when zero
	handshakeTimeout time.Duration // the Dialer's HandshakeTimeout

	// maxAlloc, when not zero, bounds the bytes the operation allocates;
	// such a case runs alone (not in parallel), as the count is the
	// process's.
	maxAlloc uint64

	// check judges the outcome; the suite has already checked that an
	// error is a *net.OpError and that the call returned in time.
	check func(t *testing.T, r faultResult)
}

// errorLog keeps the text of every error the suite produced, to check at
// the end that none shows the password.
type errorLog struct {
	mu   sync.Mutex
	text []string
}

func (l *errorLog) add(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.text = append(l.text, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
	for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
		l.text = append(l.text, e.Error())
	}
}

// suiteSlack is how long after the caller's deadline a call may return:
// generous, so that a loaded machine does not fail the suite.
const suiteSlack = 2 * time.Second

func (tc faultCase) run(t *testing.T, log *errorLog) {
	last := tc.last
	if last == 0 {
		last = lastStage(tc.at)
	}
	var cue chan struct{}
	if last == stageBind2 {
		cue = make(chan struct{})
	}
	steps := tc.steps
	if steps == nil {
		steps = script(last, tc.at, cue, tc.fault...)
	}
	srv := hostile.NewServer(steps...)
	t.Cleanup(srv.Close)
	d := faultDialer(srv.Addr())
	d.HandshakeTimeout = tc.handshakeTimeout
	timeout := tc.timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var before, after runtime.MemStats
	if tc.maxAlloc != 0 {
		runtime.GC()
		runtime.ReadMemStats(&before)
	}
	start := time.Now()
	r := runOp(ctx, t, last, d, cue)
	elapsed := time.Since(start)
	if tc.maxAlloc != 0 {
		runtime.ReadMemStats(&after)
		assert.Less(t, after.TotalAlloc-before.TotalAlloc, tc.maxAlloc, "bytes allocated")
	}
	if r.ln != nil {
		t.Cleanup(func() { r.ln.Close() })
	}
	if r.conn != nil {
		t.Cleanup(func() { r.conn.Close() })
	}
	assert.Less(t, elapsed, timeout+suiteSlack, "returned within the caller's deadline")
	if r.err != nil {
		log.add(r.err)
		var oe *net.OpError
		assert.ErrorAs(t, r.err, &oe, "%v (%T)", r.err, r.err)
	}
	tc.check(t, r)
}

// Checks.

func wantSuccess(t *testing.T, r faultResult) {
	t.Helper()
	require.NoError(t, r.err)
}

// wantData wants success and exactly data on the connection, then its end
// (the script must end with a Cut).
func wantData(data []byte) func(*testing.T, faultResult) {
	return func(t *testing.T, r faultResult) {
		require.NoError(t, r.err)
		r.conn.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(r.conn)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(data, got), "read %d bytes, want %d, equal prefix %d", len(got), len(data), commonPrefix(data, got))
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// wantErr wants an error matching every target.
func wantErr(targets ...error) func(*testing.T, faultResult) {
	return func(t *testing.T, r faultResult) {
		require.Error(t, r.err)
		for _, target := range targets {
			assert.ErrorIs(t, r.err, target)
		}
	}
}

// wantCut wants a reply cut short at stage s: io.ErrUnexpectedEOF, and the
// stage named.
func wantCut(s faultStage) func(*testing.T, faultResult) {
	return func(t *testing.T, r faultResult) {
		require.Error(t, r.err)
		assert.ErrorIs(t, r.err, io.ErrUnexpectedEOF)
		assert.Equal(t, s.wire(), wire.StageOf(r.err))
	}
}

// wantReply wants the failure reply rep, matching its sentinel.
func wantReply(rep byte) func(*testing.T, faultResult) {
	return func(t *testing.T, r faultResult) {
		if rep == 0 {
			require.NoError(t, r.err)
			return
		}
		require.Error(t, r.err)
		var re *socksbind.ReplyError
		require.ErrorAs(t, r.err, &re)
		assert.Equal(t, socksbind.Reply(rep), re.Reply)
		assert.ErrorIs(t, r.err, replySentinel(rep))
	}
}

func replySentinel(rep byte) error {
	if 1 <= rep && rep <= 8 {
		return []error{
			socksbind.ErrGeneralFailure, socksbind.ErrNotAllowed, socksbind.ErrNetworkUnreachable,
			socksbind.ErrHostUnreachable, socksbind.ErrConnectionRefused, socksbind.ErrTTLExpired,
			socksbind.ErrCommandNotSupported, socksbind.ErrAddressNotSupported,
		}[rep-1]
	}
	return socksbind.ErrGeneralFailure
}

// addrBody is what follows ATYP in a reply: a valid address for the three
// types of RFC 1928, and six bytes the client must never read otherwise.
func addrBody(atyp byte) []byte {
	switch atyp {
	case 1:
		return []byte{127, 0, 0, 1, 0x9c, 0x40}
	case 3:
		return append([]byte{12}, "example.test\x9c\x40"...)
	case 4:
		return append(netip.IPv6Loopback().AsSlice(), 0x9c, 0x40)
	}
	return make([]byte, 6)
}

// printableText fails the test if s holds a byte outside printable ASCII.
func printableText(t *testing.T, what, s string) {
	t.Helper()
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			t.Errorf("%s %q holds byte 0x%02x", what, s, s[i])
			return
		}
	}
}

// floodPrefix starts every flood: a byte that no reply can start with, so
// that a flood read as the next reply is malformed.
const floodPrefix = "FLOOD"

// flood returns the first n bytes of every flood.
func flood(n int) []byte {
	b := make([]byte, n)
	copy(b, floodPrefix)
	io.ReadFull(hostile.NewStream(1), b[len(floodPrefix):])
	return b
}

func floodStep() hostile.Step {
	return hostile.Flood(io.MultiReader(strings.NewReader(floodPrefix), hostile.NewStream(1)))
}

// faultGroup runs cases as parallel subtests, with one leak check and one
// heap check for the group.
func faultGroup(t *testing.T, log *errorLog, cases []faultCase) {
	t.Helper()
	leakcheck.Check(t)
	heapBefore := liveHeap()
	t.Cleanup(func() {
		growth := int64(liveHeap()) - int64(heapBefore)
		assert.Less(t, growth, int64(16<<20), "live heap grew by %d bytes", growth)
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.maxAlloc == 0 {
				t.Parallel()
			}
			tc.run(t, log)
		})
	}
}

func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestFault(t *testing.T) {
	log := &errorLog{}
	t.Cleanup(func() {
		log.mu.Lock()
		defer log.mu.Unlock()
		require.NotEmpty(t, log.text)
		for _, s := range log.text {
			if strings.Contains(s, faultPassword) {
				t.Errorf("an error shows the password: %s", s)
			}
		}
		t.Logf("%d error texts checked for the password", len(log.text))
	})

	t.Run("cut", func(t *testing.T) {
		var cases []faultCase
		for _, s := range allStages {
			replies := map[string][]byte{"": goodReply(s)}
			if s == stageConnect {
				replies["ipv6/"] = socksReply(0, 4, addrBody(4)...)
				replies["domain/"] = socksReply(0, 3, addrBody(3)...)
			}
			for kind, reply := range replies {
				for k := range reply {
					cases = append(cases, faultCase{
						name:  fmt.Sprintf("%v/%safter %d bytes", s, kind, k),
						at:    s,
						fault: []hostile.Step{hostile.Write(reply[:k]), hostile.Cut()},
						check: wantCut(s),
					})
				}
			}
		}
		faultGroup(t, log, cases)
	})

	t.Run("drip", func(t *testing.T) {
		// A byte every 100 ms: no reply is complete before 200 ms, so a
		// deadline of 100 ms ends every case, and a timer that fires late
		// on a loaded machine has 100 ms to spare.
		var cases []faultCase
		for _, s := range allStages {
			cases = append(cases, faultCase{
				name:    s.String(),
				at:      s,
				fault:   []hostile.Step{hostile.Drip(goodReply(s), 100*time.Millisecond)},
				timeout: 100 * time.Millisecond,
				check:   wantErr(context.DeadlineExceeded),
			}, faultCase{
				name:  s.String() + "/a byte a millisecond",
				at:    s,
				fault: []hostile.Step{hostile.Drip(goodReply(s), time.Millisecond)},
				check: wantSuccess,
			})
		}
		faultGroup(t, log, cases)
	})

	t.Run("silence", func(t *testing.T) {
		var cases []faultCase
		for _, s := range allStages {
			cases = append(cases, faultCase{
				name:    s.String(),
				at:      s,
				fault:   []hostile.Step{hostile.Silence()},
				timeout: 100 * time.Millisecond,
				check:   wantErr(context.DeadlineExceeded),
			})
			if s == stageBind2 || s == stageHTTP {
				continue // Accept has no handshake timeout; the HTTP hop's is proxyext's
			}
			cases = append(cases, faultCase{
				name:             s.String() + "/handshake timeout",
				at:               s,
				fault:            []hostile.Step{hostile.Silence()},
				timeout:          time.Minute,
				handshakeTimeout: 150 * time.Millisecond,
				check: func(t *testing.T, r faultResult) {
					require.Error(t, r.err)
					assert.ErrorIs(t, r.err, os.ErrDeadlineExceeded)
					assert.NotErrorIs(t, r.err, context.DeadlineExceeded)
					assert.Contains(t, r.err.Error(), "within 150ms")
				},
			})
		}
		faultGroup(t, log, cases)
	})

	t.Run("reset", func(t *testing.T) {
		var cases []faultCase
		for _, s := range allStages {
			cases = append(cases, faultCase{
				name:  s.String(),
				at:    s,
				fault: []hostile.Step{hostile.Reset()},
				check: wantErr(syscall.ECONNRESET),
			})
		}
		faultGroup(t, log, cases)
	})

	t.Run("reply code", func(t *testing.T) {
		var cases []faultCase
		for _, s := range []faultStage{stageConnect, stageBind1, stageBind2} {
			peer := boundAddr
			if s == stageBind2 {
				peer = peerAddr
			}
			for rep := 0; rep < 256; rep++ {
				cases = append(cases, faultCase{
					name:  fmt.Sprintf("%v/%d", s, rep),
					at:    s,
					fault: []hostile.Step{hostile.Write(ipv4Reply(byte(rep), peer))},
					check: wantReply(byte(rep)),
				})
			}
		}
		faultGroup(t, log, cases)
	})

	t.Run("address type", func(t *testing.T) {
		var cases []faultCase
		for _, s := range []faultStage{stageConnect, stageBind1, stageBind2} {
			for atyp := 0; atyp < 256; atyp++ {
				check := wantErr(socksbind.ErrProtocolViolation)
				if atyp == 1 || atyp == 3 || atyp == 4 {
					check = wantSuccess
				}
				cases = append(cases, faultCase{
					name:  fmt.Sprintf("%v/%d", s, atyp),
					at:    s,
					fault: []hostile.Step{hostile.Write(socksReply(0, byte(atyp), addrBody(byte(atyp))...))},
					check: check,
				})
			}
		}
		faultGroup(t, log, cases)
	})

	t.Run("name byte", func(t *testing.T) {
		// A domain name in a reply holding each byte value: only the
		// bytes of a host name pass, and no address prints another.
		var cases []faultCase
		for _, s := range []faultStage{stageConnect, stageBind1, stageBind2} {
			for b := 0; b < 256; b++ {
				name := []byte{'a', byte(b), 'z'}
				cases = append(cases, faultCase{
					name:  fmt.Sprintf("%v/0x%02x", s, b),
					at:    s,
					fault: []hostile.Step{hostile.Write(socksReply(0, 3, append(append([]byte{3}, name...), 0x9c, 0x40)...))},
					check: func(t *testing.T, r faultResult) {
						if !wire.ValidName(string(name)) {
							assert.ErrorIs(t, r.err, socksbind.ErrProtocolViolation)
							return
						}
						require.NoError(t, r.err)
						var addrs []net.Addr
						if r.conn != nil {
							addrs = append(addrs, r.conn.LocalAddr(), r.conn.RemoteAddr())
						}
						if r.ln != nil {
							addrs = append(addrs, r.ln.Addr())
						}
						for _, a := range addrs {
							printableText(t, "address", a.String())
						}
					},
				})
			}
		}
		faultGroup(t, log, cases)
	})

	t.Run("method", func(t *testing.T) {
		// Every method the proxy may pick: the two offered work, 0xFF
		// is a refusal, any other a violation.
		var cases []faultCase
		for m := 0; m < 256; m++ {
			steps := []hostile.Step{hostile.ReadGreeting(), hostile.Write([]byte{5, byte(m)})}
			var check func(*testing.T, faultResult)
			switch m {
			case 0:
				steps = append(steps, hostile.ReadRequest(), hostile.Write(goodReply(stageConnect)))
				check = wantSuccess
			case 2:
				steps = append(steps, hostile.ReadUserPass(), hostile.Write(goodReply(stageAuth)), hostile.ReadRequest(), hostile.Write(goodReply(stageConnect)))
				check = wantSuccess
			case 0xff:
				check = wantErr(socksbind.ErrNoAcceptableAuth)
			default:
				check = wantErr(socksbind.ErrProtocolViolation)
			}
			cases = append(cases, faultCase{name: fmt.Sprint(m), at: stageGreeting, steps: steps, check: check})
		}
		faultGroup(t, log, cases)
	})

	t.Run("auth status", func(t *testing.T) {
		var cases []faultCase
		for st := 0; st < 256; st++ {
			check := wantErr(socksbind.ErrAuthRejected)
			if st == 0 {
				check = wantSuccess
			}
			cases = append(cases, faultCase{
				name:  fmt.Sprint(st),
				at:    stageAuth,
				fault: []hostile.Step{hostile.Write([]byte{1, byte(st)})},
				check: check,
			})
		}
		faultGroup(t, log, cases)
	})

	t.Run("flood", func(t *testing.T) {
		// The good reply, then bytes without end. The client must read
		// no byte past the reply: a flood where the next reply belongs
		// is malformed, and the last reply hands every byte over.
		const n = 1 << 20
		want := flood(n)
		var cases []faultCase
		for _, s := range allStages {
			check := wantErr(socksbind.ErrProtocolViolation)
			switch s {
			case stageConnect, stageBind2, stageHTTP:
				got := make([]byte, n)
				check = func(t *testing.T, r faultResult) {
					require.NoError(t, r.err)
					r.conn.SetDeadline(time.Now().Add(10 * time.Second))
					_, err := io.ReadFull(r.conn, got)
					require.NoError(t, err)
					assert.True(t, bytes.Equal(want, got), "flood bytes differ from byte %d", commonPrefix(want, got))
				}
			case stageBind1:
				check = wantSuccess // the flood waits for Accept
			}
			cases = append(cases, faultCase{
				name:     s.String(),
				at:       s,
				fault:    []hostile.Step{hostile.Write(goodReply(s)), floodStep()},
				check:    check,
				maxAlloc: 1 << 20,
			})
		}
		// A second reply arriving with the first.
		cases = append(cases, faultCase{
			name: "BIND reply 1 and 2 in one write",
			last: stageBind2,
			steps: []hostile.Step{
				hostile.ReadGreeting(), hostile.Write(goodReply(stageGreeting)),
				hostile.ReadUserPass(), hostile.Write(goodReply(stageAuth)),
				hostile.ReadRequest(), hostile.Write(append(goodReply(stageBind1), goodReply(stageBind2)...)),
				floodStep(),
			},
			check:    cases[stageBind2-1].check,
			maxAlloc: 1 << 20,
		})
		faultGroup(t, log, cases)
	})

	t.Run("64 KiB with the reply", func(t *testing.T) {
		data := flood(64 << 10)
		var cases []faultCase
		for _, s := range []faultStage{stageConnect, stageBind2, stageHTTP} {
			cases = append(cases, faultCase{
				name:     s.String(),
				at:       s,
				fault:    []hostile.Step{hostile.Write(append(goodReply(s), data...)), hostile.Cut()},
				check:    wantData(data),
				maxAlloc: 1 << 20,
			})
		}
		faultGroup(t, log, cases)
	})
}
