package test

import (
	"encoding/base64"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailgate/internal/recorder"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// swaks runs Debian's swaks and returns its transcript and exit code.
func swaks(t *testing.T, args ...string) (string, int) {
	t.Helper()
	bin := requireTool(t, "swaks")
	cmd := exec.Command(bin, append([]string{"--timeout", "10", "--hide-informational"}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// Three listeners at once: MX (STARTTLS, no AUTH), submission (STARTTLS,
// AUTH required) and submissions (implicit TLS, AUTH required).
func TestAuthListeners(t *testing.T) {
	up := startUpstream(t, recorder.Options{})
	env := newTLSEnv(t)
	mx, sub, smtps := freeAddr(t), freeAddr(t), freeAddr(t)
	startGateway(t, env.config(up.Addr(),
		listener("mx", mx, "starttls", "off"),
		listener("submission", sub, "starttls", "required"),
		listener("submissions", smtps, "implicit", "required")), mx, sub, smtps)

	t.Run("AUTH not offered before TLS", func(t *testing.T) {
		r := dialRaw(t, "127.0.0.50", sub)
		r.expect("220 ")
		ehlo := r.cmd("EHLO client.example.net", "250")
		if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
			t.Errorf("EHLO before TLS:\n%s", ehlo)
		}
		r.cmd("AUTH PLAIN "+b64("\x00alice\x00alice-secret"), "530 5.7.0")
		r.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0")
		r.cmd("STARTTLS", "220")
		r.startTLS(env.client())
		ehlo = r.cmd("EHLO client.example.net", "250")
		if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
			t.Errorf("EHLO after TLS:\n%s", ehlo)
		}
		r.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0") // required
		r.cmd("AUTH PLAIN "+b64("\x00alice\x00alice-secret"), "235 2.7.0")
		r.cmd("MAIL FROM:<alice@example.com>", "250")
	})

	t.Run("swaks PLAIN over STARTTLS relays", func(t *testing.T) {
		out, code := swaks(t, "--server", sub, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
			"--auth-password", "alice-secret", "--from", "alice@example.com", "--to", "friend@elsewhere.test",
			"--header", "Subject: swaks plain")
		if code != 0 || !strings.Contains(out, "235 2.7.0") {
			t.Fatalf("swaks exit %d:\n%s", code, out)
		}
	})
	t.Run("swaks LOGIN over implicit TLS relays", func(t *testing.T) {
		out, code := swaks(t, "--server", smtps, "--tls-on-connect", "--auth", "LOGIN", "--auth-user", "bob",
			"--auth-password", "bob-secret", "--from", "bob@example.com", "--to", "friend@elsewhere.test",
			"--header", "Subject: swaks login")
		if code != 0 || !strings.Contains(out, "235 2.7.0") {
			t.Fatalf("swaks exit %d:\n%s", code, out)
		}
	})
	msgs, err := up.WaitMessages(2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if !strings.Contains(string(m.Data), "with ESMTPSA") || !strings.Contains(string(m.Data), "(using TLSv1.3 with cipher") {
			t.Errorf("Received header lacks TLS/AUTH details:\n%s", m.Data)
		}
	}

	t.Run("swaks wrong password", func(t *testing.T) {
		out, code := swaks(t, "--server", sub, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
			"--auth-password", "wrong", "--from", "alice@example.com", "--to", "friend@elsewhere.test")
		if code == 0 || !strings.Contains(out, "535 5.7.8") {
			t.Fatalf("swaks exit %d:\n%s", code, out)
		}
	})

	t.Run("unknown user and wrong password look the same", func(t *testing.T) {
		c, err := smtp.NewClientStartTLS(dialFrom(t, "127.0.0.51", sub), env.client())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		errWrong := c.Auth(sasl.NewPlainClient("", "alice", "nope"))
		errUnknown := c.Auth(sasl.NewPlainClient("", "mallory", "nope"))
		if errWrong == nil || errUnknown == nil || errWrong.Error() != errUnknown.Error() {
			t.Fatalf("replies differ: wrong password %v, unknown user %v", errWrong, errUnknown)
		}
		wantCode(t, "AUTH", errWrong, 535, "5.7.8")
		// Third failure (max_failures: 3): 421 and the connection closes.
		wantCode(t, "third failure", c.Auth(sasl.NewPlainClient("", "alice", "nope")), 421, "4.7.0")
		if err := c.Noop(); err == nil {
			t.Error("connection still open after max_failures")
		}
	})

	t.Run("MX listener never offers AUTH", func(t *testing.T) {
		r := dialRaw(t, "127.0.0.52", mx)
		r.greet()
		r.cmd("STARTTLS", "220")
		r.startTLS(env.client())
		if ehlo := r.cmd("EHLO client.example.net", "250"); strings.Contains(ehlo, "AUTH") {
			t.Errorf("AUTH offered on auth: off listener:\n%s", ehlo)
		}
		r.cmd("AUTH PLAIN "+b64("\x00alice\x00alice-secret"), "503")
		r.cmd("MAIL FROM:<x@example.net>", "250")
		r.cmd("RCPT TO:<friend@elsewhere.test>", "554 5.7.1")
	})

	t.Run("AUTH LOGIN dialogue and cancel", func(t *testing.T) {
		r := dialRaw(t, "127.0.0.53", smtps)
		r.c = tlsWrap(t, r, env)
		r.greet()
		r.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
		r.cmd("*", "501")
		r.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
		r.cmd(b64("bob"), "334 UGFzc3dvcmQ6")
		r.cmd(b64("bob-secret"), "235")
		r.cmd("AUTH LOGIN", "503")
	})
}

// Failures are also counted per client address across sessions: a bot
// that reconnects after every refusal is shut out, other addresses are not.
func TestAuthFailuresPerIP(t *testing.T) {
	up := startUpstream(t, recorder.Options{})
	env := newTLSEnv(t)
	env.authExtra = ", max_failures: 1, max_failures_per_ip: 2, failure_window: 1m"
	sub := freeAddr(t)
	startGateway(t, env.config(up.Addr(), listener("submissions", sub, "implicit", "required")), sub)
	attempt := func(src, pass, want string) {
		t.Helper()
		r := dialRaw(t, src, sub)
		r.c = tlsWrap(t, r, env)
		r.greet()
		r.cmd("AUTH PLAIN "+b64("\x00alice\x00"+pass), want)
	}
	attempt("127.0.0.54", "wrong", "421 4.7.0") // max_failures 1: the session ends
	attempt("127.0.0.54", "wrong", "421 4.7.0")
	// The address is now shut out, even with the right password, before
	// any password is checked.
	attempt("127.0.0.54", "alice-secret", "421 4.7.0 Too many authentication failures")
	attempt("127.0.0.55", "alice-secret", "235 2.7.0")
}
