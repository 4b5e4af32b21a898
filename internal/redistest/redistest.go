// Package redistest runs a real, private redis-server (Debian's package
// redis-server) on a loopback port for tests: no persistence, its own
// temporary directory, stopped when the test ends. A test can also stop
// and restart it to exercise the "Redis is down" path.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds the wait for a new server to answer PING.
const startTimeout = 10 * time.Second

// Redis is a running (or stopped) private redis-server.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *bytes.Buffer // the server's log, shown when it fails to start
	exit chan struct{} // closed when the process has exited
}

// Start starts a server for the test and returns its address, host:port.
func Start(t testing.TB) (addr string) {
	t.Helper()
	return StartProcess(t).Addr()
}

// StartProcess starts a server for the test; it is killed by t.Cleanup.
// Without the redis-server binary the test is skipped, or fails when the
// environment has CI=true: CI must not pass by skipping.
func StartProcess(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redistest: redis-server not found (apt-get install redis-server): %v", err)
		}
		t.Skipf("redistest: redis-server not found (apt-get install redis-server): %v", err)
	}
	r := &Redis{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(r.Stop)
	// The free port may be taken between our probe and the server's bind:
	// try a few.
	for try := 0; ; try++ {
		r.port = freePort(t)
		err := r.launch()
		if err == nil {
			return r
		}
		if try == 2 {
			t.Fatalf("redistest: %v", err)
		}
	}
}

// Addr returns the server's address, 127.0.0.1:port.
func (r *Redis) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
}

// URL returns redis://Addr/0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Stop kills the server (SIGKILL: a crash, not a shutdown) and waits for
// it to exit. Stopping a stopped server does nothing.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	<-r.exit
	r.cmd = nil
}

// Start restarts a stopped server on the same port (empty: it keeps no
// data). It fails the test if the server does not come up.
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.launch(); err != nil {
		r.t.Fatalf("redistest: restart: %v", err)
	}
}

func (r *Redis) launch() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	cmd := exec.Command(r.bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(r.port),
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--daemonize", "no",
		"--logfile", "")
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { cmd.Wait(); close(exit) }()

	deadline := time.Now().Add(startTimeout)
	for !ping(r.Addr()) {
		select {
		case <-exit:
			return fmt.Errorf("redis-server exited at start:\n%s", out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exit
			return fmt.Errorf("redis-server not answering on %s after %v:\n%s", r.Addr(), startTimeout, out)
		}
	}
	r.cmd, r.out, r.exit = cmd, out, exit
	return nil
}

// ping reports whether a Redis answers PING at addr.
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
