package pipeline

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDecisionLogJSON(t *testing.T) {
	session := []Decision{
		{Filter: "rdns", Stage: StageConnect, Verdict: PassBecause("ptr mail.example.org"), Duration: 1500 * time.Microsecond},
		{Filter: "quiet", Stage: StageConnect, Verdict: Pass()},
	}
	txn := []Decision{
		{Filter: "greylist", Stage: StageRcpt, Rcpt: "bob@example.com", Shadow: true,
			Verdict: Defer(451, [3]int{4, 7, 1}, "Greylisted", "new \"triplet\"\n<x>")},
		{Filter: "spf", Stage: StageMail, Skipped: true, Verdict: PassBecause("skipped: whitelisted")},
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("message", "decisions", decisionsAttr(session, txn))
	var rec struct{ Decisions []map[string]any }
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	want := []map[string]any{
		{"filter": "rdns", "stage": "connect", "verdict": "continue", "us": 1500.0, "reason": "ptr mail.example.org"},
		{"filter": "greylist", "stage": "rcpt", "verdict": "tempfail", "us": 0.0, "reason": "new \"triplet\"\n<x>",
			"rcpt": "bob@example.com", "shadow": true},
		{"filter": "spf", "stage": "mail", "verdict": "continue", "us": 0.0, "reason": "skipped: whitelisted", "skipped": true},
	}
	got, _ := json.Marshal(rec.Decisions)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("got  %s\nwant %s", got, exp)
	}

	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("message", "decisions", decisionsAttr(nil, nil))
	if !strings.Contains(buf.String(), `"decisions":null`) {
		t.Errorf("no decisions: %s", buf.String())
	}
	buf.Reset()
	slog.New(slog.NewTextHandler(&buf, nil)).Info("message", "decisions", decisionsAttr(session, txn))
	if !strings.Contains(buf.String(), `rdns/connect=continue`) || !strings.Contains(buf.String(), "[shadow]") {
		t.Errorf("text rendering: %s", buf.String())
	}
}

// FuzzAppendJSONString: the output is always valid JSON and, for valid
// UTF-8, decodes back to the input.
func FuzzAppendJSONString(f *testing.F) {
	f.Add("plain")
	f.Add("a\"b\\c\n\r\t\x00\x7f\u2028é\xff")
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q -> invalid JSON %s: %v", s, b, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("%q -> %s -> %q", s, b, back)
		}
	})
}
