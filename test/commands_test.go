package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(baseConfig("127.0.0.1:2525", "127.0.0.1:2526", "relay: {networks: [192.0.2.0/24]}\n")), 0o600)
	out, errOut, code := runBinary(t, "check", "--config", good)
	if code != 0 {
		t.Fatalf("check exit %d: %s", code, errOut)
	}
	for _, want := range []string{"127.0.0.1:2525", "example.com", "192.0.2.0/24", "Relay access denied", "127.0.0.1:2526"} {
		if !strings.Contains(out, want) {
			t.Errorf("effective policy lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "clear text") {
		t.Errorf("no warning for an unencrypted upstream: %q", errOut)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(baseConfig("127.0.0.1:2525", "127.0.0.1:2526", "relay: {netwrks: []}\n"),
		"tls: none, auth: off", "tls: none, auth: required", 1)), 0o600)
	_, errOut, code = runBinary(t, "check", "--config", bad)
	if code != 1 {
		t.Fatalf("check of a bad config: exit %d", code)
	}
	for _, want := range []string{"bad.yaml:4:", "listeners[0].auth", "bad.yaml:11:", "relay.netwrks"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("error output lacks %q:\n%s", want, errOut)
		}
	}

	// A config readable by others may leak secrets: a warning, or an
	// error with strict_permissions.
	os.Chmod(good, 0o644)
	if _, errOut, _ = runBinary(t, "check", "--config", good); !strings.Contains(errOut, "600") {
		t.Errorf("no permission warning: %q", errOut)
	}
	strict := filepath.Join(dir, "strict.yaml")
	os.WriteFile(strict, []byte("strict_permissions: true\n"+baseConfig("127.0.0.1:2525", "127.0.0.1:2526", "")), 0o644)
	if _, _, code = runBinary(t, "check", "--config", strict); code != 1 {
		t.Errorf("strict_permissions with a world-readable file: exit %d", code)
	}
}

func TestVersionCommand(t *testing.T) {
	out, _, code := runBinary(t, "version")
	if code != 0 || !strings.HasPrefix(out, "mailgate ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// The README's quick start: `mailgate demo` runs the embedded config with
// a demo upstream; one message is delivered, one refused.
func TestDemoQuickStart(t *testing.T) {
	cmd := exec.Command(binary, "demo")
	out, logs := &logBuffer{}, &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "mailgate demo is running") {
		if time.Now().After(deadline) {
			t.Fatalf("demo did not start: %s %s", out.String(), logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := client(t, "127.0.0.70", "127.0.0.1:2525")
	if err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage); err != nil {
		t.Fatalf("demo delivery: %v", err)
	}
	if err := c.Mail("alice@example.net", nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "demo relay attempt", c.Rcpt("someone@elsewhere.test", nil), 554, "5.7.1")
	for !strings.Contains(logs.String(), "demo upstream received a message") {
		if time.Now().After(deadline) {
			t.Fatalf("the demo upstream did not log the message:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SIGHUP (logrotate, systemctl reload) must not stop the gateway.
func TestSIGHUPKeepsRunning(t *testing.T) {
	addr := freeAddr(t)
	g := startGateway(t, baseConfig(addr, freeAddr(t), ""), addr)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	g.Log.WaitFor(t, "config reloaded", 1)
	r := dialRaw(t, "127.0.0.71", addr)
	r.expect("220 ")
}
