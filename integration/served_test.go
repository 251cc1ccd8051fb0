package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
	"github.com/socksbind/socksbind/internal/testkit"
	"github.com/socksbind/socksbind/socks5test"
)

// TestServedOf200 measures what each proxy gives a server: http.Serve
// behind a listener, and 200 requests from 4 concurrent clients, each on a
// new connection to the address the listener had at the start. It logs how many were answered; the README's table quotes it:
//
//	SOCKSBIND_INTEGRATION=require go test -run TestServedOf200 -v ./integration/
func TestServedOf200(t *testing.T) {
	leakcheck.Check(t)
	type setup struct {
		name    string
		dialer  func(t *testing.T) *socksbind.Dialer
		mux     socksbind.Multiplex
		fixed   bool
		minimum int // what the test insists on
	}
	inProcess := func(configure func(*socks5test.Server)) func(t *testing.T) *socksbind.Dialer {
		return func(t *testing.T) *socksbind.Dialer {
			return newDialer(t, testkit.Proxy(t, configure).Addr(), nil, nil)
		}
	}
	setups := []setup{
		{"Dante BIND, fixed port", func(t *testing.T) *socksbind.Dialer {
			return newDialer(t, startDante(t, DanteConfig{}).Addr, nil, nil)
		}, socksbind.MultiplexOff, true, 1},
		{"Dante BIND, port 0", func(t *testing.T) *socksbind.Dialer {
			return newDialer(t, startDante(t, DanteConfig{}).Addr, nil, nil)
		}, socksbind.MultiplexOff, false, 1},
		{"GOST BIND, fixed port", func(t *testing.T) *socksbind.Dialer {
			return newDialer(t, startGost(t, GostConfig{}).Addr, nil, nil)
		}, socksbind.MultiplexOff, true, 1},
		{"GOST MBIND", func(t *testing.T) *socksbind.Dialer {
			return newDialer(t, startGost(t, GostConfig{}).Addr, nil, nil)
		}, socksbind.MultiplexOn, false, 200},
		{"socks5test BindDante, fixed port", inProcess(func(*socks5test.Server) {}), socksbind.MultiplexOff, true, 1},
		{"socks5test BindReuse, fixed port", inProcess(func(s *socks5test.Server) { s.BindMode = socks5test.BindReuse }), socksbind.MultiplexOff, true, 1},
		{"socks5test Multiplex", inProcess(func(s *socks5test.Server) { s.Multiplex = true }), socksbind.MultiplexOn, false, 200},
	}
	var report []string
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			d := s.dialer(t)
			lc := socksbind.ListenConfig{Dialer: d, Multiplex: s.mux}
			var ln *socksbind.Listener
			if s.fixed {
				// Dante says a taken port with another port, GOST with code 1.
				ln, _ = listenFixedPort(t, lc, socksbind.ErrAddressInUse, socksbind.ErrGeneralFailure)
			} else {
				ln = listen(t, d, lc, ":0")
			}
			addr := ln.Addr().String()
			serveHTTP(t, ln)
			start := time.Now()
			failed, first := hammer(addr, 4, 200, false)
			served := 200 - int(failed)
			line := fmt.Sprintf("%-34s %3d of 200 in %v", s.name, served, time.Since(start).Round(time.Millisecond))
			if first != nil {
				line += fmt.Sprintf(" (first failure: %v)", first)
			}
			t.Log(line)
			report = append(report, line)
			assert.GreaterOrEqual(t, served, s.minimum)
		})
	}
	t.Logf("served of 200, 4 concurrent clients:\n%s", strings.Join(report, "\n"))
}
