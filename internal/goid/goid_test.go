package goid

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCurrent(t *testing.T) {
	mine := Current()
	assert.Equal(t, mine, Current(), "the same goroutine twice")
	other := make(chan uint64)
	go func() { other <- Current() }()
	assert.NotEqual(t, mine, <-other, "another goroutine")
}
