//go:build !unix

package integration

import (
	"errors"
	"os"
	"os/exec"
)

// What the harness needs of the system, where there are no process groups
// or MSG_PEEK (Windows). The servers of this suite run on Linux only; this
// file keeps the package building, and vetted, elsewhere: a server's own
// process is all the harness can stop there.

func inOwnGroup(*exec.Cmd) {}

// terminate kills the process pid: there is no SIGTERM to send.
func terminate(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}

// killGroup kills the process pgid, the group's leader.
func killGroup(pgid int) { terminate(pgid) }

// peek is not available.
func peek(uintptr, []byte) (int, error) {
	return 0, errors.ErrUnsupported
}
