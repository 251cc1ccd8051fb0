package wire

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file decides what a peer's bytes may become as text: a host name in
// an address, or a quotation in an error message.

// ValidName reports whether name may stand as a host name in a reply: 1 to
// 255 bytes, each an ASCII letter or digit, '-', '.' or '_'.
//
// That is the letter-digit-hyphen rule of RFC 952 and RFC 1123 with the dot
// between labels, plus the underscore that real names carry (SRV-style
// labels, some Windows hosts). An internationalized name travels in its
// ASCII form (IDNA, "xn--" labels), so it passes too. Everything else is
// refused: control bytes, spaces and bytes above 0x7E, which would land in
// Addr.String and in error messages as they are; ':' and '%', which would
// make the text read as an IPv6 address or a zone; '/', '@', '[' and ']',
// which mean something in a URL. The rule is about the bytes, not the
// structure: empty labels and label lengths are left to whoever resolves
// the name.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !NameByte(name[i]) {
			return false
		}
	}
	return true
}

// NameByte reports whether b may be in a host name, by the rule of
// [ValidName].
func NameByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '-' || b == '.' || b == '_'
}

// MaxQuoted is how many bytes of a peer's text Quote shows at most.
const MaxQuoted = 128

// Quote returns a peer's text (an HTTP status line, a reason phrase) for
// an error message: as a Go string literal, by the rules of
// [strconv.QuoteToASCII], so that control bytes, escape sequences and
// anything outside printable ASCII show as escapes and the text cannot pass
// for the message around it. Text longer than MaxQuoted bytes is cut there,
// and "..." follows the closing quote.
func Quote(s string) string {
	if len(s) > MaxQuoted {
		return strconv.QuoteToASCII(s[:MaxQuoted]) + "..."
	}
	return strconv.QuoteToASCII(s)
}

// Escape returns s with every byte or rune outside printable ASCII written
// as an escape of a Go string literal (\n, \x1b, \u00e9), and every other
// byte as it is. It is for a whole message that may quote a peer, such as
// the error of a TLS handshake naming a certificate's host names.
func Escape(s string) string {
	if printable(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
			i++
			continue
		}
		_, n := utf8.DecodeRuneInString(s[i:])
		q := strconv.QuoteToASCII(s[i : i+n])
		b.WriteString(q[1 : len(q)-1])
		i += n
	}
	return b.String()
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
