package clamdtest

import (
	"os"
	"os/exec"
	"syscall"
)

// setDeathSignal kills the server if the test binary dies without running
// its cleanups (a panic, a -timeout), so no server outlives its test.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// freeze and thaw stop and continue a process (SIGSTOP, SIGCONT).
func freeze(p *os.Process) error { return p.Signal(syscall.SIGSTOP) }
func thaw(p *os.Process) error   { return p.Signal(syscall.SIGCONT) }
