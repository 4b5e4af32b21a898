package content

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"mailgate/internal/mimeparse"
	"mailgate/internal/spool"
	"mailgate/pipeline"
)

func message(t *testing.T, s string) *pipeline.Message {
	t.Helper()
	m := spool.New(1<<20, 4<<20, "")
	t.Cleanup(func() { m.Close() })
	m.Write([]byte(s))
	return m
}

const reply = "554 5.7.1 Message refused by content policy"

// nested is a Content-Type field and a body of multiparts nested n deep
// (beyond 10, the MIME parse's default limit), ending in a part header.
func nested(n int) string {
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i-1, i)
	}
	return b.String()
}

func TestContent(t *testing.T) {
	f, err := New(Config{
		DenyHeaders: []string{`^Subject: .*(?i)invoice overdue`, `^X-Mailer: BadBot`},
		DenyBody:    []string{`(?i)wire transfer.*urgent`, `^CODEWORD$`},
	})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte("Hello,\r\nplease make a WIRE TRANSFER, it is urgent.\r\n"))
	for _, c := range []struct {
		name, msg string
		reason    string // "" for pass
	}{
		{"clean", "Subject: hello\r\n\r\nHello Bob.\r\n", ""},
		{"subject", "From: a@b\r\nSubject: Your INVOICE OVERDUE\r\n\r\nhi\r\n",
			`deny_headers[0] "^Subject: .*(?i)invoice overdue" matched the Subject field`},
		{"folded subject", "Subject: your invoice\r\n overdue notice\r\n\r\nhi\r\n", "deny_headers[0]"},
		{"second header pattern", "X-Mailer: BadBot 1.0\r\n\r\nhi\r\n", "deny_headers[1]"},
		{"header text in the body does not count", "Subject: hi\r\n\r\nX-Mailer: BadBot\r\n", ""},
		{"body line", "Subject: hi\r\n\r\nfirst\r\nwire transfer now, urgent!\r\n",
			`deny_body[0] "(?i)wire transfer.*urgent" matched line 2 of part 1 (text/plain)`},
		{"anchored line", "Subject: hi\r\n\r\nxx\r\nCODEWORD\r\nyy\r\n", "deny_body[1]"},
		{"pattern across lines does not match", "Subject: hi\r\n\r\nwire transfer\r\nurgent\r\n", ""},
		{"decoded base64 text part",
			"Subject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64 + "\r\n--b--\r\n",
			"matched line 2 of part 1 (text/plain)"},
		{"quoted-printable html",
			"Subject: hi\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>Wire trans=\r\nfer: urgent</p>\r\n",
			"matched line 1 of part 1 (text/html)"},
		{"attachments are not text",
			"Subject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nCODEWORD\r\n--b--\r\n", ""},
		{"unparsed: raw body",
			"Subject: hi\r\n" + nested(11) + "not the CODEWORD\r\n", ""},
		{"unparsed: raw body line",
			"Subject: hi\r\n" + nested(11) + "CODEWORD\r\n",
			"deny_body[1] \"^CODEWORD$\" matched line 34 of the unparsed body"},
		{"unparsed: base64 text hidden by a broken structure",
			"Subject: hi\r\n" + nested(11) + "Content-Transfer-Encoding: base64\r\n\r\n" + b64 + "\r\n",
			"deny_body[0] \"(?i)wire transfer.*urgent\" matched line 2 of base64 text 1 of the unparsed body"},
		{"unparsed: quoted-printable undone",
			"Subject: hi\r\n" + nested(11) + "\r\nWire trans=\r\nfer, urg=65nt\r\n",
			"deny_body[0] \"(?i)wire transfer.*urgent\" matched line 35 of the unparsed body"},
		{"no empty line after the header",
			"Subject: hi\r\nCODEWORD\r\n", "matched line 1 of part 1"},
	} {
		v := f.Data(context.Background(), &pipeline.Session{}, &pipeline.Transaction{}, message(t, c.msg))
		if c.reason == "" {
			if v.Action != pipeline.Continue {
				t.Errorf("%s: %v (%s)", c.name, v.Reply, v.Reason)
			}
			continue
		}
		if v.Reply.String() != reply || !strings.Contains(v.Reason, c.reason) {
			t.Errorf("%s: %q %q, want reason %q", c.name, v.Reply.String(), v.Reason, c.reason)
		}
	}
}

// TestUnparsed: a message too large to parse is matched on the raw lines
// of its first megabyte, with the header as parsed.
func TestUnparsed(t *testing.T) {
	f, _ := New(Config{DenyHeaders: []string{`^Subject: bad`}, DenyBody: []string{`^CODEWORD$`}})
	tx := &pipeline.Transaction{MIME: &mimeparse.Message{Skipped: true, Header: []mimeparse.Field{{Name: "Subject", Value: "ok"}}}}
	big := "Subject: ok\r\nX: y\r\n\r\n" + strings.Repeat("filler line\r\n", 1000) + "CODEWORD\r\n"
	v := f.Data(context.Background(), &pipeline.Session{}, tx, message(t, big))
	if v.Reply.String() != reply || v.Reason != `deny_body[0] "^CODEWORD$" matched line 1001 of the unparsed body` {
		t.Errorf("%q %q", v.Reply.String(), v.Reason)
	}
	// Past the first megabyte, nothing is looked at.
	late := "Subject: ok\r\n\r\n" + strings.Repeat("x", RawBodyLimit) + "\r\nCODEWORD\r\n"
	v = f.Data(context.Background(), &pipeline.Session{}, tx, message(t, late))
	if v.Action != pipeline.Continue || !strings.Contains(v.Reason, "first megabyte") {
		t.Errorf("late: %v %q", v.Action, v.Reason)
	}
	// The parsed header counts, not the raw one.
	tx.MIME.Header[0].Value = "bad news"
	if v := f.Data(context.Background(), &pipeline.Session{}, tx, message(t, big)); !strings.HasPrefix(v.Reason, "deny_headers[0]") {
		t.Errorf("header: %q", v.Reason)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{DenyBody: []string{"ok", "(unclosed"}}); err == nil || !strings.Contains(err.Error(), "deny_body[1]") {
		t.Errorf("err %v", err)
	}
	if _, err := New(Config{DenyHeaders: []string{"[z-a]"}}); err == nil || !strings.Contains(err.Error(), "deny_headers[0]") {
		t.Errorf("err %v", err)
	}
	f, _ := New(Config{})
	if f.Name() != "content" || f.Kind() != pipeline.Policy {
		t.Error("name/kind")
	}
	v := f.Data(context.Background(), &pipeline.Session{}, &pipeline.Transaction{}, message(t, "Subject: x\r\n\r\ny\r\n"))
	if v.Action != pipeline.Continue {
		t.Errorf("no patterns: %v", v.Action)
	}
}
