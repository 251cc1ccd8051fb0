package socksbind_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/socksbind/socksbind"
)

// TestUsernamePasswordNeverPrintsPassword prints credentials every way a
// program might, as a value, a pointer, inside a slice and inside a
// Dialer, and checks that the password never shows.
func TestUsernamePasswordNeverPrintsPassword(t *testing.T) {
	const pass = "hunter2-pw"
	up := socksbind.UsernamePassword{Username: "alice", Password: pass}
	d, err := socksbind.SOCKS5("tcp", "127.0.0.1:1080", &proxy.Auth{User: "alice", Password: pass}, nil)
	require.NoError(t, err)
	values := map[string]any{
		"value":          up,
		"pointer":        &up,
		"slice":          []socksbind.Authenticator{up, &up},
		"dialer":         d,
		"dialer value":   *d,
		"exported field": struct{ Auth socksbind.UsernamePassword }{up},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%t", "%10.3v", "%-20s", "%U"}
	for name, v := range values {
		t.Run(name, func(t *testing.T) {
			for _, verb := range verbs {
				assert.NotContains(t, fmt.Sprintf(verb, v), pass, verb)
			}
			assert.NotContains(t, fmt.Sprint(v), pass)
			assert.NotContains(t, fmt.Sprintln(v), pass)

			var buf bytes.Buffer
			log.New(&buf, "", 0).Print(v)
			slog.New(slog.NewJSONHandler(&buf, nil)).Info("creds", "auth", v)
			slog.New(slog.NewTextHandler(&buf, nil)).Info("creds", "auth", v)
			assert.NotContains(t, buf.String(), pass)
		})
	}

	assert.Equal(t, `username/password for "alice"`, up.String())
	assert.Equal(t, `socksbind.UsernamePassword{Username:"alice", Password:"xxxxx"}`, up.GoString())
	assert.Equal(t, `socksbind.UsernamePassword{Username:"bob", Password:""}`, socksbind.UsernamePassword{Username: "bob"}.GoString())
	b, err := json.Marshal(up)
	require.NoError(t, err)
	assert.JSONEq(t, `{"Username":"alice","Password":"xxxxx"}`, string(b))
	assert.Equal(t, `username/password for "a\nb"`, socksbind.UsernamePassword{Username: "a\nb"}.String(), "a username prints as an escaped literal")
}

func TestUsernamePasswordIsAnAuthenticator(t *testing.T) {
	up := socksbind.UsernamePassword{Username: "alice", Password: "pw"}
	for _, a := range []socksbind.Authenticator{up, &up} {
		assert.Equal(t, socksbind.AuthUsernamePassword, a.Method())
	}
	assert.ErrorContains(t, socksbind.UsernamePassword{}.Validate(), "username must be 1 to 255 bytes")
}
