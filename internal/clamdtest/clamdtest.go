// Package clamdtest runs a real, private clamd (Debian's clamav-daemon)
// for tests. No signatures can be downloaded here, so it ships its own
// one-line database (testdata/mailgate-test.ndb): Mailgate.Test.EICAR
// matches the EICAR test string anywhere in a scanned object, so it is
// found in a plain message, in a base64 MIME attachment and inside a zip
// (clamd decodes MIME and unpacks archives itself). clamd appends
// ".UNOFFICIAL" to the names of signatures that are not ClamAV's own:
// Signature is the name clamd reports.
//
// The server listens on a unix socket and on a loopback TCP port at once,
// logs to the test's output buffer (no syslog, no log file), and is
// killed when the test ends. Tests can kill it (a crash), start it again,
// and freeze it (SIGSTOP) to play a clamd that hangs.
package clamdtest

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"mailgate/internal/clamd"
)

//go:embed testdata/mailgate-test.ndb
var signatures []byte

// Signature is the name clamd reports for the EICAR test string with the
// test database.
const Signature = "Mailgate.Test.EICAR.UNOFFICIAL"

// EICAR returns the EICAR anti-virus test string. It is assembled at run
// time so that this package's own files are not flagged by a scanner.
func EICAR() string {
	return `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*"
}

// DefaultStreamMaxLength is the test clamd's StreamMaxLength unless
// Options say otherwise.
const DefaultStreamMaxLength = 4 << 20

// startTimeout bounds the wait for a new clamd to answer PING (it loads
// one signature: it usually answers in well under a second).
const startTimeout = 30 * time.Second

// Options change the test clamd's config.
type Options struct {
	// StreamMaxLength is clamd's INSTREAM size limit in bytes (default
	// DefaultStreamMaxLength).
	StreamMaxLength int64
}

// Clamd is a running (or stopped) private clamd.
type Clamd struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	conf string

	log logBuffer // the server's output, shown when a test fails

	mu     sync.Mutex
	cmd    *exec.Cmd
	exit   chan struct{} // closed when the process has exited
	frozen bool
}

// Start starts a clamd with the default options; it is killed by
// t.Cleanup. Without the clamd binary the test is skipped, or fails when
// the environment has CI=true: CI must not pass by skipping.
func Start(t testing.TB) *Clamd {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts a clamd with options.
func StartWith(t testing.TB, o Options) *Clamd {
	t.Helper()
	return start(t, o, lookClamd)
}

// lookClamd finds the clamd binary: on the PATH, or where Debian puts
// it (/usr/sbin, which a user's PATH may lack).
func lookClamd() (string, error) {
	bin, err := exec.LookPath("clamd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/clamd"); serr == nil {
			return "/usr/sbin/clamd", nil
		}
	}
	return bin, err
}

func start(t testing.TB, o Options, look func() (string, error)) *Clamd {
	t.Helper()
	bin, err := look()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("clamdtest: clamd not found (apt-get install clamav-daemon): %v", err)
		}
		t.Skipf("clamdtest: clamd not found (apt-get install clamav-daemon): %v", err)
	}
	if o.StreamMaxLength == 0 {
		o.StreamMaxLength = DefaultStreamMaxLength
	}
	// A short directory of our own, not t.TempDir(): a unix socket path
	// must fit in 108 bytes, and test names can be long.
	dir, err := os.MkdirTemp("", "clamdtest-")
	if err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	c := &Clamd{t: t, bin: bin, dir: dir}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("clamd log:\n%s", c.log.String())
		}
		os.RemoveAll(dir)
	})
	for _, sub := range []string{"db", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatalf("clamdtest: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "db", "mailgate-test.ndb"), signatures, 0o600); err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	// The free port may be taken between our probe and clamd's bind: try
	// a few.
	for try := 0; ; try++ {
		c.port = freePort(t)
		c.conf = Config(dir, c.port, o.StreamMaxLength)
		if err := os.WriteFile(filepath.Join(dir, "clamd.conf"), []byte(c.conf), 0o600); err != nil {
			t.Fatalf("clamdtest: %v", err)
		}
		err := c.launch()
		if err == nil {
			return c
		}
		if try == 2 {
			t.Fatalf("clamdtest: %v", err)
		}
	}
}

// Config is the clamd.conf the tests use: clamd in the foreground,
// reading the test database from dir/db, listening on dir/clamd.sock and
// 127.0.0.1:port, logging to stdout only. Every other setting is clamd's
// default (ScanMail, ScanArchive on). Running as root needs no User
// line: without one clamd keeps the user that started it.
func Config(dir string, port int, streamMaxLength int64) string {
	return fmt.Sprintf(`Foreground yes
DatabaseDirectory %[1]s/db
TemporaryDirectory %[1]s/tmp
LocalSocket %[1]s/clamd.sock
FixStaleSocket yes
TCPSocket %[2]d
TCPAddr 127.0.0.1
StreamMaxLength %[3]d
MaxThreads 4
LogSyslog no
LogTime yes
ConcurrentDatabaseReload no
`, dir, port, streamMaxLength)
}

// Unix returns the address of the unix socket as the gateway's config
// takes it: unix:/path.
func (c *Clamd) Unix() string { return "unix:" + c.SocketPath() }

// SocketPath is the path of the unix socket.
func (c *Clamd) SocketPath() string { return filepath.Join(c.dir, "clamd.sock") }

// TCP returns the TCP address as the gateway's config takes it:
// tcp:127.0.0.1:port.
func (c *Clamd) TCP() string { return "tcp:" + c.TCPAddr() }

// TCPAddr is 127.0.0.1:port.
func (c *Clamd) TCPAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)) }

// ConfigText is the clamd.conf this server runs with.
func (c *Clamd) ConfigText() string { return c.conf }

// Stop kills clamd (SIGKILL: a crash, not a shutdown) and waits for it to
// exit. Stopping a stopped server does nothing.
func (c *Clamd) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.exit
	c.cmd, c.frozen = nil, false
}

// Start restarts a stopped clamd with the same sockets. It fails the test
// if clamd does not come up.
func (c *Clamd) Start() {
	c.t.Helper()
	if err := c.launch(); err != nil {
		c.t.Fatalf("clamdtest: restart: %v", err)
	}
}

// Pause freezes clamd (SIGSTOP): connections are still accepted by the
// kernel, but nothing is read or answered, as with a hung clamd.
func (c *Clamd) Pause() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		c.t.Fatal("clamdtest: Pause: clamd is not running")
	}
	if err := freeze(c.cmd.Process); err != nil {
		c.t.Fatalf("clamdtest: %v", err)
	}
	c.frozen = true
}

// Resume continues a paused clamd.
func (c *Clamd) Resume() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || !c.frozen {
		return
	}
	if err := thaw(c.cmd.Process); err != nil {
		c.t.Fatalf("clamdtest: %v", err)
	}
	c.frozen = false
}

func (c *Clamd) launch() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return nil
	}
	cmd := exec.Command(c.bin, "--config-file="+filepath.Join(c.dir, "clamd.conf"))
	cmd.Stdout, cmd.Stderr = &c.log, &c.log
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()

	// Ready when both sockets answer PING (clamd binds them only after
	// loading the database).
	deadline := time.Now().Add(startTimeout)
	for _, addr := range []string{c.Unix(), c.TCP()} {
		cl, err := clamd.New(addr, 1)
		if err != nil {
			_ = cmd.Process.Kill()
			<-exit
			return err
		}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := cl.Ping(ctx)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-exit:
				return fmt.Errorf("clamd exited at start:\n%s", c.log.String())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				<-exit
				return fmt.Errorf("clamd not answering PING on %s after %v: %v", addr, startTimeout, err)
			}
		}
	}
	c.cmd, c.exit = cmd, exit
	return nil
}

// logBuffer collects clamd's output; it is written by the process's
// output copiers and read by the test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
