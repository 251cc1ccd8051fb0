package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
)

// setEnv makes vars the whole proxy environment of the test.
func setEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, name := range []string{"ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"} {
		t.Setenv(name, vars[name])
	}
}

func TestParseArgs(t *testing.T) {
	const proxy = "socks5://127.0.0.1:1080"
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		network string
		listen  string
		port    int
		target  string
		mux     socksbind.Multiplex
		proxy   string
	}{
		{"Defaults", []string{"-proxy", proxy, "-to", "127.0.0.1:3000"}, nil,
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexAuto, proxy},
		{"FixedPort", []string{"-proxy", proxy, "-listen", ":8080", "-to", "localhost:3000"}, nil,
			"tcp", ":8080", 8080, "localhost:3000", socksbind.MultiplexAuto, proxy},
		{"IPv4", []string{"-proxy", proxy, "-listen", "0.0.0.0:8080", "-to", "127.0.0.1:3000"}, nil,
			"tcp4", ":8080", 8080, "127.0.0.1:3000", socksbind.MultiplexAuto, proxy},
		{"IPv6", []string{"-proxy", proxy, "-listen", "[::]:0", "-to", "[::1]:3000"}, nil,
			"tcp6", ":0", 0, "[::1]:3000", socksbind.MultiplexAuto, proxy},
		{"MuxOff", []string{"-proxy", proxy, "-to", "127.0.0.1:3000", "-mux", "off"}, nil,
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexOff, proxy},
		{"MuxOn", []string{"-proxy", proxy, "-to", "127.0.0.1:3000", "-mux", "on"}, nil,
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexOn, proxy},
		{"URLBindMux", []string{"-proxy", proxy + "?bind=mux", "-to", "127.0.0.1:3000"}, nil,
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexOn, proxy + "?bind=mux"},
		{"URLBindOn", []string{"-proxy", proxy + "?bind=on", "-to", "127.0.0.1:3000"}, nil,
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexOn, proxy + "?bind=on"},
		{"URLBindAuto", []string{"-proxy", proxy + "?bind=auto", "-to", "127.0.0.1:3000"}, nil,
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexAuto, proxy + "?bind=auto"},
		{"MuxOverURLWithoutBind", []string{"-proxy", proxy + "?pipeline=1", "-mux", "on", "-to", "127.0.0.1:3000"}, nil,
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexOn, proxy + "?pipeline=1"},
		{"URLBindAgrees", []string{"-proxy", proxy + "?bind=auto", "-mux", "auto", "-to", "127.0.0.1:3000"}, nil,
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexAuto, proxy + "?bind=auto"},
		{"ALL_PROXY", []string{"-to", "127.0.0.1:3000"}, map[string]string{"ALL_PROXY": "socks5h://u:secret@127.0.0.1:1080"},
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexAuto, "socks5h://u:xxxxx@127.0.0.1:1080"},
		{"all_proxy", []string{"-to", "127.0.0.1:3000"}, map[string]string{"all_proxy": "socks5://127.0.0.1:1081?bind=mux"},
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexOn, "socks5://127.0.0.1:1081?bind=mux"},
		{"UpperCaseWins", []string{"-to", "127.0.0.1:3000"}, map[string]string{"ALL_PROXY": proxy, "all_proxy": "http://127.0.0.1:3128"},
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexAuto, proxy},
		{"FlagBeatsEnvironment", []string{"-proxy", proxy, "-to", "127.0.0.1:3000"}, map[string]string{"ALL_PROXY": "http://127.0.0.1:3128"},
			"tcp", ":0", 0, "127.0.0.1:3000", socksbind.MultiplexAuto, proxy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			cfg, err := parseArgs(tt.args, &bytes.Buffer{})
			require.NoError(t, err)
			require.Len(t, cfg.tunnels, 1)
			assert.Equal(t, tunnelSpec{network: tt.network, listen: tt.listen, port: tt.port, target: tt.target}, cfg.tunnels[0])
			assert.Equal(t, tt.mux, cfg.mux)
			assert.Equal(t, tt.proxy, cfg.proxy)
			assert.NotNil(t, cfg.dialer)
			assert.Equal(t, 5*time.Second, cfg.grace)
			assert.Equal(t, 5*time.Second, cfg.dialTimeout)
		})
	}

	t.Run("Options", func(t *testing.T) {
		cfg, err := parseArgs([]string{"-proxy", proxy, "-to", "127.0.0.1:3000", "-advertise", "192.0.2.7",
			"-retry-limit", "1m", "-dial-timeout", "2s", "-grace", "0s"}, &bytes.Buffer{})
		require.NoError(t, err)
		assert.Equal(t, netip.MustParseAddr("192.0.2.7"), cfg.advertise)
		assert.Equal(t, time.Minute, cfg.retryLimit)
		assert.Equal(t, 2*time.Second, cfg.dialTimeout)
		assert.Zero(t, cfg.grace)
		assert.Equal(t, proxyProtocolNone, cfg.proxyProtocol)
		assert.Empty(t, cfg.status)
		assert.False(t, cfg.logJSON)
	})

	t.Run("Tunnels", func(t *testing.T) {
		cfg, err := parseArgs([]string{"-proxy", proxy, "-tunnel", ":8080=127.0.0.1:3000", "-tunnel", "2222=localhost:22",
			"-tunnel", "[::]:0=[::1]:9000", "-tunnel", ":0=127.0.0.1:9000", "-proxy-protocol", "v2",
			"-status", "127.0.0.1:9100", "-log", "json"}, &bytes.Buffer{})
		require.NoError(t, err)
		assert.Equal(t, []tunnelSpec{
			{"tcp", ":8080", 8080, "127.0.0.1:3000"},
			{"tcp", ":2222", 2222, "localhost:22"},
			{"tcp6", ":0", 0, "[::1]:9000"},
			{"tcp", ":0", 0, "127.0.0.1:9000"},
		}, cfg.tunnels)
		assert.Equal(t, proxyProtocolV2, cfg.proxyProtocol)
		assert.Equal(t, "127.0.0.1:9100", cfg.status)
		assert.True(t, cfg.logJSON)
	})
}

// TestParseArgsMisconfigured checks that every mistake gets an error that
// says what is wrong, and that none shows the password.
func TestParseArgsMisconfigured(t *testing.T) {
	const (
		secret = "s3cr3t-pass"
		proxy  = "socks5://alice:" + secret + "@127.0.0.1:1080"
		to     = "127.0.0.1:3000"
	)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"NoProxy", []string{"-to", to}, nil, "no proxy: give -proxy socks5://HOST:PORT or socks5h://HOST:PORT, or set ALL_PROXY"},
		{"HTTPProxy", []string{"-proxy", "http://alice:" + secret + "@127.0.0.1:3128", "-to", to}, nil,
			"-proxy http://alice:xxxxx@127.0.0.1:3128 cannot listen: expose needs a SOCKS5 proxy, socks5://HOST:PORT or socks5h://HOST:PORT"},
		{"HTTPSFromEnvironment", []string{"-to", to}, map[string]string{"ALL_PROXY": "https://alice:" + secret + "@127.0.0.1:3128"},
			"https://alice:xxxxx@127.0.0.1:3128 (from ALL_PROXY) cannot listen: expose needs a SOCKS5 proxy"},
		{"SOCKS4", []string{"-proxy", "socks4://alice:" + secret + "@127.0.0.1:1080", "-to", to}, nil,
			`proxyext: socks4://alice:xxxxx@127.0.0.1:1080: SOCKS4 is not supported, only SOCKS5`},
		{"OtherScheme", []string{"-proxy", "gopher://alice:" + secret + "@127.0.0.1:1080", "-to", to}, nil,
			`proxyext: gopher://alice:xxxxx@127.0.0.1:1080: proxy: unknown scheme: gopher`},
		{"NotAURL", []string{"-proxy", "alice:" + secret + "@127.0.0.1:1080", "-to", to}, nil,
			"-proxy is not a proxy URL: want socks5://HOST:PORT or socks5h://HOST:PORT"},
		{"HostPortOnly", []string{"-proxy", "127.0.0.1:1080", "-to", to}, nil, "-proxy is not a proxy URL"},
		{"BadEnvironment", []string{"-to", to}, map[string]string{"ALL_PROXY": "alice:" + secret + "@127.0.0.1:1080"},
			"proxyext: ALL_PROXY=alice:xxxxx@127.0.0.1:1080: not a proxy URL"},
		{"BadEnvironmentLowerCase", []string{"-to", to}, map[string]string{"all_proxy": "socks5h://alice:" + secret + "@127.0.0.1:1080?bind=yes"},
			"proxyext: all_proxy=socks5h://alice:xxxxx@127.0.0.1:1080?bind=yes: invalid bind=yes"},
		{"BadBind", []string{"-proxy", proxy + "?bind=yes", "-to", to}, nil, "invalid bind=yes"},
		{"MuxContradictsURL", []string{"-proxy", proxy + "?bind=mux", "-mux", "off", "-to", to}, nil,
			"-mux off contradicts bind=on in the proxy URL"},
		{"MuxContradictsEnvironment", []string{"-mux", "on", "-to", to}, map[string]string{"ALL_PROXY": proxy + "?bind=auto"},
			"-mux on contradicts bind=auto in the proxy URL"},
		{"NoTarget", []string{"-proxy", proxy}, nil, "no service to publish: give -tunnel LISTEN=TO"},
		{"ListenWithoutTo", []string{"-proxy", proxy, "-listen", ":8080"}, nil, "no service to publish"},
		{"TunnelAndTo", []string{"-proxy", proxy, "-tunnel", ":1=" + to, "-to", to}, nil, "give either -tunnel LISTEN=TO (repeated) or -listen and -to, not both"},
		{"TunnelNoEquals", []string{"-proxy", proxy, "-tunnel", ":8080"}, nil, `-tunnel ":8080": want LISTEN=TO`},
		{"TunnelBadTarget", []string{"-proxy", proxy, "-tunnel", ":8080=3000"}, nil, `TO "3000": want HOST:PORT`},
		{"TunnelHost", []string{"-proxy", proxy, "-tunnel", "10.0.0.1:80=" + to}, nil, `LISTEN "10.0.0.1:80": give the port alone, :80`},
		{"TunnelTwice", []string{"-proxy", proxy, "-tunnel", ":0=" + to, "-tunnel", ":0=" + to}, nil, "-tunnel :0=" + to + " given twice"},
		{"TunnelSamePort", []string{"-proxy", proxy, "-tunnel", ":80=" + to, "-tunnel", ":80=127.0.0.1:1"}, nil, "port 80 is asked for by another tunnel"},
		{"ProxyProtocol", []string{"-proxy", proxy, "-to", to, "-proxy-protocol", "v3"}, nil, `-proxy-protocol "v3": want v1 or v2`},
		{"Status", []string{"-proxy", proxy, "-to", to, "-status", "9100"}, nil, `-status "9100": want HOST:PORT`},
		{"LogFormat", []string{"-proxy", proxy, "-to", to, "-log", "xml"}, nil, `-log "xml": want text or json`},
		{"TargetWithoutPort", []string{"-proxy", proxy, "-to", "127.0.0.1"}, nil, `-to "127.0.0.1": want HOST:PORT`},
		{"TargetPortZero", []string{"-proxy", proxy, "-to", "127.0.0.1:0"}, nil, `-to "127.0.0.1:0": want HOST:PORT`},
		{"TargetPortTooBig", []string{"-proxy", proxy, "-to", "127.0.0.1:65536"}, nil, `-to "127.0.0.1:65536": want HOST:PORT`},
		{"ListenNoColon", []string{"-proxy", proxy, "-to", to, "-listen", "80:80"}, nil, `-listen "80:80": give the port alone`},
		{"ListenBadPort", []string{"-proxy", proxy, "-to", to, "-listen", ":http"}, nil, `-listen ":http": want :PORT`},
		{"ListenHost", []string{"-proxy", proxy, "-to", to, "-listen", "127.0.0.1:8080"}, nil,
			`-listen "127.0.0.1:8080": give the port alone, :8080`},
		{"BadAdvertise", []string{"-proxy", proxy, "-to", to, "-advertise", "proxy.example"}, nil, `-advertise "proxy.example": not an IP address`},
		{"NegativeGrace", []string{"-proxy", proxy, "-to", to, "-grace", "-1s"}, nil, "-grace must not be negative"},
		{"ZeroDialTimeout", []string{"-proxy", proxy, "-to", to, "-dial-timeout", "0s"}, nil, "-dial-timeout must be positive"},
		{"NegativeRetryLimit", []string{"-proxy", proxy, "-to", to, "-retry-limit", "-1s"}, nil, "-retry-limit must not be negative"},
		{"Argument", []string{"-proxy", proxy, "-to", to, "extra"}, nil, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			setEnv(t, tt.env)
			_, err := parseArgs(tt.args, &out)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), secret)
			assert.Empty(t, out.String(), "only the flag package's own errors print the usage")
		})
	}

	t.Run("FlagSyntax", func(t *testing.T) {
		var out bytes.Buffer
		_, err := parseArgs([]string{"-grace", "soon"}, &out)
		var bad badFlags
		require.ErrorAs(t, err, &bad)
		assert.Contains(t, out.String(), `invalid value "soon" for flag -grace`)
		assert.Contains(t, out.String(), "Usage: expose")
	})

	t.Run("UnknownMux", func(t *testing.T) {
		var out bytes.Buffer
		_, err := parseArgs([]string{"-proxy", proxy, "-mux", "yes", "-to", to}, &out)
		var bad badFlags
		require.ErrorAs(t, err, &bad)
		assert.Contains(t, out.String(), `invalid value "yes" for flag -mux: socksbind: unknown multiplex mode "yes": want off, on or auto`)
	})

	t.Run("Help", func(t *testing.T) {
		var out bytes.Buffer
		_, err := parseArgs([]string{"-h"}, &out)
		assert.True(t, errors.Is(err, flag.ErrHelp))
		assert.Contains(t, out.String(), "Usage: expose -tunnel LISTEN=TO")
		assert.Contains(t, out.String(), "-grace duration")
	})
}

func TestLogFormats(t *testing.T) {
	var text, js bytes.Buffer
	newLogger(&text, false).Info("reachable", "listen", ":8080", "addr", "127.0.0.1:8080")
	assert.Regexp(t, `^time=\S+ level=INFO msg=reachable listen=:8080 addr=127.0.0.1:8080\n$`, text.String())
	newLogger(&js, true).Info("reachable", "listen", ":8080", "addr", "127.0.0.1:8080")
	var rec map[string]any
	require.NoError(t, json.Unmarshal(js.Bytes(), &rec))
	assert.Equal(t, "reachable", rec["msg"])
	assert.Equal(t, ":8080", rec["listen"])
	assert.Equal(t, "INFO", rec["level"])
}

func TestExplain(t *testing.T) {
	cfg := config{mux: socksbind.MultiplexOn}
	spec := tunnelSpec{port: 8080}
	err := errors.Join(errors.New("socks bind"), socksbind.ErrCommandNotSupported)
	assert.Contains(t, explain(err, cfg, spec), "the proxy has no multiplexed BIND: use -mux auto or -mux off")
	cfg.mux = socksbind.MultiplexAuto
	assert.NotContains(t, explain(err, cfg, spec), "-mux")
	assert.Contains(t, explain(socksbind.ErrAddressInUse, cfg, spec), "port 8080 is taken at the proxy")
	assert.Contains(t, explain(socksbind.ErrNotAllowed, cfg, spec), "rules forbid BIND")
}
