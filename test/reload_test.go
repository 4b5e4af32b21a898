package test

// Configuration reload (SIGHUP) and drain (SIGTERM), end to end: signals
// sent to the real binary, clients from 127.0.10.0/24 (this file's and
// several_mx_test.go's range).

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailgate/internal/recorder"
)

// reloadDeny is a policy that refuses one sender.
const reloadDeny = "filters:\n  senders: {deny: [spam@bad.example]}\n"

// rewriteConfig replaces the gateway's config file the way a config
// management tool does (a new file renamed over the old one).
func rewriteConfig(t *testing.T, g *gateway, yaml string) {
	t.Helper()
	yaml = strings.ReplaceAll(yaml, "{{dir}}", g.Dir)
	path := filepath.Join(g.Dir, "gateway.yaml")
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// reloadSignal sends SIGHUP and waits for the n-th log line msg ("config
// reloaded" or "config reload refused: ...") it leads to; it returns that
// line.
func reloadSignal(t *testing.T, g *gateway, msg string, n int) map[string]any {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	return g.Log.WaitFor(t, msg, n)[n-1]
}

const (
	reloaded = "config reloaded"
	refused  = "config reload refused: the running configuration is kept"
)

// waitExit waits for the gateway process to exit.
func waitExit(t *testing.T, g *gateway, limit time.Duration) error {
	t.Helper()
	select {
	case err := <-g.done:
		g.done <- err // the harness's cleanup waits for it too
		return err
	case <-time.After(limit):
		t.Fatalf("gateway did not exit within %v of SIGTERM", limit)
		return nil
	}
}

// messagesWith returns the upstream's messages whose data contains s.
func messagesWith(up *recorder.Server, s string) []recorder.Message {
	var out []recorder.Message
	for _, m := range up.Messages() {
		if strings.Contains(string(m.Data), s) {
			out = append(out, m)
		}
	}
	return out
}

func reloadBody(subject string) string {
	return fmt.Sprintf("From: x@example.net\r\nTo: bob@example.com\r\nSubject: %s\r\n\r\nHello.\r\n", subject)
}

// A session open before SIGHUP finishes on the policy it started with; a
// session opened after gets the new one.
func TestReloadOpenSessionKeepsPolicy(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	g := startGateway(t, baseConfig(addr, up.Addr(), ""), addr)

	before := client(t, "127.0.10.1", addr) // greeted and EHLO done: in progress
	rewriteConfig(t, g, baseConfig(addr, up.Addr(), reloadDeny))
	rec := reloadSignal(t, g, reloaded, 1)
	if rec["generation"] != 1.0 || rec["restart_needed"] != nil {
		t.Errorf("reload summary %v: want generation 1 and nothing needing a restart", rec)
	}
	filters, _ := rec["filters"].([]any)
	if !slices.Contains(filters, any("senders")) {
		t.Errorf("reload summary lists filters %v, want senders among them", filters)
	}

	after := client(t, "127.0.10.2", addr)
	wantCode(t, "new session after reload", send(after, "spam@bad.example", []string{"bob@example.com"},
		reloadBody("after")), 550, "5.7.1")
	if got := messagesWith(up, "Subject: after"); len(got) != 0 {
		t.Fatalf("a refused message reached the upstream: %v", got)
	}

	if err := send(before, "spam@bad.example", []string{"bob@example.com"}, reloadBody("before")); err != nil {
		t.Fatalf("session opened before the reload: %v (want the old policy: delivered)", err)
	}
	if got := messagesWith(up, "Subject: before"); len(got) != 1 {
		t.Fatalf("upstream has %d copies of the old session's message, want 1", len(got))
	}
	// And a second message in the same session: still the old policy.
	if err := send(before, "spam@bad.example", []string{"bob@example.com"}, reloadBody("before again")); err != nil {
		t.Fatalf("second message of the old session: %v", err)
	}
	before.Quit()

	// The new policy refuses only that sender.
	ok := client(t, "127.0.10.3", addr)
	if err := send(ok, "alice@example.net", []string{"bob@example.com"}, reloadBody("fine")); err != nil {
		t.Fatalf("a good sender after the reload: %v", err)
	}
}

// A config that does not load is refused with an ERROR naming each
// problem (file, line, key); the gateway keeps its running policy.
func TestReloadInvalidConfigKeepsRunning(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	g := startGateway(t, baseConfig(addr, up.Addr(), reloadDeny), addr)

	// The bad file drops the deny list and has two mistakes.
	rewriteConfig(t, g, baseConfig(addr, up.Addr(), "limits: {max_line_length: 10}\nfiltres: {}\n"))
	rec := reloadSignal(t, g, refused, 1)
	if rec["level"] != "ERROR" {
		t.Errorf("refused reload logged at %v, want ERROR", rec["level"])
	}
	errs := fmt.Sprint(rec["errors"])
	for _, want := range []string{"gateway.yaml:", "limits.max_line_length", "filtres"} {
		if !strings.Contains(errs, want) {
			t.Errorf("refusal %q does not name %q", errs, want)
		}
	}
	if n := len(g.Log.Find(reloaded)); n != 0 {
		t.Fatalf("%d %q lines after an invalid config", n, reloaded)
	}

	// Still running, still the old policy: the deny list applies, other
	// mail is delivered.
	c := client(t, "127.0.10.10", addr)
	wantCode(t, "denied sender after a refused reload", send(c, "spam@bad.example", []string{"bob@example.com"},
		reloadBody("denied")), 550, "5.7.1")
	c2 := client(t, "127.0.10.11", addr)
	if err := send(c2, "alice@example.net", []string{"bob@example.com"}, reloadBody("kept")); err != nil {
		t.Fatalf("delivery after a refused reload: %v", err)
	}
	if len(messagesWith(up, "Subject: kept")) != 1 {
		t.Fatal("the message was not delivered")
	}

	// Fixing the file and signalling again applies it.
	rewriteConfig(t, g, baseConfig(addr, up.Addr(), ""))
	reloadSignal(t, g, reloaded, 1)
	c3 := client(t, "127.0.10.12", addr)
	if err := send(c3, "spam@bad.example", []string{"bob@example.com"}, reloadBody("now allowed")); err != nil {
		t.Fatalf("after a valid reload without the deny list: %v", err)
	}
}

// A listener's address cannot change in a running process: the reload
// applies the rest, warns that a restart is needed, and the old socket
// keeps serving.
func TestReloadListenerChangeNeedsRestart(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, recorder.Options{})
	addr, other := freeAddr(t), freeAddr(t)
	g := startGateway(t, baseConfig(addr, up.Addr(), ""), addr)

	rewriteConfig(t, g, baseConfig(other, up.Addr(), reloadDeny))
	rec := reloadSignal(t, g, reloaded, 1)
	if fmt.Sprint(rec["restart_needed"]) != "[listeners]" {
		t.Errorf("restart_needed = %v, want [listeners]", rec["restart_needed"])
	}
	warn := g.Log.WaitFor(t, "config reload: listeners changed, which needs a restart to apply; running with the previous value", 1)[0]
	if warn["level"] != "WARN" {
		t.Errorf("restart warning at level %v, want WARN", warn["level"])
	}
	if c, err := net.DialTimeout("tcp", other, time.Second); err == nil {
		c.Close()
		t.Fatalf("the new address %s is listening: listener changes need a restart", other)
	}
	// The old listener serves the new policy.
	c := client(t, "127.0.10.15", addr)
	wantCode(t, "denied sender on the old listener", send(c, "spam@bad.example", []string{"bob@example.com"},
		reloadBody("denied")), 550, "5.7.1")
}

// Certificate renewal: new files at the same paths and a SIGHUP; the next
// TLS handshake presents the new certificate, without a restart.
func TestReloadRenewedCertificate(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	yaml := e.config(up.Addr(), listener("mx", addr, "starttls", "off"))
	g := startGateway(t, yaml, addr)

	renewed, err := recorder.NewPKI("mx.gateway.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.pki.CAPEM)
	roots.AppendCertsFromPEM(renewed.CAPEM)
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "mx.gateway.test", MinVersion: tls.VersionTLS12}
	peer := func(r *raw) *x509.Certificate {
		t.Helper()
		r.cmd("STARTTLS", "220")
		r.startTLS(clientTLS)
		return r.c.(*tls.Conn).ConnectionState().PeerCertificates[0]
	}

	first := dialRaw(t, "127.0.10.20", addr)
	first.greet()
	if got := peer(first); string(got.Raw) != string(e.pki.Cert.Certificate[0]) {
		t.Fatalf("before renewal: certificate serial %v, want the original", got.SerialNumber)
	}
	pending := dialRaw(t, "127.0.10.21", addr) // accepted before the reload, STARTTLS after
	pending.greet()

	// Renewal: new certificate and key written over the old files.
	if err := os.WriteFile(e.cert, renewed.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.key, renewed.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	rec := reloadSignal(t, g, reloaded, 1)
	if rec["tls_cert_expires"] == nil || rec["tls_cert_serial"] == nil {
		t.Errorf("reload summary %v does not describe the certificate", rec)
	}

	want := renewed.Cert.Certificate[0]
	second := dialRaw(t, "127.0.10.22", addr)
	second.greet()
	got := peer(second)
	if string(got.Raw) != string(want) {
		t.Fatalf("after renewal: got the certificate with serial %v issued by %q, want the renewed one (issued by the new CA)",
			got.SerialNumber, got.Issuer.CommonName)
	}
	if _, err := got.Verify(x509.VerifyOptions{Roots: renewed.CAPool, DNSName: "mx.gateway.test"}); err != nil {
		t.Fatalf("the certificate presented does not chain to the renewed CA: %v", err)
	}
	second.cmd("EHLO client.example.net", "250")
	second.cmd("QUIT", "221")

	// A session accepted before the reload gets the renewed certificate
	// when it starts TLS after it.
	if got := peer(pending); string(got.Raw) != string(want) {
		t.Fatalf("session accepted before the reload: STARTTLS presented the old certificate")
	}

	// The session that negotiated TLS before the reload carries on.
	first.cmd("EHLO client.example.net", "250")
	first.openData()
	first.send(reloadBody("over the old handshake") + ".\r\n")
	first.expect("250")
	if len(messagesWith(up, "Subject: over the old handshake")) != 1 {
		t.Fatal("the message over the old TLS session was not delivered")
	}
}

// SIGTERM while a client is in the middle of DATA: listeners close at
// once (new connections are refused), the message completes with 250 and
// reaches the upstream, the session then gets 421, and the process exits 0.
// A session between MAIL and DATA finishes its message too; an idle one is
// closed with 421 at once.
func TestDrainFinishesMessageInData(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	g := startGateway(t, baseConfig(addr, up.Addr(), ""), addr)

	r := dialRaw(t, "127.0.10.40", addr)
	r.greet()
	r.openData()
	r.send("From: alice@example.net\r\nTo: bob@example.com\r\nSubject: drain\r\n\r\nfirst half\r\n")
	// A session in a transaction, not yet at DATA: it may finish its
	// message too.
	txn := dialRaw(t, "127.0.10.43", addr)
	txn.greet()
	txn.cmd("MAIL FROM:<carol@example.net>", "250")
	txn.cmd("RCPT TO:<bob@example.com>", "250")
	// An idle session: it is closed with a 421 at once.
	idle := dialRaw(t, "127.0.10.41", addr)
	idle.greet()
	time.Sleep(100 * time.Millisecond) // the first half has reached the gateway

	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	g.Log.WaitFor(t, "draining", 1)
	// New connections are refused while the session drains.
	refusedAt := time.Now()
	for {
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.10.42")}}
		c, err := d.Dial("tcp", addr)
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if err == nil {
			c.Close()
		}
		if time.Since(refusedAt) > 2*time.Second {
			t.Fatalf("a new connection during the drain: %v, want connection refused", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	idle.expect("421 4.")
	if !idle.closed() {
		t.Error("the idle session was not closed by the drain")
	}
	select {
	case err := <-g.done:
		g.done <- err
		t.Fatalf("the gateway exited (%v) while a message was in DATA", err)
	default:
	}

	txn.cmd("DATA", "354")
	txn.send("From: carol@example.net\r\nSubject: drain txn\r\n\r\nHi.\r\n.\r\n")
	txn.expect("250")
	txn.expect("421 4.")

	r.send("second half\r\n.\r\n")
	r.expect("250")
	r.expect("421 4.") // then closed: the gateway is shutting down
	if !r.closed() {
		t.Error("the session was not closed after its message")
	}
	got := messagesWith(up, "Subject: drain\r\n")
	if len(got) != 1 || !strings.Contains(string(got[0].Data), "first half\r\nsecond half\r\n") {
		t.Fatalf("upstream got %v, want the whole message once", got)
	}
	if len(messagesWith(up, "Subject: drain txn")) != 1 {
		t.Fatal("the message of the session in a transaction was not delivered once")
	}
	if err := waitExit(t, g, 10*time.Second); err != nil {
		t.Fatalf("exit after the drain: %v, want status 0", err)
	}
	g.Log.WaitFor(t, "stopped", 1)
}

// Open connections are still counted after a reload: a client at its
// per-address limit does not get a second connection because the
// configuration changed.
func TestReloadKeepsConnectionCounts(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	limits := "limits: {max_connections_per_ip: 1}\n"
	g := startGateway(t, baseConfig(addr, up.Addr(), limits), addr)

	first := dialRaw(t, "127.0.10.30", addr)
	first.expect("220 ")
	rewriteConfig(t, g, baseConfig(addr, up.Addr(), limits+reloadDeny))
	reloadSignal(t, g, reloaded, 1)

	second := dialRaw(t, "127.0.10.30", addr)
	second.expect("421 4.7.0")
	first.cmd("QUIT", "221")
	waitForLogRecord(t, g, "session", "end", "quit") // the first session has ended
	third := dialRaw(t, "127.0.10.30", addr)
	third.expect("220 ")
}
