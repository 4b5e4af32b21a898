package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// setIDs makes the whole process the user: supplementary groups first,
// then the group, then the user (after which nothing else may be changed).
// Since Go 1.16 these apply to every thread of the process on Linux, which
// verifyThreads checks rather than trusts.
func setIDs(id ids) error {
	if err := syscall.Setgroups(id.groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(id.gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(id.uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	if id.uid != 0 && syscall.Setuid(0) == nil {
		return fmt.Errorf("root could be regained after setuid(%d)", id.uid)
	}
	return verifyThreads(id)
}

// verifyThreads reads every thread's ids from /proc: a thread still
// running as root would undo the point of dropping privileges.
func verifyThreads(id ids) error {
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		return fmt.Errorf("cannot read /proc/self/task to verify the switch")
	}
	wantUID := fmt.Sprintf("%d\t%d\t%d\t%d", id.uid, id.uid, id.uid, id.uid)
	wantGID := fmt.Sprintf("%d\t%d\t%d\t%d", id.gid, id.gid, id.gid, id.gid)
	for _, path := range tasks {
		f, err := os.Open(path)
		if err != nil {
			continue // the thread has exited
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			v = strings.TrimSpace(v)
			if k == "Uid" && v != wantUID || k == "Gid" && v != wantGID {
				f.Close()
				return fmt.Errorf("thread %s still has %s %q", filepath.Base(filepath.Dir(path)), k, v)
			}
		}
		f.Close()
	}
	return nil
}

// writable reports why the current user cannot create files in dir, or
// write to the file, if so.
func writable(path string) error {
	mode := uint32(2) // W_OK
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		mode |= 1 // X_OK: to create files in it
	} else if err == nil {
		mode |= 4 // R_OK
	}
	if err := syscall.Access(path, mode); err != nil {
		return &os.PathError{Op: "access", Path: path, Err: err}
	}
	return nil
}
