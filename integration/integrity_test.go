package integration

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socksbind/socksbind"
	"github.com/socksbind/socksbind/internal/leakcheck"
)

// integritySize is how much each side sends.
const integritySize = 64 << 20

// integrityTimeout bounds one transfer: 64 MiB each way under -race.
const integrityTimeout = 90 * time.Second

// transfer is what one side of a connection sent and received.
type transfer struct {
	sent, recv       [sha256.Size]byte
	nSent, nRecv     int64
	sendErr, recvErr error
}

// pump sends integritySize pseudo-random bytes from seed on c, then shuts its
// writing side, while it reads c to EOF at the same time; it hashes both
// streams with SHA-256.
func pump(c halfCloser, seed uint64) transfer {
	var tr transfer
	_ = c.SetDeadline(time.Now().Add(integrityTimeout))
	done := make(chan struct{})
	go func() {
		defer close(done)
		h := sha256.New()
		tr.nRecv, tr.recvErr = io.Copy(h, c)
		h.Sum(tr.recv[:0])
	}()
	h := sha256.New()
	src := io.TeeReader(rand.NewChaCha8(seedBytes(seed)), h)
	tr.nSent, tr.sendErr = io.CopyN(c, src, integritySize)
	h.Sum(tr.sent[:0])
	if tr.sendErr == nil {
		tr.sendErr = c.CloseWrite()
	}
	<-done
	return tr
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	for i := range 8 {
		b[i] = byte(seed >> (8 * i))
	}
	return b
}

// checkTransfer asserts that each side received, in full, what the other
// sent.
func checkTransfer(t *testing.T, a, b transfer) {
	t.Helper()
	for _, tr := range []transfer{a, b} {
		require.NoError(t, tr.sendErr)
		require.NoError(t, tr.recvErr)
		assert.Equal(t, int64(integritySize), tr.nSent)
		assert.Equal(t, int64(integritySize), tr.nRecv)
	}
	assert.Equal(t, a.sent, b.recv, "SHA-256 of the stream a sent to b")
	assert.Equal(t, b.sent, a.recv, "SHA-256 of the stream b sent to a")
	assert.NotEqual(t, a.sent, b.sent, "the two directions carry different data")
}

// awaitTransfer waits for a transfer run in another goroutine.
func awaitTransfer(t *testing.T, ch <-chan transfer) transfer {
	t.Helper()
	select {
	case tr := <-ch:
		return tr
	case <-time.After(integrityTimeout + testTimeout):
		require.FailNow(t, "transfer did not end")
		return transfer{}
	}
}

// TestIntegrityDante sends 64 MiB each way, both directions at once, through
// a CONNECT and through an accepted BIND connection of Dante, and compares
// SHA-256 sums of what each side sent and received.
func TestIntegrityDante(t *testing.T) {
	leakcheck.Check(t)
	dante := startDante(t, DanteConfig{})
	d := newDialer(t, dante.Addr, nil, nil)

	t.Run("Connect", func(t *testing.T) {
		far := make(chan transfer, 1)
		tg := startTarget(t, "127.0.0.1:0", func(c *net.TCPConn) { far <- pump(c, 2) })
		c, err := d.DialContext(testContext(t), "tcp", tg.addr.String())
		require.NoError(t, err)
		defer c.Close()
		near := pump(asConn(t, c), 1)
		checkTransfer(t, near, awaitTransfer(t, far))
	})

	t.Run("Bind", func(t *testing.T) {
		ln := listen(t, d, socksbind.ListenConfig{Once: true}, ":0")
		peer := dialPeer(t, "127.0.0.1", ln.Addr())
		c := accept(t, ln)
		far := make(chan transfer, 1)
		go func() { far <- pump(peer, 4) }()
		near := pump(c, 3)
		checkTransfer(t, near, awaitTransfer(t, far))
	})
}
