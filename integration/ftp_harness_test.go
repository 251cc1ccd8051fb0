package integration

// The FTP server of the FTP tests (ftp_test.go): pyftpdlib from Debian's
// python3-pyftpdlib, started through the harness's start like the proxies.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The account of the FTP server; pyftpdlib checks it itself.
const (
	ftpUser     = "socksbindftp"
	ftpPassword = "ftp-pass"
)

// ftpServer is a pyftpdlib server started by startFTP.
type ftpServer struct {
	*Server
	Root string // the directory it serves, writable
}

// pyftpdlibPython finds a Python 3 that imports pyftpdlib: Debian's
// /usr/bin/python3, where python3-pyftpdlib installs it, or else the
// python3 of PATH (which may be another installation, e.g. pyenv's).
var pyftpdlibPython = sync.OnceValue(func() string {
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	for _, p := range candidates {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		err := exec.CommandContext(ctx, p, "-c", "import pyftpdlib").Run()
		cancel()
		if err == nil {
			return p
		}
	}
	return ""
})

// startFTP starts pyftpdlib on a free port of 127.0.0.1, serving a new
// directory with write access for ftpUser. It returns once the server has
// sent its greeting.
func startFTP(t *testing.T) *ftpServer {
	t.Helper()
	python := pyftpdlibPython()
	if python == "" {
		unavailable(t, "no python3 that imports pyftpdlib (Debian package python3-pyftpdlib)")
	}
	root := t.TempDir()
	// start runs a program it finds in PATH by name, and the Python with
	// pyftpdlib may not be the python3 of PATH: env runs it, by its path,
	// in env's own process, the one that start watches and stops.
	// -w: write access for the user; -u and -P: the one account, which
	// disables anonymous login.
	s := start(t, "env", readiness{}, func(int) (int, []string) {
		port := freePort(t)
		return port, []string{python, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", strconv.Itoa(port),
			"-d", root, "-w", "-u", ftpUser, "-P", ftpPassword}
	})
	if err := ftpGreeting(s.Addr); err != nil {
		t.Fatalf("integration: pyftpdlib on %s: %v; log:\n%s", s.Addr, err, s.logText())
	}
	return &ftpServer{Server: s, Root: root}
}

// ftpGreeting connects to an FTP server and reads its greeting, which must
// be a 220 reply.
func ftpGreeting(addr string) error {
	c, err := net.DialTimeout("tcp", addr, readyTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(readyTimeout)); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("not an FTP greeting: %q", line)
	}
	return nil
}

// buildFTPActive builds the example program examples/ftpactive into a
// temporary directory and returns its path.
func buildFTPActive(t *testing.T) string {
	t.Helper()
	// go test puts the go command of its own GOROOT first in PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("integration: no go command to build examples/ftpactive: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "ftpactive")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, "../examples/ftpactive").CombinedOutput()
	if err != nil {
		t.Fatalf("integration: go build examples/ftpactive: %v\n%s", err, out)
	}
	return bin
}
