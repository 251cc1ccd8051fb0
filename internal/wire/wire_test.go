package wire

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValidName(t *testing.T) {
	for _, name := range []string{"a", "example.com", "example.com.", "xn--bcher-kva.example", "_sip._tcp.example", "host-1", "127.0.0.1", strings.Repeat("a", 255)} {
		assert.True(t, ValidName(name), name)
	}
	for _, name := range []string{"", "a b", "a:b", "[::1]", "b\u00fccher.example", "a\x00", "a%25eth0", "user@host", "a/b", strings.Repeat("a", 256)} {
		assert.False(t, ValidName(name), name)
	}
}

func TestQuote(t *testing.T) {
	assert.Equal(t, `"Forbidden"`, Quote("Forbidden"))
	assert.Equal(t, `"a\r\nb\x1b[31m\u00e9\xff"`, Quote("a\r\nb\x1b[31m\u00e9\xff"))
	long := Quote(strings.Repeat("x", 1000))
	assert.Equal(t, `"`+strings.Repeat("x", MaxQuoted)+`"...`, long)
}

func TestEscape(t *testing.T) {
	assert.Equal(t, `x509: certificate is valid for "a", not b`, Escape(`x509: certificate is valid for "a", not b`))
	assert.Equal(t, `valid for evil\x1b[2J\r\n\u00e9\xff, not b`, Escape("valid for evil\x1b[2J\r\n\u00e9\xff, not b"))
}

// TestStages checks that StageOf finds a stage through wrapping.
func TestStages(t *testing.T) {
	err := fmt.Errorf("socks bind: %w", AtStage(StageBindReply2, io.ErrUnexpectedEOF))
	assert.Equal(t, "socks bind: BIND reply 2: unexpected EOF", err.Error())
	assert.Equal(t, StageBindReply2, StageOf(err))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, Stage(""), StageOf(io.ErrUnexpectedEOF))
	assert.Equal(t, Stage(""), StageOf(nil))
	assert.NoError(t, AtStage(StageGreeting, nil))
}
