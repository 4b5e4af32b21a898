// Package test holds the end-to-end tests: they build the real binary,
// start it with a real config in front of a real SMTP upstream (the
// recording server, or Debian's Postfix) and talk to it with real clients
// (go-smtp's client, swaks, raw sockets for malformed input).
package test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailgate/internal/recorder"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mailgate")
	args := []string{"build", "-o", binary}
	if os.Getenv("MAILGATE_RACE") == "1" {
		// The gateway under the race detector: it exits 66 on a race.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/gateway")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the gateway:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// inCI reports whether missing services must fail tests instead of
// skipping them.
func inCI() bool { return os.Getenv("CI") == "true" }

// requireTool skips (or, in CI, fails) when an external program is missing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if inCI() {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// freeAddr returns a free 127.0.0.1 TCP address.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// logBuffer collects the gateway's JSON log lines.
type logBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []map[string]any
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadBytes('\n')
		if err != nil {
			l.buf.Write(line) // incomplete: keep for later
			break
		}
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			l.lines = append(l.lines, m)
		} else {
			l.lines = append(l.lines, map[string]any{"raw": string(line)})
		}
	}
	return len(p), nil
}

// Find returns the log records whose "msg" is msg.
func (l *logBuffer) Find(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, m := range l.lines {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, m := range l.lines {
		j, _ := json.Marshal(m)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// WaitFor waits until n records with msg exist.
func (l *logBuffer) WaitFor(t *testing.T, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r := l.Find(msg); len(r) >= n {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %d %q log lines; log:\n%s", n, msg, l.String())
	return nil
}

// WaitForClient waits for a record with msg about the client address.
func (l *logBuffer) WaitForClient(t *testing.T, msg, client string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range l.Find(msg) {
			if r["client"] == client {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %q log line for client %s; log:\n%s", msg, client, l.String())
	return nil
}

// gateway is a running gateway process.
type gateway struct {
	cmd  *exec.Cmd
	Log  *logBuffer
	Dir  string
	done chan error
}

// startGateway writes the config (a YAML text in which {{dir}} is the test's
// directory) and runs `mailgate run` until the test ends. It waits until
// every address in wait accepts connections.
func startGateway(t *testing.T, yaml string, wait ...string) *gateway {
	t.Helper()
	dir := t.TempDir()
	yaml = strings.ReplaceAll(yaml, "{{dir}}", dir)
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gateway{Log: &logBuffer{}, Dir: dir, done: make(chan error, 1)}
	g.cmd = exec.Command(binary, "run", "--config", cfg)
	g.cmd.Stderr = g.Log
	g.cmd.Stdout = g.Log
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	t.Cleanup(func() {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(10 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.done
		}
		if strings.Contains(g.Log.String(), "DATA RACE") {
			t.Errorf("the race detector found a data race in the gateway")
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.Log.String())
		}
	})
	for _, addr := range wait {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-g.done:
				t.Fatalf("gateway exited: %v\n%s", err, g.Log.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway not listening on %s: %v\n%s", addr, err, g.Log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return g
}

// startUpstream starts a recording upstream on 127.0.0.1.
func startUpstream(t *testing.T, opts recorder.Options) *recorder.Server {
	t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = "internal.test"
	}
	s, err := recorder.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// plainGateway starts a recording upstream and a gateway with one plain
// listener in front of it (baseConfig plus extra).
func plainGateway(t *testing.T, extra string) (*recorder.Server, string, *gateway) {
	t.Helper()
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	return up, addr, startGateway(t, baseConfig(addr, up.Addr(), extra), addr)
}

// dialFrom connects to addr from a chosen loopback source address, so each
// test has its own client IP.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client returns a go-smtp client that said EHLO.
func client(t *testing.T, src, addr string) *smtp.Client {
	t.Helper()
	c := smtp.NewClient(dialFrom(t, src, addr))
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.example.net"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

// wantCode fails unless err is an SMTP reply with the given code and, if
// given, an enhanced code such as "5.7.1".
func wantCode(t *testing.T, what string, err error, code int, enhanced string) {
	t.Helper()
	se, ok := err.(*smtp.SMTPError)
	if !ok {
		t.Fatalf("%s: got %v, want SMTP reply %d", what, err, code)
	}
	if se.Code != code {
		t.Fatalf("%s: got %d %v %q, want %d", what, se.Code, se.EnhancedCode, se.Message, code)
	}
	if enhanced != "" {
		got := fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		if got != enhanced {
			t.Fatalf("%s: enhanced code %s, want %s (%q)", what, got, enhanced, se.Message)
		}
	}
}

// sendOne sends one message from sender to bob@example.com in a session
// of its own from src, and returns the first error.
func sendOne(t *testing.T, src, addr, from, msg string) error {
	t.Helper()
	c := client(t, src, addr)
	defer c.Quit()
	return send(c, from, []string{"bob@example.com"}, msg)
}

// refusedUndelivered fails unless err is a refusal with code, enhanced
// code and exactly text, and nothing from sender reached the upstream.
func refusedUndelivered(t *testing.T, up *recorder.Server, what string, err error, code int, enhanced, text, from string) {
	t.Helper()
	wantCode(t, what, err, code, enhanced)
	if msg := err.(*smtp.SMTPError).Message; msg != text {
		t.Fatalf("%s: reply text %q, want %q", what, msg, text)
	}
	stateNotGot(t, up, from)
}

// send delivers one message with go-smtp's client and returns the first
// error (MAIL, RCPT or DATA).
func send(c *smtp.Client, from string, to []string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

// raw is a line-level SMTP client for input no library would send.
type raw struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, src, addr string) *raw {
	t.Helper()
	c := dialFrom(t, src, addr)
	t.Cleanup(func() { c.Close() })
	r := &raw{t: t, c: c, br: bufio.NewReader(c)}
	return r
}

// send writes s as is.
func (r *raw) send(s string) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// reply reads one (possibly multi-line) reply and returns it joined by
// newlines.
func (r *raw) reply() string {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var lines []string
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("reading reply (after %q): %v", lines, err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

// expect reads a reply and fails unless it starts with prefix.
func (r *raw) expect(prefix string) string {
	r.t.Helper()
	got := r.reply()
	if !strings.HasPrefix(got, prefix) {
		r.t.Fatalf("reply %q, want %q...", got, prefix)
	}
	return got
}

// cmd sends a command line and expects a reply starting with prefix.
func (r *raw) cmd(line, prefix string) string {
	r.t.Helper()
	r.send(line + "\r\n")
	return r.expect(prefix)
}

// greet reads the banner and says EHLO.
func (r *raw) greet() {
	r.t.Helper()
	r.expect("220 ")
	r.cmd("EHLO client.example.net", "250")
}

// openData starts a message from alice@example.net to bob@example.com up
// to the 354.
func (r *raw) openData() {
	r.t.Helper()
	r.cmd("MAIL FROM:<alice@example.net>", "250")
	r.cmd("RCPT TO:<bob@example.com>", "250")
	r.cmd("DATA", "354")
}

// closed reports whether the server closed the connection.
func (r *raw) closed() bool {
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.br.ReadByte()
	// A timeout means the gateway kept the connection open.
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// startTLS upgrades a raw connection after a 220 to STARTTLS.
func (r *raw) startTLS(cfg *tls.Config) {
	r.t.Helper()
	tc := tls.Client(r.c, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.c = tc
	r.br = bufio.NewReader(tc)
}

// baseConfig is a config for one plain listener in front of upstream.
func baseConfig(listen, upstream string, extra string) string {
	return fmt.Sprintf(`hostname: mx.gateway.test
domains: [example.com, example.org]
listeners:
  - {name: mx, address: %s, tls: none, auth: off}
upstream:
  servers:
    - {address: %s, tls: none}
  connect_timeout: 2s
  command_timeout: 3s
log: {format: json, level: debug}
%s`, listen, upstream, extra)
}

const testMessage = "From: alice@example.net\r\nTo: bob@example.com\r\nSubject: hello\r\n\r\nHello Bob.\r\n"

func containsText(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }
