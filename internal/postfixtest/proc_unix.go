//go:build unix

package postfixtest

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// alive reports whether a process exists and is not a zombie (postfix's
// master daemonizes, so it is not our child and we cannot reap it; in a
// container without a reaping init it may linger as a zombie).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// killGroup sends SIGKILL to the process group led by pid (postfix's
// master is a process group leader, its daemons are in that group) and to
// pid itself.
func killGroup(pid int) {
	syscall.Kill(-pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
}
