package testkit

import (
	"context"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDialer checks what the recording dialer records and hands out, and
// that it dials loopback only.
func TestDialer(t *testing.T) {
	echo := Echo(t, "tcp4")
	d := &Dialer{Hosts: map[string]string{"echo.testkit.test": "127.0.0.1"}}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	named := "echo.testkit.test:" + Port(echo.Addr())
	c, err := d.DialContext(ctx, "tcp", named)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(dl))
	assert.Equal(t, "ping", Exchange(t, c, "ping"))
	require.NoError(t, c.SetDeadline(time.Time{}))

	_, err = d.Dial("tcp", "192.0.2.1:80")
	assert.ErrorContains(t, err, "not a loopback address")
	c2, err := d.Dial("tcp", echo.Addr().String())
	require.NoError(t, err)
	defer c2.Close()

	assert.Equal(t, []string{named, "192.0.2.1:80", echo.Addr().String()}, d.Addresses())
	dials := d.Dials()
	require.Len(t, dials, 3)
	assert.Equal(t, dl, dials[0].Deadline)
	assert.Same(t, c, net.Conn(dials[0].Conn))
	assert.Equal(t, []time.Time{dl, {}}, dials[0].Conn.Deadlines())
	assert.Nil(t, dials[1].Conn, "no connection for a refused dial")
	assert.True(t, dials[2].Deadline.IsZero(), "Dial has no context deadline")

	assert.Same(t, dials[0].Conn, d.Next(t))
	assert.Same(t, dials[2].Conn, d.Next(t), "Next skips a failed dial")
}

// TestLines checks that lines are taken once each, in any order, across
// writes that split them, and that Take gives up when done is closed.
func TestLines(t *testing.T) {
	l := NewLines()
	_, _ = l.Write([]byte("a=1\nb=2\na="))
	assert.Equal(t, []string{"a=1", "b=2"}, l.All())
	re := regexp.MustCompile(`^a=(\d+)$`)
	assert.Equal(t, []string{"a=1", "1"}, l.Take(re, time.Second, nil))

	go func() { _, _ = l.Write([]byte("3\n")) }()
	assert.Equal(t, []string{"a=3", "3"}, l.Take(re, 10*time.Second, nil), "a line ended by a later write")
	assert.Equal(t, []string{"a=3", "3"}, l.Last(re))
	assert.Equal(t, 2, l.Count(re), "taken lines count")

	done := make(chan struct{})
	close(done)
	assert.Nil(t, l.Take(re, 10*time.Second, done), "every a= line is taken")
	assert.Equal(t, []string{"b=2"}, l.Take(regexp.MustCompile(`^b=2$`), 0, nil))
	assert.Equal(t, "a=1\nb=2\na=3\n", l.String())
}
