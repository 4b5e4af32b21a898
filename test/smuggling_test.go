package test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"mailgate/internal/recorder"
)

// SMTP smuggling: the upstream here is deliberately vulnerable (it ends
// DATA on a "." line after CRLF, LF or CR, like unpatched MTAs). Whatever
// the client sends, the upstream must never record a second, smuggled
// message.
func TestSmuggling(t *testing.T) {
	up := startUpstream(t, recorder.Options{Lenient: true})
	addr := freeAddr(t)
	startGateway(t, baseConfig(addr, up.Addr(), ""), addr)

	smuggled := "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nFrom: ceo@example.com\r\nSubject: smuggled\r\n\r\nwire money\r\n"
	terminators := map[string]string{
		"LF.LF":        "\n.\n",
		"LF.CRLF":      "\n.\r\n",
		"CRLF.LF":      "\r\n.\n",
		"CR.CR":        "\r.\r",
		"CRLF.CR":      "\r\n.\r",
		"CR.CRLF":      "\r.\r\n",
		"CR.LF":        "\r.\n",
		"NUL.CRLF":     "\r\n\x00.\r\n",
		"CRLF.NULCRLF": "\r\n.\x00\r\n",
	}
	for name, term := range terminators {
		t.Run(name, func(t *testing.T) {
			before := len(up.Messages())
			r := dialRaw(t, "127.0.0.60", addr)
			r.greet()
			r.openData()
			r.send("From: alice@example.net\r\nSubject: innocent\r\n\r\nhello" + term + smuggled + "\r\n.\r\n")
			got := r.expect("5")
			if !strings.HasPrefix(got, "550 5.6.0") {
				t.Errorf("reply %q, want 550 5.6.0", got)
			}
			r.cmd("QUIT", "221")
			time.Sleep(100 * time.Millisecond)
			for _, m := range up.Messages()[before:] {
				t.Errorf("upstream recorded a message: from %s rcpts %v\n%s", m.From, m.Rcpts, m.Data)
			}
		})
	}

	// Bare line endings without a look-alike are normalised: the upstream
	// gets one message with CRLF only, and even its "." lines cannot end
	// the upstream's DATA early.
	t.Run("normalised", func(t *testing.T) {
		before := len(up.Messages())
		r := dialRaw(t, "127.0.0.61", addr)
		r.greet()
		r.openData()
		r.send("Subject: bare\r\n\r\nline one\nline two\rline three\r\n..\r\n.\r\n")
		r.expect("250 ")
		msgs, err := up.WaitMessages(before+1, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if n := len(up.Messages()) - before; n != 1 {
			t.Fatalf("upstream recorded %d messages, want 1", n)
		}
		if !strings.HasSuffix(string(msgs[before].Data), "line one\r\nline two\r\nline three\r\n.\r\n") {
			t.Errorf("not normalised: %q", msgs[before].Data)
		}
	})
}

// With bare_line_endings: reject, any bare CR or LF refuses the message.
func TestBareLineEndingsReject(t *testing.T) {
	up := startUpstream(t, recorder.Options{Lenient: true})
	addr := freeAddr(t)
	startGateway(t, baseConfig(addr, up.Addr(), "limits: {bare_line_endings: reject}\n"), addr)
	r := dialRaw(t, "127.0.0.62", addr)
	r.greet()
	r.openData()
	r.send("Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
	r.expect("550 5.6.0")
	r.openData()
	r.send("Subject: fine\r\n\r\nline one\r\n.\r\n")
	r.expect("250 ")
	if _, err := up.WaitMessages(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// Random payloads built from the pieces smuggling is made of: whatever the
// mix, the lenient upstream never records a message the client did not
// send as one, and never one from the smuggled sender.
func TestSmugglingRandomPayloads(t *testing.T) {
	up := startUpstream(t, recorder.Options{Lenient: true})
	addr := freeAddr(t)
	startGateway(t, baseConfig(addr, up.Addr(), "limits: {max_commands: 100000, max_messages_per_session: 100000}\n"), addr)
	pieces := []string{"\r", "\n", "\r\n", ".", "..", "\x00", " ", "x",
		"MAIL FROM:<evil@example.com>\r\n", "RCPT TO:<victim@example.com>\r\n", "DATA\r\n", "QUIT\r\n", "RSET\r\n"}
	rng := rand.New(rand.NewPCG(1, 2))
	r := dialRaw(t, "127.0.0.63", addr)
	r.greet()
	accepted := 0
	for i := 0; i < 300; i++ {
		var b strings.Builder
		b.WriteString("Subject: random\r\n\r\nbody\r\n")
		for j := 0; j < 12; j++ {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		// Dot-stuffed as a client would, at CRLF line starts only: bare CR
		// and LF stay as they are.
		lines := strings.Split(b.String(), "\r\n")
		for k, l := range lines {
			if strings.HasPrefix(l, ".") {
				lines[k] = "." + l
			}
		}
		payload := strings.Join(lines, "\r\n")
		r.openData()
		r.send(payload + "\r\n.\r\n")
		reply := r.reply()
		switch {
		case strings.HasPrefix(reply, "250 "):
			accepted++
		case strings.HasPrefix(reply, "550 5.6.0"):
		default:
			t.Fatalf("payload %q: reply %q", payload, reply)
		}
	}
	r.cmd("QUIT", "221")
	time.Sleep(200 * time.Millisecond)
	msgs := up.Messages()
	if len(msgs) != accepted {
		t.Fatalf("client had %d messages accepted, the upstream recorded %d", accepted, len(msgs))
	}
	for _, m := range msgs {
		if m.From != "alice@example.net" {
			t.Fatalf("smuggled message recorded: from %s", m.From)
		}
	}
	t.Logf("%d of 300 random payloads accepted (normalised), the rest refused as smuggling", accepted)
}
