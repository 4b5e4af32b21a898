package spamdtest

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts spamd in its own process group (so a stuck one is
// killed with its children) and kills it if the test binary dies without
// running its cleanups (a panic, a -timeout).
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
