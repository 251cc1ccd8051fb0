package proxyext

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// fuzzMarker is part of every fuzzed password: it must never show.
const fuzzMarker = "Qz7SECRETzQ7"

var fuzzSchemes = []string{"socks5", "socks5h", "http", "https", "SOCKS5H", "proxyexttest", "gopher"}

// FuzzProxyURL builds proxy URLs around a password that holds
// fuzzMarker, with the text before and after it, the user name, the host
// and what follows the host fuzzed, and reads each as ALL_PROXY and, when
// it parses, with FromURL. Nothing may panic, and the marker must not show
// in any error, in any String of a dialer, nor in any fmt verb of them.
func FuzzProxyURL(f *testing.F) {
	for _, seed := range []struct {
		scheme                      uint8
		user, pre, post, host, rest string
	}{
		{0, "user", "", "", "127.0.0.1:1080", ""},
		{1, "user", "", "/x", "127.0.0.1:1080", ""},
		{1, "user", "4711/", "", "127.0.0.1:1080", ""},
		{1, "user", "4711?", "", "127.0.0.1:1080", ""},
		{1, "user", "4711#", "", "127.0.0.1:1080", ""},
		{1, "user", "", "%zz", "127.0.0.1", ""},
		{1, "user", "", "", "2001:db8::1:1080", ""},
		{1, "user", "", "", "[fe80::1%25eth0]:1080", "?bind=mux"},
		{1, "user", "a@b", "", "127.0.0.1", "/@"},
		{2, "user", ":", "", "[::1", ""},
		{3, "us/er", "", "", "127.0.0.1:99999", ""},
		{4, "user", "\x00", "\r\n", "127.0.0.1", "#frag"},
		{5, "", "", "", "127.0.0.1", ""},
		{1, "user", "", "", "127.0.0.1", "?bind=%zz"},
		{1, "user", strings.Repeat("x", 300), "", "127.0.0.1", ""},
	} {
		f.Add(seed.scheme, seed.user, seed.pre, seed.post, seed.host, seed.rest)
	}
	f.Fuzz(func(t *testing.T, scheme uint8, user, pre, post, host, rest string) {
		for _, s := range []string{user, host, rest} {
			if strings.Contains(s, fuzzMarker) {
				t.Skip("the marker belongs in the password only")
			}
		}
		pass := pre + fuzzMarker + post
		raw := fuzzSchemes[int(scheme)%len(fuzzSchemes)] + "://" + user + ":" + pass + "@" + host + rest
		check := func(what string, v any) {
			if v == nil {
				return
			}
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
				if s := fmt.Sprintf(verb, v); strings.Contains(s, fuzzMarker) {
					t.Fatalf("%s of %q shows the password with %s: %s", what, raw, verb, s)
				}
			}
			if s, ok := v.(fmt.Stringer); ok && strings.Contains(s.String(), fuzzMarker) {
				t.Fatalf("%s of %q shows the password: %s", what, raw, s)
			}
		}

		env := map[string]string{"ALL_PROXY": raw}
		e, err := readEnvironmentFrom(func(k string) string { return env[k] }, nil)
		if err != nil {
			check("the environment's error", err)
		} else {
			check("the environment's dialer", e.dialer)
			if sd, ok := SOCKS5Dialer(e.dialer); ok {
				check("the SOCKS5 dialer", sd)
				check("the SOCKS5 dialer", *sd)
			}
		}

		u, perr := url.Parse(raw)
		if perr != nil {
			return
		}
		d, err := FromURL(u, nil)
		if err != nil {
			check("FromURL's error", err)
			return
		}
		if _, ok := d.(registeredDialer); ok {
			return // the test's own scheme keeps the URL as it is
		}
		check("FromURL's dialer", d)
		if sd, ok := SOCKS5Dialer(d); ok {
			check("the SOCKS5 dialer", sd)
		}
	})
}
