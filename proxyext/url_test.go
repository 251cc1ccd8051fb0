package proxyext

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
)

// TestURLMisreadings gives proxy URLs that a URL parser reads other than
// their writer meant: each is an error that says what to do and shows no
// password, from FromURL and from the environment, and nothing is dialed.
func TestURLMisreadings(t *testing.T) {
	clearEnv(t)
	const pass = "hunter2"
	tests := []struct {
		raw     string
		wantErr string
	}{
		{"socks5h://user:" + pass + "/x@127.0.0.1:1080", "percent-encode"},
		{"socks5h://user:4711/" + pass + "@127.0.0.1:1080", "percent-encode"},
		{"socks5h://user:4711?" + pass + "@127.0.0.1:1080", "percent-encode"},
		{"socks5h://user:4711#" + pass + "@127.0.0.1:1080", "percent-encode"},
		{"socks5h://user:a/b?c#" + pass + "@127.0.0.1:1080", "percent-encode"},
		{"http://user:4711/" + pass + "@127.0.0.1:3128", "percent-encode"},
		{"https://user:" + pass + "#x@127.0.0.1", "percent-encode"},
		{"socks5h://user@127.0.0.1:1080/" + pass + "@x", "percent-encode"},
		{"socks5h://2001:db8::1:1080", "IPv6 address without brackets"},
		{"socks5h://fe80::1", "IPv6 address without brackets"},
		{"socks5h://user:" + pass + "@2001:db8::abcd", "IPv6 address without brackets"},
		{"http://::1:3128", "IPv6 address without brackets"},
		{"socks5h://[example.com]:1080", "brackets around something other than an IPv6 address"},
		{"socks5h://[127.0.0.1]:1080", "brackets around something other than an IPv6 address"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			t.Setenv("ALL_PROXY", tt.raw)
			_, err := FromEnvironment()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Contains(t, err.Error(), "ALL_PROXY=")
			assert.NotContains(t, err.Error(), pass)

			u, perr := url.Parse(tt.raw)
			if perr != nil {
				return // the caller's parse failed: nothing to hand FromURL
			}
			rec := newRecorder()
			d, err := FromURL(u, rec)
			require.Error(t, err, "FromURL accepted %v", d)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.NotContains(t, err.Error(), pass)
			assert.NotContains(t, fmt.Sprintf("%v %+v %#v %s %q", err, err, err, err, err), pass)
			assert.Empty(t, rec.Addresses())
		})
	}

	t.Run("still accepted", func(t *testing.T) {
		for _, raw := range []string{
			"socks5h://user:" + pass + "%2Fx@127.0.0.1:1080",
			"socks5h://user:p%40ss@127.0.0.1:1080/",
			"socks5h://user:p@ss@127.0.0.1:1080",
			"socks5h://[2001:db8::1]:1080",
			"socks5h://[fe80::1%25eth0]:1080",
			"socks5h://[::1]",
			"http://127.0.0.1:3128/?x=1",
		} {
			t.Setenv("ALL_PROXY", raw)
			d, err := FromEnvironment()
			require.NoError(t, err, raw)
			assert.NotContains(t, fmt.Sprintf("%v %+v %#v %s", d, d, d, d), pass, raw)
		}
	})
}

// TestBindQuery checks the bind parameter of a SOCKS5 URL.
func TestBindQuery(t *testing.T) {
	tests := []struct {
		query   string
		want    socksbind.Multiplex
		wantErr string
	}{
		{"", socksbind.MultiplexOff, ""},
		{"?bind=off", socksbind.MultiplexOff, ""},
		{"?bind=on", socksbind.MultiplexOn, ""},
		{"?bind=mux", socksbind.MultiplexOn, ""},
		{"?bind=auto", socksbind.MultiplexAuto, ""},
		{"?other=1&bind=mux", socksbind.MultiplexOn, ""},
		{"?other=1", socksbind.MultiplexOff, ""},
		{"?bind=auto&pipeline=1", socksbind.MultiplexAuto, ""},
		{"?bind=", 0, "invalid bind=: want bind=on (or bind=mux), bind=auto, or bind=off"},
		{"?bind=MUX", 0, "invalid bind=MUX"},
		{"?bind=yes", 0, "invalid bind=yes"},
		{"?bind=mux&bind=auto", 0, "bind given more than once"},
		{"?bind=%0a", 0, "invalid bind=%0A"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			pipeline := strings.Contains(tt.query, "pipeline=1")
			for _, scheme := range []string{"socks5", "socks5h"} {
				u := mustParse(t, scheme+"://user:"+secret+"@127.0.0.1:1080"+tt.query)
				d, err := FromURL(u, nil)
				if tt.wantErr != "" {
					require.Error(t, err)
					assert.Contains(t, err.Error(), tt.wantErr)
					assert.Contains(t, err.Error(), Redact(u), "the error names the URL, redacted")
					assertNoSecret(t, secret, err)
					continue
				}
				require.NoError(t, err)
				lc, ok := ListenConfig(d)
				require.True(t, ok)
				assert.Equal(t, tt.want, lc.Multiplex)
				sd, _ := SOCKS5Dialer(d)
				assert.Same(t, sd, lc.Dialer)
				assert.Equal(t, pipeline, lc.Dialer.Pipeline)
				assert.Equal(t, scheme == "socks5", lc.Dialer.ResolveLocally)
			}
			t.Setenv("ALL_PROXY", "socks5h://127.0.0.1:1080"+tt.query)
			env, err := FromEnvironment()
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			lc, ok := ListenConfig(env)
			require.True(t, ok)
			assert.Equal(t, tt.want, lc.Multiplex)
			assert.Equal(t, pipeline, lc.Dialer.Pipeline)
		})
	}
	// An HTTP proxy cannot listen: bind means nothing to it, like any
	// other parameter.
	d, err := FromURL(mustParse(t, "http://127.0.0.1:3128?bind=anything"), nil)
	require.NoError(t, err)
	_, ok := ListenConfig(d)
	assert.False(t, ok, "an HTTP proxy has no listen settings")
}

// TestListenConfigOther checks that ListenConfig reports false for the
// dialers that cannot listen: that of an http proxy from the environment,
// the direct one when ALL_PROXY is unset, and one of another package.
func TestListenConfigOther(t *testing.T) {
	t.Setenv("ALL_PROXY", "http://127.0.0.1:3128")
	d, err := FromEnvironment()
	require.NoError(t, err)
	_, ok := ListenConfig(d)
	assert.False(t, ok)

	t.Setenv("ALL_PROXY", "")
	d, err = FromEnvironment()
	require.NoError(t, err)
	_, ok = ListenConfig(d)
	assert.False(t, ok)

	_, ok = ListenConfig(proxy.Direct)
	assert.False(t, ok)
	_, ok = ListenConfig(nil)
	assert.False(t, ok)
}

// TestNothingPrintsCredentials prints the dialers and errors of this
// package with every common verb.
func TestNothingPrintsCredentials(t *testing.T) {
	clearEnv(t)
	var values []any
	for _, raw := range []string{
		"socks5h://user:" + secret + "@127.0.0.1:1080",
		"http://user:" + secret + "@127.0.0.1:3128",
		"https://user:" + secret + "@127.0.0.1:3128",
	} {
		d, err := FromURL(mustParse(t, raw), nil)
		require.NoError(t, err)
		t.Setenv("ALL_PROXY", raw)
		env, err := FromEnvironment()
		require.NoError(t, err)
		values = append(values, d, env)
		if sd, ok := SOCKS5Dialer(d); ok {
			values = append(values, sd, *sd)
		}
	}
	for _, raw := range []string{
		"socks5h://user:" + secret + "@127.0.0.1:0",
		"socks5h://user:" + secret + "%zz@127.0.0.1",
		"socks5h://user:" + secret + "/x@127.0.0.1:1080",
	} {
		t.Setenv("ALL_PROXY", raw)
		_, err := FromEnvironment()
		require.Error(t, err)
		values = append(values, err, errors.Unwrap(err))
		if u, perr := url.Parse(raw); perr == nil {
			_, err := FromURL(u, nil)
			require.Error(t, err)
			values = append(values, err)
		}
	}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			assert.NotContains(t, fmt.Sprintf(verb, v), secret, "%s of %T", verb, v)
		}
	}
	basic := "dXNlcjpzM2NyM3QtcHc=" // base64 of user:s3cr3t-pw
	for _, v := range values {
		assert.NotContains(t, fmt.Sprintf("%#v", v), basic, "%T", v)
	}
}

// TestPipelineQuery checks the pipeline parameter of a SOCKS5 URL.
func TestPipelineQuery(t *testing.T) {
	tests := []struct {
		query   string
		want    bool
		wantErr string
	}{
		{"", false, ""},
		{"?pipeline=1", true, ""},
		{"?pipeline=0", false, ""},
		{"?bind=mux&pipeline=1", true, ""},
		{"?pipeline=yes", false, "invalid pipeline=yes"},
		{"?pipeline=1&pipeline=1", false, "pipeline given more than once"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			u := mustParse(t, "socks5h://user:"+secret+"@127.0.0.1:1080"+tt.query)
			d, err := FromURL(u, nil)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assertNoSecret(t, secret, err)
				return
			}
			require.NoError(t, err)
			sd, ok := SOCKS5Dialer(d)
			require.True(t, ok)
			assert.Equal(t, tt.want, sd.Pipeline)
		})
	}
}
