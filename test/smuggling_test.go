package test

import (
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
