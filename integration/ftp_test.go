package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ftpFileSize is the size of the files the FTP tests move, and ftpRepeat how
// many times in a row each transfer is made.
const (
	ftpFileSize = 20 << 20
	ftpRepeat   = 20
)

// ftpRunTimeout bounds one run of the example program; it moves at most
// ftpRepeat × 20 MiB over loopback, about a second's work.
const ftpRunTimeout = 2 * time.Minute

// transferLine is the line the example prints after each transfer.
var transferLine = regexp.MustCompile(`(?m)^(get|put) (\S+): (\d+) bytes in \S+, sha256 ([0-9a-f]{64})$`)

// TestFTPActiveDante runs the example examples/ftpactive, an FTP client in
// active mode, as a user would, against pyftpdlib through Dante: the
// control connection over CONNECT, each data connection over a one-shot
// BIND whose expected peer is the FTP server. Dante connects out from
// 127.0.0.1 and binds on 127.0.0.1, so the address in PORT is the control
// connection's peer address, as pyftpdlib requires.
func TestFTPActiveDante(t *testing.T) {
	ftp := startFTP(t)
	dante := startDante(t, DanteConfig{})
	bin := buildFTPActive(t)
	big, bigSum := writeRandomFile(t, filepath.Join(ftp.Root, "big.bin"), ftpFileSize)

	// run runs the program with the server and credentials, through Dante
	// unless args name the proxy otherwise, and returns its output.
	run := func(t *testing.T, env []string, args ...string) ftpRun {
		t.Helper()
		common := []string{"-server", ftp.Addr, "-user", ftpUser, "-pass", ftpPassword, "-v"}
		if env == nil {
			common = append(common, "-proxy", "socks5://"+dante.Addr)
		}
		return runFTPActive(t, bin, env, append(common, args...)...)
	}

	t.Run("LIST", func(t *testing.T) {
		r := run(t, nil, "ls")
		r.requireSuccess(t)
		assert.Regexp(t, `(?m)\s`+strconv.Itoa(ftpFileSize)+`\s.*\sbig\.bin\r?$`, r.stdout, "the listing shows the file and its size")
		assert.Contains(t, r.stderr, "> PORT 127,0,0,1,", "the data address is announced with PORT")
	})

	t.Run("ALL_PROXY", func(t *testing.T) {
		// Without -proxy the program takes the proxy from the environment.
		r := run(t, []string{"ALL_PROXY=socks5h://" + dante.Addr}, "ls")
		r.requireSuccess(t)
		assert.Contains(t, r.stdout, "big.bin")
	})

	t.Run("RETR", func(t *testing.T) {
		began := time.Now()
		r := run(t, nil, "-repeat", strconv.Itoa(ftpRepeat), "get", "big.bin", "copy.bin")
		r.requireSuccess(t)
		r.requireTransfers(t, "get", "big.bin", ftpRepeat, ftpFileSize, bigSum)
		assert.Equal(t, bigSum, fileSum(t, filepath.Join(r.dir, "copy.bin")), "the file written locally")
		assert.Equal(t, ftpRepeat, strings.Count(r.stderr, "> PORT "), "one PORT per transfer")
		t.Logf("%d × RETR of %d bytes in %v", ftpRepeat, ftpFileSize, time.Since(began).Round(time.Millisecond))
	})

	t.Run("STOR", func(t *testing.T) {
		local, sum := writeRandomFile(t, filepath.Join(t.TempDir(), "upload.bin"), ftpFileSize)
		began := time.Now()
		r := run(t, nil, "-repeat", strconv.Itoa(ftpRepeat), "put", local, "stored.bin")
		r.requireSuccess(t)
		r.requireTransfers(t, "put", "stored.bin", ftpRepeat, ftpFileSize, sum)
		assert.Equal(t, sum, fileSum(t, filepath.Join(ftp.Root, "stored.bin")), "the file on the server's disk")
		t.Logf("%d × STOR of %d bytes in %v", ftpRepeat, ftpFileSize, time.Since(began).Round(time.Millisecond))
	})

	t.Run("EPRT", func(t *testing.T) {
		r := run(t, nil, "-eprt", "get", "big.bin")
		r.requireSuccess(t)
		r.requireTransfers(t, "get", "big.bin", 1, ftpFileSize, bigSum)
		assert.Equal(t, bigSum, fileSum(t, filepath.Join(r.dir, "big.bin")), "the file written locally, named after the remote one")
		assert.Regexp(t, `(?m)^> EPRT \|1\|127\.0\.0\.1\|\d+\|$`, r.stderr, "the data address is announced with EPRT")
		assert.NotContains(t, r.stderr, "> PORT ")

		local, sum := writeRandomFile(t, filepath.Join(t.TempDir(), "eprt.bin"), 1<<20)
		r = run(t, nil, "-eprt", "put", local)
		r.requireSuccess(t)
		r.requireTransfers(t, "put", "eprt.bin", 1, 1<<20, sum)
		assert.Equal(t, sum, fileSum(t, filepath.Join(ftp.Root, "eprt.bin")), "the file on the server's disk")
	})

	t.Run("WrongPeer", func(t *testing.T) {
		// The BIND expects 127.0.0.2, the server connects from
		// 127.0.0.1: Dante refuses it with reply 2 = 2, which the program
		// reports as socksbind.ErrNotAllowed.
		r := run(t, nil, "-expect-peer", "127.0.0.2", "get", "big.bin")
		require.Equal(t, 1, r.exitCode, "exit status; stderr:\n%s", r.stderr)
		assert.Contains(t, r.stderr, "data connection (expected from 127.0.0.2)")
		assert.Contains(t, r.stderr, "connection not allowed by ruleset")
		// The hint is printed only for an error matching ErrNotAllowed
		// from a BIND's second reply.
		assert.Regexp(t, `the proxy turned away the data connection from 127\.0\.0\.1:\d+`, r.stderr)
		assert.NotRegexp(t, transferLine, r.stdout)
		assert.Equal(t, bigSum, fileSum(t, big), "the server's file is untouched")
	})
}

// ftpRun is the outcome of one run of the example program.
type ftpRun struct {
	dir      string // its working directory
	stdout   string
	stderr   string
	exitCode int
}

// runFTPActive runs the program at bin with args in a new working
// directory, with env added to an environment without proxy settings, and
// waits for it to exit within ftpRunTimeout.
func runFTPActive(t *testing.T, bin string, env []string, args ...string) ftpRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ftpRunTimeout)
	defer cancel()
	r := ftpRun{dir: t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = r.dir
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(name) {
		case "ALL_PROXY", "NO_PROXY", "FTP_PASSWORD":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r.stdout, r.stderr = stdout.String(), stderr.String()
	t.Logf("ftpactive %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	require.NoError(t, ctx.Err(), "ftpactive did not exit within %v", ftpRunTimeout)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		r.exitCode = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return r
}

func (r ftpRun) requireSuccess(t *testing.T) {
	t.Helper()
	require.Zero(t, r.exitCode, "exit status; stderr:\n%s", r.stderr)
}

// requireTransfers checks that the program reported n transfers of name,
// each of size bytes with SHA-256 sum.
func (r ftpRun) requireTransfers(t *testing.T, verb, name string, n, size int, sum string) {
	t.Helper()
	lines := transferLine.FindAllStringSubmatch(r.stdout, -1)
	require.Len(t, lines, n, "transfer lines")
	for i, m := range lines {
		assert.Equal(t, []string{verb, name, strconv.Itoa(size), sum}, m[1:], "transfer %d", i+1)
	}
}

// writeRandomFile writes size random bytes to path and returns the path and
// their SHA-256 in hex.
func writeRandomFile(t *testing.T, path string, size int) (string, string) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(seed), int64(size))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return path, hex.EncodeToString(h.Sum(nil))
}

// fileSum returns the SHA-256 of the file at path in hex.
func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err, "read %s", path)
	return fmt.Sprintf("%x", h.Sum(nil))
}
