//go:build unix

package integration

// What the harness needs of the system: process groups, signals, and a
// peek at a socket's receive buffer.

import (
	"os/exec"
	"syscall"
)

// inOwnGroup makes cmd start in a process group of its own, whose id is
// its pid, so that helpers it forks (Dante's children) can be stopped
// with it.
func inOwnGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminate asks the process pid to exit (SIGTERM).
func terminate(pid int) { _ = syscall.Kill(pid, syscall.SIGTERM) }

// killGroup kills every process of the group pgid (SIGKILL).
func killGroup(pgid int) { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

// peek copies what waits in the receive buffer of the socket fd into buf,
// consuming nothing and never blocking (EAGAIN when nothing waits).
func peek(fd uintptr, buf []byte) (int, error) {
	n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}
