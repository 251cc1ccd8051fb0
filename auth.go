package socksbind

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// An Authenticator is one SOCKS authentication method. A [Dialer] offers the
// methods of its Authenticators in order and runs the one the proxy picks.
// Implement it to plug in GSS-API or a private method.
type Authenticator interface {
	// Method is the method number offered in the greeting.
	Method() AuthMethod

	// Authenticate runs the method's sub-negotiation on rw, which is the
	// connection to the proxy. It must write each of its messages in one
	// Write and read no byte beyond its last reply. The connection's
	// deadline already follows ctx. A rejection should wrap
	// [ErrAuthRejected].
	Authenticate(ctx context.Context, rw io.ReadWriter) error
}

// NoAuth is the method "no authentication required".
type NoAuth struct{}

// Method returns [AuthNone].
func (NoAuth) Method() AuthMethod { return AuthNone }

// Authenticate does nothing: the method has no sub-negotiation.
func (NoAuth) Authenticate(context.Context, io.ReadWriter) error { return nil }

// UsernamePassword is the username/password method of RFC 1929. The
// username must be 1 to 255 bytes and the password at most 255; an empty
// password is sent as such, as real servers accept it.
//
// Both UsernamePassword and *UsernamePassword are Authenticators. However
// it is printed (String, GoString, the verbs of the fmt package, a log/slog
// attribute, encoding/json), it shows the username and never the password:
// JSON carries "xxxxx" in its place, so credentials are not stored or
// logged as JSON by way of this type.
type UsernamePassword struct {
	Username string
	Password string
}

var (
	_ Authenticator  = UsernamePassword{}
	_ fmt.Formatter  = UsernamePassword{}
	_ fmt.GoStringer = UsernamePassword{}
	_ slog.LogValuer = UsernamePassword{}
	_ json.Marshaler = UsernamePassword{}
)

// Method returns [AuthUsernamePassword].
func (UsernamePassword) Method() AuthMethod { return AuthUsernamePassword }

// Validate reports credentials that cannot be encoded.
func (up UsernamePassword) Validate() error {
	if len(up.Username) == 0 || len(up.Username) > 255 {
		return fmt.Errorf("username must be 1 to 255 bytes, not %d", len(up.Username))
	}
	if len(up.Password) > 255 {
		return fmt.Errorf("password must be at most 255 bytes, not %d", len(up.Password))
	}
	return nil
}

// String returns the method and the username, never the password.
func (up UsernamePassword) String() string {
	return "username/password for " + strconv.QuoteToASCII(up.Username)
}

// GoString returns Go syntax for up with the password, if any, replaced by
// "xxxxx": the form of %#v.
func (up UsernamePassword) GoString() string {
	pass := ""
	if up.Password != "" {
		pass = redacted
	}
	return fmt.Sprintf("socksbind.UsernamePassword{Username:%s, Password:%q}", strconv.QuoteToASCII(up.Username), pass)
}

// redacted stands for a password wherever one would be shown.
const redacted = "xxxxx"

// Format prints up for every verb of the fmt package: %#v as GoString,
// %q as String quoted, any other verb as String. Without it a verb such as
// %d or %x would print the fields, the password among them.
func (up UsernamePassword) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		io.WriteString(f, up.GoString())
	case verb == 'q':
		io.WriteString(f, strconv.Quote(up.String()))
	default:
		io.WriteString(f, up.String())
	}
}

// LogValue returns String, so that a log/slog handler logs no password.
func (up UsernamePassword) LogValue() slog.Value { return slog.StringValue(up.String()) }

// MarshalJSON encodes up with the password, if any, replaced by "xxxxx":
// log/slog's JSON handler encodes a struct holding credentials, such as a
// [Dialer], with encoding/json.
func (up UsernamePassword) MarshalJSON() ([]byte, error) {
	v := struct{ Username, Password string }{Username: up.Username}
	if up.Password != "" {
		v.Password = redacted
	}
	return json.Marshal(v)
}

// Authenticate sends the credentials and reads the status. Its errors never
// hold the password.
func (up UsernamePassword) Authenticate(_ context.Context, rw io.ReadWriter) error {
	if err := up.Validate(); err != nil {
		return err
	}
	if _, err := rw.Write(appendUserPass(make([]byte, 0, 3+len(up.Username)+len(up.Password)), up.Username, up.Password)); err != nil {
		return err
	}
	status, err := readUserPassStatus(rw)
	if err != nil {
		return err
	}
	if status != 0 {
		return fmt.Errorf("%w: username/password status %d", ErrAuthRejected, status)
	}
	return nil
}

// validator is implemented by an Authenticator that can check itself before
// anything is sent.
type validator interface{ Validate() error }

func validateAuth(auth []Authenticator) error {
	if len(auth) > 255 {
		return errors.New("more than 255 authentication methods")
	}
	for _, a := range auth {
		if v, ok := a.(validator); ok {
			if err := v.Validate(); err != nil {
				return err
			}
		}
	}
	return nil
}
