package mime

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"mailgate/internal/mimeparse"
	"mailgate/internal/spool"
	"mailgate/pipeline"
)

func message(t *testing.T, s string) *pipeline.Message {
	t.Helper()
	m := spool.New(1<<20, 1<<20, "")
	t.Cleanup(func() { m.Close() })
	if _, err := m.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	return m
}

const good = "From: a@example.net\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
	"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf; name=x.pdf\r\n\r\n%PDF-1.4\r\n--b--\r\n"

func bomb(n int) string {
	var b strings.Builder
	b.WriteString("Subject: bomb\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i-1, i)
	}
	return b.String()
}

func TestParsed(t *testing.T) {
	f, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	tx := &pipeline.Transaction{}
	v := f.Data(context.Background(), &pipeline.Session{}, tx, message(t, good))
	if v.Action != pipeline.Continue || v.Reason != "" {
		t.Errorf("verdict %+v", v)
	}
	if tx.MIME == nil || len(tx.MIME.Parts) != 2 || tx.MIME.Parts[1].Filename != "x.pdf" {
		t.Fatalf("MIME %+v", tx.MIME)
	}
	if len(tx.AddHeaders) != 0 {
		t.Errorf("headers %q", tx.AddHeaders)
	}
}

func TestMalformed(t *testing.T) {
	for _, c := range []struct {
		policy, want, header string
	}{
		{"", "", "X-Mailgate-MIME: unparsed (multipart nesting deeper than 3 levels)\r\n"},
		{Accept, "", "X-Mailgate-MIME: unparsed (multipart nesting deeper than 3 levels)\r\n"},
		{Reject, "554 5.6.0 Message refused: malformed MIME structure (multipart nesting deeper than 3 levels)", ""},
	} {
		f, err := New(Config{Limits: mimeparse.Limits{MaxDepth: 3}, Malformed: c.policy})
		if err != nil {
			t.Fatal(err)
		}
		tx := &pipeline.Transaction{}
		v := f.Data(context.Background(), &pipeline.Session{}, tx, message(t, bomb(30)))
		if c.want == "" {
			if v.Action != pipeline.Continue || !strings.Contains(v.Reason, "nesting deeper") {
				t.Errorf("%q: verdict %+v", c.policy, v)
			}
		} else if v.Action != pipeline.Reject || v.Reply.String() != c.want || v.Reason != "malformed MIME: multipart nesting deeper than 3 levels" {
			t.Errorf("%q: verdict %+v", c.policy, v)
		}
		if got := strings.Join(tx.AddHeaders, ""); got != c.header {
			t.Errorf("%q: headers %q", c.policy, got)
		}
		if tx.MIME == nil || tx.MIME.Malformed == "" {
			t.Errorf("%q: MIME %+v", c.policy, tx.MIME)
		}
	}
}

func TestSkipped(t *testing.T) {
	f, _ := New(Config{Limits: mimeparse.Limits{MaxParseSize: 100}, Malformed: Reject})
	tx := &pipeline.Transaction{}
	v := f.Data(context.Background(), &pipeline.Session{}, tx, message(t, good))
	if v.Action != pipeline.Continue || v.Reason != "not MIME-parsed: larger than 100 bytes" {
		t.Errorf("verdict %+v", v)
	}
	if got := strings.Join(tx.AddHeaders, ""); got != "X-Mailgate-MIME: unparsed (larger than 100 bytes)\r\n" {
		t.Errorf("headers %q", got)
	}
	if !tx.MIME.Skipped || len(tx.MIME.Header) != 3 {
		t.Errorf("MIME %+v", tx.MIME)
	}
}

// TestForgedHeader: a sender's X-Mailgate-MIME is removed on the way
// upstream.
func TestForgedHeader(t *testing.T) {
	f, _ := New(Config{})
	tx := &pipeline.Transaction{}
	m := message(t, "X-Mailgate-MIME: parsed\r\nx-mailgate-mime: ok\r\nSubject: s\r\n\r\nbody\r\n")
	f.Data(context.Background(), &pipeline.Session{}, tx, m)
	r := tx.MessageReader(m)
	defer r.Close()
	got, _ := io.ReadAll(r)
	if string(got) != "Subject: s\r\n\r\nbody\r\n" {
		t.Errorf("upstream gets %q", got)
	}
}

// TestLongReasonFolded: the header stays within 78 columns.
func TestLongReasonFolded(t *testing.T) {
	h := header("unparsed (attached message: attached message: more than 200 MIME parts in a very long reason)")
	for _, line := range strings.Split(strings.TrimSuffix(h, "\r\n"), "\r\n") {
		if len(line) > 78 {
			t.Errorf("line of %d: %q", len(line), line)
		}
	}
	if !strings.HasPrefix(h, "X-Mailgate-MIME: unparsed (attached") || !strings.Contains(h, "\r\n\t") {
		t.Errorf("header %q", h)
	}
}

// TestReadError: a message that cannot be read is deferred.
func TestReadError(t *testing.T) {
	f, _ := New(Config{})
	r := io.MultiReader(strings.NewReader(good[:50]), iotest.ErrReader(io.ErrUnexpectedEOF))
	tx := &pipeline.Transaction{}
	v := f.parse(tx, r, int64(len(good)))
	if tx.MIME != nil || !strings.Contains(v.Reason, "unexpected EOF") {
		t.Errorf("MIME %+v, reason %q", tx.MIME, v.Reason)
	}
	if v.Action != pipeline.Tempfail || v.Reply.String() != "451 4.3.0 Temporary local problem, try again later" {
		t.Errorf("verdict %+v", v)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{Malformed: "bounce"}); err == nil {
		t.Error("unknown policy accepted")
	}
	if _, err := New(Config{Limits: mimeparse.Limits{MaxParts: -1}}); err == nil {
		t.Error("negative limit accepted")
	}
	f, _ := New(Config{})
	if f.Name() != "mime" || f.Kind() != pipeline.Policy {
		t.Error("name/kind")
	}
}
