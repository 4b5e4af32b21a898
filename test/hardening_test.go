package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"mailgate/internal/recorder"
)

// The banner and replies give nothing away; VRFY, EXPN and friends are
// closed.
func TestProtocolHardening(t *testing.T) {
	_, addr, _ := plainGateway(t, "")
	r := dialRaw(t, "127.0.0.30", addr)
	if banner := r.expect("220 "); banner != "220 mx.gateway.test ESMTP" {
		t.Errorf("banner %q: want exactly the hostname and ESMTP, no software or version", banner)
	}
	ehlo := r.cmd("EHLO client.example.net", "250")
	for _, want := range []string{"SIZE 26214400", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO reply lacks %s:\n%s", want, ehlo)
		}
	}
	for _, hidden := range []string{"AUTH", "STARTTLS", "client.example.net"} {
		if strings.Contains(ehlo, hidden) {
			t.Errorf("EHLO reply of a plain, AUTH-less listener shows %q:\n%s", hidden, ehlo)
		}
	}
	r.cmd("VRFY root", "252 ")
	for _, c := range []string{"EXPN staff", "HELP", "TURN", "ETRN example.com"} {
		r.cmd(c, "502 5.5.1")
	}
	r.cmd("AUTH PLAIN AGJvYgBzZWNyZXQ=", "503")
	got := r.cmd("FOOBAR <script>", "500 5.5.2")
	if strings.Contains(got, "script") || strings.Contains(got, "FOOBAR") {
		t.Errorf("reply echoes client input: %q", got)
	}
	r.cmd("MAIL FROM:<alice@example.net>", "250")
	r.cmd("RCPT TO:<bob@example.com>", "250")
	r.cmd("RSET", "250")
	r.cmd("DATA", "503") // RSET cleared the transaction
	r.cmd("QUIT", "221")
}

// Command lines are limited to 512 octets, body lines of 998 octets pass.
func TestLineLengths(t *testing.T) {
	up, addr, _ := plainGateway(t, "")
	r := dialRaw(t, "127.0.0.31", addr)
	r.greet()
	r.cmd("NOOP "+strings.Repeat("x", 600), "500 5.5.2")
	r.cmd("MAIL FROM:<"+strings.Repeat("a", 250)+"@"+strings.Repeat("b", 300)+".example>", "500 5.5.2")
	// Exactly 512 octets with CRLF is fine.
	r.cmd("NOOP "+strings.Repeat("y", 512-len("NOOP \r\n")), "250")
	r.openData()
	long := strings.Repeat("z", 998)
	r.send("Subject: long lines\r\n\r\n" + long + "\r\n" + long + "\r\n.\r\n")
	r.expect("250 ")
	msgs, err := up.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msgs[0].Data), "\r\n"+long+"\r\n"+long+"\r\n") {
		t.Error("998-octet body lines did not reach the upstream intact")
	}
}

func TestSizeLimit(t *testing.T) {
	up, addr, g := plainGateway(t, "limits: {max_message_size: 64KB, spool_threshold: 16KB}\n")
	r := dialRaw(t, "127.0.0.32", addr)
	r.expect("220 ")
	if ehlo := r.cmd("EHLO client.example.net", "250"); !strings.Contains(ehlo, "SIZE 65536") {
		t.Errorf("SIZE not advertised: %s", ehlo)
	}
	r.cmd("MAIL FROM:<alice@example.net> SIZE=70000", "552 5.3.4")
	r.cmd("MAIL FROM:<alice@example.net> SIZE=1000", "250")
	r.cmd("RCPT TO:<bob@example.com>", "250")
	r.cmd("DATA", "354")
	// The client lied about SIZE: the gateway reads on, stores no more
	// than the limit, and refuses at the end.
	r.send("Subject: big\r\n\r\n")
	line := strings.Repeat("x", 76) + "\r\n"
	for i := 0; i < 2000; i++ {
		r.send(line)
	}
	r.send(".\r\n")
	r.expect("552 5.3.4")
	// A message between the spool threshold and the limit is spooled to
	// disk and delivered intact.
	r.openData()
	body := strings.Repeat(line, 500) // ~39 KB
	r.send("Subject: medium\r\n\r\n" + body + ".\r\n")
	r.expect("250 ")
	msgs, err := up.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(msgs[0].Data), body) {
		t.Error("spooled message changed on the way")
	}
	if len(up.Messages()) != 1 {
		t.Error("the oversized message reached the upstream")
	}
	found := false
	for _, rec := range g.Log.Find("message") {
		found = found || rec["client"] == "127.0.0.32" && rec["outcome"] == "rejected at data"
	}
	if !found {
		t.Errorf("no log line for the oversized message:\n%s", g.Log.String())
	}
}

func TestLoopProtection(t *testing.T) {
	up, addr, _ := plainGateway(t, "limits: {max_received_headers: 5}\n")
	c := client(t, "127.0.0.33", addr)
	hops := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "Received: from hop%d.example by hop%d.example; Mon, 23 Nov 2026 10:00:00 +0000\r\n", i, i+1)
		}
		return b.String() + testMessage
	}
	if err := send(c, "alice@example.net", []string{"bob@example.com"}, hops(5)); err != nil {
		t.Fatalf("5 hops: %v", err)
	}
	wantCode(t, "6 hops", send(c, "alice@example.net", []string{"bob@example.com"}, hops(6)), 554, "5.4.6")
	if n := len(up.Messages()); n != 1 {
		t.Errorf("upstream got %d messages, want 1", n)
	}
}

func TestSessionLimits(t *testing.T) {
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	startGateway(t, baseConfig(addr, up.Addr(),
		"limits: {max_recipients: 3, max_commands: 12, max_errors: 3, max_messages_per_session: 2}\n"), addr)

	t.Run("max_recipients", func(t *testing.T) {
		r := dialRaw(t, "127.0.0.34", addr)
		r.greet()
		r.cmd("MAIL FROM:<alice@example.net>", "250")
		for i := 0; i < 3; i++ {
			r.cmd(fmt.Sprintf("RCPT TO:<u%d@example.com>", i), "250")
		}
		r.cmd("RCPT TO:<u4@example.com>", "452 4.5.3")
	})
	t.Run("max_errors", func(t *testing.T) {
		r := dialRaw(t, "127.0.0.35", addr)
		r.expect("220 ")
		for i := 0; i < 3; i++ {
			r.cmd("BOGUS", "500")
		}
		r.cmd("BOGUS", "421 4.7.0")
		if !r.closed() {
			t.Error("connection still open after too many errors")
		}
	})
	t.Run("max_commands", func(t *testing.T) {
		r := dialRaw(t, "127.0.0.36", addr)
		r.expect("220 ")
		for i := 0; i < 12; i++ {
			r.cmd("NOOP", "250")
		}
		r.cmd("NOOP", "421 4.7.0")
		if !r.closed() {
			t.Error("connection still open after too many commands")
		}
	})
	t.Run("max_messages_per_session", func(t *testing.T) {
		c := client(t, "127.0.0.37", addr)
		for i := 0; i < 2; i++ {
			if err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		wantCode(t, "third message", c.Mail("alice@example.net", nil), 421, "4.7.0")
	})
}

func TestTimeouts(t *testing.T) {
	up, addr, _ := plainGateway(t, "limits: {timeouts: {greeting: 1s, command: 1s, data: 2s}}\n")
	t.Run("greeting", func(t *testing.T) {
		r := dialRaw(t, "127.0.0.38", addr)
		r.expect("220 ")
		r.expect("421 4.4.2")
	})
	t.Run("data", func(t *testing.T) {
		r := dialRaw(t, "127.0.0.39", addr)
		r.greet()
		r.openData()
		// A trickle that is never idle for a second still hits the DATA
		// deadline of two seconds.
		start := time.Now()
		var reply string
		for time.Since(start) < 5*time.Second && reply == "" {
			if _, err := r.c.Write([]byte("x\r\n")); err != nil {
				break
			}
			_ = r.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if line, err := r.br.ReadString('\n'); err == nil {
				reply = line
			}
		}
		if !strings.HasPrefix(reply, "421 4.4.2") {
			t.Fatalf("reply %q, want 421 4.4.2", reply)
		}
		if d := time.Since(start); d < 1500*time.Millisecond || d > 3500*time.Millisecond {
			t.Errorf("DATA ended after %v, want about 2s", d)
		}
	})
	if len(up.Messages()) != 0 {
		t.Error("upstream got a message")
	}
}

// Commands pipelined after STARTTLS in clear text are discarded.
func TestStartTLSInjection(t *testing.T) {
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	env := newTLSEnv(t)
	startGateway(t, env.config(up.Addr(), listener("mx", addr, "starttls", "off")), addr)
	r := dialRaw(t, "127.0.0.40", addr)
	r.greet()
	r.send("STARTTLS\r\nMAIL FROM:<injected@example.net>\r\n")
	r.expect("220 ")
	r.startTLS(env.client())
	// Had the injected MAIL been kept, this EHLO would get its reply
	// (503: no HELO) first.
	r.cmd("EHLO client.example.net", "250")
	r.cmd("MAIL FROM:<alice@example.net>", "250")
	r.cmd("QUIT", "221")
}

// PIPELINING: a batch of commands in one write gets its replies in order,
// and the message still goes through.
func TestPipelining(t *testing.T) {
	up, addr, _ := plainGateway(t, "")
	r := dialRaw(t, "127.0.0.41", addr)
	r.greet()
	r.send("MAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n")
	r.expect("250 2.1.0")
	r.expect("250 2.1.5")
	r.expect("554 5.7.1")
	r.expect("354 ")
	r.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	r.expect("250 ")
	r.expect("221 ")
	if _, err := up.WaitMessages(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// Every malformed or out-of-order command gets a clear reply, and the
// session goes on.
func TestProtocolErrors(t *testing.T) {
	_, addr, _ := plainGateway(t, "limits: {max_errors: 100}\n")
	r := dialRaw(t, "127.0.0.42", addr)
	r.expect("220 ")
	steps := []struct{ cmd, want string }{
		{"MAIL FROM:<alice@example.net>", "503 5.5.1"}, // before EHLO
		{"EHLO", "501 5.5.4"},
		{"EHLO client.example.net", "250"},
		{"RCPT TO:<bob@example.com>", "503 5.5.1"}, // before MAIL
		{"DATA", "503 5.5.1"},
		{"STARTTLS", "502 5.5.1"}, // a plain listener
		{"MAIL alice@example.net", "501 5.5.4"},
		{"MAIL FROM:<alice@exa mple.net>", "501 5.1.7"},
		{"MAIL FROM:<alice>", "553 5.1.7"},
		{"MAIL FROM:<alice@example.net> SIZE=big", "501 5.5.4"},
		{"MAIL FROM:<alice@example.net> RET=HDRS", "555 5.5.4"},
		{"MAIL FROM:<alice@example.net> BODY=BINARYMIME", "555 5.5.4"},
		{"MAIL FROM:<> BODY=8BITMIME SIZE=100", "250"}, // bounces are accepted
		{"MAIL FROM:<alice@example.net>", "503 5.5.1"}, // nested
		{"RCPT bob@example.com", "501 5.5.4"},
		{"RCPT TO:<bob@-bad.example>", "501 5.1.3"},
		{"RCPT TO:<>", "501 5.1.3"},
		{"RCPT TO:<bob@example.com> NOTIFY=NEVER", "555 5.5.4"},
		{"DATA", "554 5.5.1"}, // no valid recipient yet
		{"RCPT TO:<bob@example.com>", "250"},
		{"DATA now", "501 5.5.4"},
		{"NOOP\x01", "500 5.5.2"},
		{"RSET", "250"},
		{"QUIT", "221"},
	}
	for _, s := range steps {
		r.cmd(s.cmd, s.want)
	}

	// A web client on the SMTP port is shown the door at once.
	w := dialRaw(t, "127.0.0.43", addr)
	w.expect("220 ")
	w.cmd("GET / HTTP/1.1", "421 4.7.0")
	if !w.closed() {
		t.Error("connection still open after an HTTP request")
	}
}

// The idle timeout still holds after STARTTLS.
func TestTimeoutAfterStartTLS(t *testing.T) {
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	env := newTLSEnv(t)
	startGateway(t, env.config(up.Addr(), listener("mx", addr, "starttls", "off"))+"limits: {timeouts: {command: 1s}}\n", addr)
	r := dialRaw(t, "127.0.0.44", addr)
	r.greet()
	r.cmd("STARTTLS", "220")
	r.startTLS(env.client())
	r.cmd("EHLO client.example.net", "250")
	start := time.Now()
	r.expect("421 4.4.2")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timed out after %v, want about 1s", d)
	}
}
