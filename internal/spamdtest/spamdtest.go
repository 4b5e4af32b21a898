// Package spamdtest runs a real, private SpamAssassin spamd (Debian's
// packages spamd and spamassassin) for tests: on a free loopback port and
// a unix socket in a temporary directory, with the rules the package
// ships (/usr/share/spamassassin, no sa-update: tests run offline), no
// network tests, no Bayes and no per-user files, stopped when the test
// ends.
//
// spamd takes a few seconds to start (more on a busy machine, much more
// without sa-compile's compiled rules), so a test package should start one
// and share it between its tests (subtests of one test).
//
// The command line, for the docs:
//
//	spamd --local --nouser-config --helper-home-dir=DIR \
//	      --configpath=/usr/share/spamassassin \
//	      --listen=127.0.0.1:PORT --listen=DIR/spamd.sock \
//	      --pidfile=DIR/spamd.pid --syslog=stderr \
//	      --min-children=1 --max-children=2 \
//	      --cf='use_bayes 0' --cf='bayes_auto_learn 0' \
//	      [--username=nobody]      (when run as root)
package spamdtest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RulesDir is where Debian's spamassassin package installs its rules.
const RulesDir = "/usr/share/spamassassin"

// startTimeout bounds the wait for spamd to answer PING.
const startTimeout = 60 * time.Second

// GTUBE is the Generic Test for Unsolicited Bulk Email: a message with
// this line scores 1000 with the stock rules.
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// Spamd is a running (or stopped) private spamd.
type Spamd struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *syncBuffer
	exit chan struct{}
}

// Start starts spamd for the test; it is stopped by t.Cleanup. Without
// spamd or its rules the test is skipped, or fails when the environment
// has CI=true: CI must not pass by skipping.
func Start(t testing.TB) *Spamd {
	t.Helper()
	bin, err := exec.LookPath("spamd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/spamd"); serr == nil {
			bin, err = "/usr/sbin/spamd", nil
		}
	}
	if err != nil {
		missing(t, fmt.Sprintf("spamd not found (apt-get install spamd spamassassin): %v", err))
	}
	if rules, _ := filepath.Glob(filepath.Join(RulesDir, "*.cf")); len(rules) == 0 {
		missing(t, fmt.Sprintf("no SpamAssassin rules in %s (apt-get install spamassassin)", RulesDir))
	}
	// Not t.TempDir: a unix socket path must stay under 108 bytes, and
	// test names make those long.
	dir, err := os.MkdirTemp("", "spamd-")
	if err != nil {
		t.Fatal(err)
	}
	// spamd's children run as nobody when we are root: they must be
	// able to enter the helper home directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Spamd{t: t, bin: bin, dir: dir}
	t.Cleanup(func() {
		s.Stop()
		os.RemoveAll(dir)
	})
	// The free port may be taken between our probe and spamd's bind.
	for try := 0; ; try++ {
		s.port = freePort(t)
		err := s.launch()
		if err == nil {
			return s
		}
		if try == 2 {
			t.Fatalf("spamdtest: %v", err)
		}
	}
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("spamdtest: %s", why)
	}
	t.Skipf("spamdtest: %s", why)
}

// Addr returns spamd's TCP address, 127.0.0.1:port.
func (s *Spamd) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Socket returns the path of spamd's unix socket.
func (s *Spamd) Socket() string { return filepath.Join(s.dir, "spamd.sock") }

// Log returns what spamd logged so far.
func (s *Spamd) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// Args returns spamd's command line arguments (without the program).
func (s *Spamd) Args() []string {
	args := []string{
		"--local",         // no DNS or network tests: tests run offline
		"--nouser-config", // no ~/.spamassassin/user_prefs
		"--helper-home-dir=" + s.dir,
		"--configpath=" + RulesDir,
		"--listen=" + s.Addr(),
		"--listen=" + s.Socket(),
		"--pidfile=" + filepath.Join(s.dir, "spamd.pid"),
		"--syslog=stderr",
		"--min-children=1",
		"--max-children=2",
		"--cf=use_bayes 0",
		"--cf=bayes_auto_learn 0",
	}
	if os.Geteuid() == 0 {
		// spamd would otherwise setuid to each request's user.
		args = append(args, "--username=nobody")
	}
	return args
}

// Stop stops spamd (SIGTERM: it stops its children and removes its
// socket and PID file) and waits for it to exit. Stopping a stopped
// spamd does nothing.
func (s *Spamd) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	pid := s.cmd.Process.Pid
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exit:
	case <-time.After(15 * time.Second):
		// Its process group: the children too.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-s.exit
	}
	s.cmd = nil
}

// Start restarts a stopped spamd on the same port and socket.
func (s *Spamd) Start() {
	s.t.Helper()
	if err := s.launch(); err != nil {
		s.t.Fatalf("spamdtest: restart: %v", err)
	}
}

func (s *Spamd) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	cmd := exec.Command(s.bin, s.Args()...)
	cmd.Dir = s.dir
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { cmd.Wait(); close(exit) }()

	deadline := time.Now().Add(startTimeout)
	for !ping(s.Addr()) {
		select {
		case <-exit:
			return fmt.Errorf("spamd exited at start (%s %s):\n%s", s.bin, strings.Join(s.Args(), " "), out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exit
			return fmt.Errorf("spamd did not answer PING within %v:\n%s", startTimeout, out)
		}
	}
	s.cmd, s.out, s.exit = cmd, out, exit
	return nil
}

// ping sends PING SPAMC/1.5 and wants PONG.
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("PING SPAMC/1.5\r\n\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SPAMD/") && strings.Contains(line, " PONG")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is spamd's log, written by the exec goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	if b == nil {
		return ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
