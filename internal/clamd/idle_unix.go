//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package clamd

import (
	"net"
	"syscall"
)

// idleOpen reports whether an idle session is still open and silent.
// clamd sends nothing between replies: a byte waiting (its "COMMAND READ
// TIMED OUT" farewell) or the end of the stream (clamd restarted, or it
// closed the session) means the session is over. It peeks without
// waiting: one system call, nothing consumed.
func idleOpen(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	var perr error
	err = raw.Read(func(fd uintptr) bool {
		_, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return err == nil && (perr == syscall.EAGAIN || perr == syscall.EWOULDBLOCK)
}
