package barring

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mailgate/internal/mailaddr"
	"mailgate/pipeline"
)

// TestLists runs the cases in testdata: each file is a list followed by
// "address -> barred|allowed" checks; addresses are parsed as the SMTP
// server parses them.
func TestLists(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			entries, checks := readCases(t, file)
			l, err := CompileList(entries)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range checks {
				a, err := mailaddr.Parse(c[0])
				if err != nil {
					t.Fatalf("%s: %v", c[0], err)
				}
				barred, entry := l.Barred(a.String())
				if got := map[bool]string{true: "barred", false: "allowed"}[barred]; got != c[1] {
					t.Errorf("%s (as %s): %s (entry %q), want %s", c[0], a, got, entry, c[1])
				}
			}
		})
	}
}

func readCases(t *testing.T, file string) (entries []string, checks [][2]string) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if addr, want, ok := strings.Cut(line, " -> "); ok {
			if want != "barred" && want != "allowed" {
				t.Fatalf("bad check %q", line)
			}
			checks = append(checks, [2]string{addr, want})
		} else {
			entries = append(entries, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return entries, checks
}

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, addr string
		want          bool
	}{
		{"*", "", false}, // one or more
		{"*", "a", true},
		{"a*", "a", false},
		{"a*", "ab", true},
		{"**", "a", false},
		{"**", "ab", true},
		{"*?*", "ab", false},
		{"*?*", "abc", true},
		{"*b*", "abc", true},
		{"*b*", "bc", false},
		{"*c", "abcbc", true},
		{"*bc", "abcbc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "abc", false},
		{"?", "é", true},
		{"??", "é", false},
		{"$", "K", true},
		{"$", "\u212a", false}, // Kelvin sign: ASCII letters only
		{"k", "\u212a", false},
		{"%", "٣", false}, // Arabic-Indic three: ASCII digits only
		{"A.b", "a.B", true},
		{"a.b", "axb", false}, // '.' is literal
		{"~abc", "abc", true}, // Match ignores the '~'
		{"~*", "~x", true},
	}
	for _, c := range cases {
		p, err := Compile(c.pattern)
		if err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		if got := p.Match(c.addr); got != c.want {
			t.Errorf("%q on %q: %v, want %v", c.pattern, c.addr, got, c.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, s := range []string{"", "~", strings.Repeat("a", MaxPatternLength+1), "a\xffb"} {
		if _, err := Compile(s); err == nil {
			t.Errorf("Compile(%q): no error", s)
		}
	}
	if _, err := Compile(strings.Repeat("*", MaxPatternLength)); err != nil {
		t.Errorf("longest pattern: %v", err)
	}
	_, err := CompileList([]string{"*@example.com", "~"})
	if err == nil || !strings.Contains(err.Error(), "entry 2") {
		t.Errorf("CompileList error %v does not name entry 2", err)
	}
	if _, err := New(Config{Recipients: []string{""}}); err == nil || !strings.Contains(err.Error(), "recipients") {
		t.Errorf("New error %v does not name the list", err)
	}
}

// TestWorstCase would take ages with a backtracking matcher:
// "*a*a*a...*b" against "aaaa...".
func TestWorstCase(t *testing.T) {
	p, err := Compile(strings.Repeat("*a", 200) + "*b")
	if err != nil {
		t.Fatal(err)
	}
	if p.Match(strings.Repeat("a", 256)) {
		t.Error("matched")
	}
}

func TestFilter(t *testing.T) {
	f, err := New(Config{
		Senders:    []string{"*@spam.test", "~ok@spam.test"},
		Recipients: []string{"*!*", "nobody@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.Name() != "barring" || f.Kind() != pipeline.Policy {
		t.Errorf("name %q kind %v", f.Name(), f.Kind())
	}
	ctx, s := context.Background(), &pipeline.Session{}
	mail := func(from string) pipeline.Verdict {
		a, err := mailaddr.Parse(from)
		if err != nil {
			t.Fatal(err)
		}
		return f.Mail(ctx, s, &pipeline.Transaction{From: a})
	}
	rcpt := func(to string) pipeline.Verdict {
		a, err := mailaddr.Parse(to)
		if err != nil {
			t.Fatal(err)
		}
		return f.Rcpt(ctx, s, &pipeline.Transaction{}, a)
	}

	v := mail("bad@spam.test")
	if v.Action != pipeline.Reject || v.Reply.String() != "550 5.7.1 Sender address rejected: barred" {
		t.Errorf("barred sender: %v %q", v.Action, v.Reply.String())
	}
	if strings.Contains(v.Reply.String(), "spam.test") || !strings.Contains(v.Reason, `"*@spam.test"`) {
		t.Errorf("reply %q reason %q: address echoed or entry not named", v.Reply.String(), v.Reason)
	}
	if v := mail("ok@spam.test"); v.Action != pipeline.Continue || !strings.Contains(v.Reason, "~ok@spam.test") {
		t.Errorf("excluded sender: %v %q", v.Action, v.Reason)
	}
	if v := mail(""); v.Action != pipeline.Continue {
		t.Errorf("null sender: %v", v.Action)
	}
	if v := mail("alice@example.com"); v.Action != pipeline.Continue || v.Reason != "" {
		t.Errorf("clean sender: %v %q", v.Action, v.Reason)
	}

	v = rcpt("host!nobody@example.com")
	if v.Action != pipeline.Reject || v.Reply.String() != "550 5.7.1 Recipient address rejected: barred" {
		t.Errorf("barred recipient: %v %q", v.Action, v.Reply.String())
	}
	if v := rcpt("NoBody@Example.com"); v.Action != pipeline.Reject {
		t.Errorf("barred recipient in capitals: %v", v.Action)
	}
	if v := rcpt("somebody@example.com"); v.Action != pipeline.Continue {
		t.Errorf("clean recipient: %v", v.Action)
	}
	// Senders are not checked against the recipient list and vice versa.
	if v := rcpt("bad@spam.test"); v.Action != pipeline.Continue {
		t.Errorf("sender entry applied to recipient: %v", v.Action)
	}
}

// TestWhitelistedSession: barring is policy, so an allow-listed session
// is still refused.
func TestWhitelistedSession(t *testing.T) {
	f, err := New(Config{Senders: []string{"*@spam.test"}})
	if err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(pipeline.Entry{Filter: f, Mode: pipeline.Enforce})
	from, _ := mailaddr.Parse("x@spam.test")
	s := &pipeline.Session{Whitelisted: true}
	if v := p.Mail(context.Background(), s, &pipeline.Transaction{From: from}); v.Action != pipeline.Reject {
		t.Errorf("whitelisted session: %v", v.Action)
	}
}
