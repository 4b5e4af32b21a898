package authresults

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"

	"mailgate/internal/spool"
	"mailgate/pipeline"
)

func newFilter(t *testing.T) *Filter {
	t.Helper()
	f, err := New(Config{Hostname: "mx.gateway.test"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestHeader(t *testing.T) {
	f := newFilter(t)
	cases := []struct {
		name    string
		results []pipeline.AuthResult
		want    string
	}{
		{"nothing checked", nil, "Authentication-Results: mx.gateway.test; none\r\n"},
		{"all three", []pipeline.AuthResult{
			{Method: "spf", Result: "pass", Domain: "example.org", Property: "smtp.mailfrom=example.org", Reason: "matched ip"},
			{Method: "dkim", Result: "pass", Domain: "example.org", Property: "header.d=example.org header.s=s2026"},
			{Method: "dmarc", Result: "pass", Domain: "example.org", Property: "header.from=example.org"},
		}, "Authentication-Results: mx.gateway.test;\r\n" +
			"\tspf=pass reason=\"matched ip\" smtp.mailfrom=example.org;\r\n" +
			"\tdkim=pass header.d=example.org header.s=s2026;\r\n" +
			"\tdmarc=pass header.from=example.org\r\n"},
		{"none results", []pipeline.AuthResult{
			{Method: "spf", Result: "none", Property: "smtp.helo="},
			{Method: "dkim", Result: "none", Reason: "message not signed"},
		}, "Authentication-Results: mx.gateway.test;\r\n" +
			"\tspf=none;\r\n" +
			"\tdkim=none reason=\"message not signed\"\r\n"},
		// A long reason is folded at a space outside the quotes only, so
		// unfolding gives the same value back.
		{"long", []pipeline.AuthResult{
			{Method: "dkim", Result: "fail", Domain: "a-rather-long-subdomain.of-an-organisation.example.org",
				Property: "header.d=a-rather-long-subdomain.of-an-organisation.example.org header.s=selector-2026-01",
				Reason:   "signature did not verify: crypto/rsa: verification error"},
		}, "Authentication-Results: mx.gateway.test;\r\n" +
			"\tdkim=fail\r\n" +
			"\treason=\"signature did not verify: crypto/rsa: verification error\"\r\n" +
			"\theader.d=a-rather-long-subdomain.of-an-organisation.example.org\r\n" +
			"\theader.s=selector-2026-01\r\n"},
		// Nothing from a result can break out of its value or the field.
		{"hostile values", []pipeline.AuthResult{
			{Method: "dkim;x", Result: "pass\r\nX-Evil: 1", Property: "header.d=a\"b header.s=c\\d",
				Reason: "bad\r\nX-Injected: yes \"quoted\" \\"},
		}, "Authentication-Results: mx.gateway.test;\r\n" +
			"\tdkimx=passX-Evil1 reason=\"badX-Injected: yes quoted \" header.d=ab\r\n" +
			"\theader.s=cd\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := f.Header(c.results)
			if got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
			for _, line := range strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n") {
				if len(line) > 78 && strings.Contains(line, " ") && !strings.Contains(line, "reason=") {
					t.Errorf("line of %d columns: %q", len(line), line)
				}
			}
			// Unfolded, go-msgauth reads back what was meant.
			value := strings.NewReplacer("\r\n\t", " ").Replace(strings.TrimSuffix(strings.TrimPrefix(got, "Authentication-Results: "), "\r\n"))
			id, results, err := authres.Parse(value)
			if err != nil || id != "mx.gateway.test" || len(results) != len(c.results) {
				t.Errorf("parsed back: %q %d results, %v", id, len(results), err)
			}
		})
	}
}

func TestForged(t *testing.T) {
	f := newFilter(t)
	cases := []struct {
		field string
		drop  bool
	}{
		{"Authentication-Results: mx.gateway.test; dkim=pass header.d=bank.test\r\n", true},
		{"authentication-results: MX.Gateway.TEST; dkim=pass\r\n", true},
		{"Authentication-Results:mx.gateway.test;dkim=pass\r\n", true},
		{"Authentication-Results: mx.gateway.test.; dkim=pass\r\n", true},
		{"Authentication-Results: (our own) mx.gateway.test 1; spf=pass\r\n", true},
		{"Authentication-Results:\r\n\t(folded\r\n\t (nested) comment)\r\n\tmx.gateway.test;\r\n\tdmarc=pass\r\n", true},
		{"Authentication-Results: \"mx.gateway.test\"; dkim=pass\r\n", true},
		{"Authentication-Results: mx.gateway.test(comment); dkim=pass\r\n", true},
		{"Authentication-Results: mx.gateway.test; none\r\n", true},
		{"Authentication-Results: mx.gateway.test\r\n", true},
		{"Authentication-Results: other.example; dkim=pass\r\n", false},
		{"Authentication-Results: mx.gateway.test.evil.test; dkim=pass\r\n", false},
		{"Authentication-Results: evil-mx.gateway.test; dkim=pass\r\n", false},
		{"Authentication-Results: (mx.gateway.test) other.example; dkim=pass\r\n", false},
		{"Authentication-Results: ; mx.gateway.test\r\n", false},
		{"ARC-Authentication-Results: i=1; mx.gateway.test; dkim=pass\r\n", false},
		{"X-Authentication-Results: mx.gateway.test; dkim=pass\r\n", false},
		{"Received: from mx.gateway.test\r\n", false},
	}
	for _, c := range cases {
		name, _, _ := strings.Cut(c.field, ":")
		if got := f.Forged(name, []byte(c.field)); got != c.drop {
			t.Errorf("Forged(%q) = %v, want %v", c.field, got, c.drop)
		}
	}
}

// Through the pipeline: our field is added, the forged one is gone from
// what goes upstream, the foreign one is kept.
func TestData(t *testing.T) {
	f := newFilter(t)
	msg := "Authentication-Results: mx.gateway.test; dkim=pass header.d=bank.test\r\n" +
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=x.test\r\n" +
		"From: ceo@bank.test\r\n" +
		"Authentication-Results:\r\n MX.GATEWAY.TEST;\r\n dmarc=pass\r\n" +
		"Subject: hi\r\n\r\nAuthentication-Results: mx.gateway.test; body line, kept\r\n"
	m := spool.New(1<<20, 1<<20, t.TempDir())
	defer m.Close()
	_, _ = m.Write([]byte(msg))
	tr := &pipeline.Transaction{AuthResults: []pipeline.AuthResult{{Method: "spf", Result: "fail", Property: "smtp.mailfrom=bank.test"}}}
	v := f.Data(context.Background(), &pipeline.Session{}, tr, m)
	if v.Action != pipeline.Continue {
		t.Errorf("verdict %+v", v)
	}
	if len(tr.AddHeaders) != 1 || tr.AddHeaders[0] != "Authentication-Results: mx.gateway.test;\r\n\tspf=fail smtp.mailfrom=bank.test\r\n" {
		t.Errorf("added %q", tr.AddHeaders)
	}
	r := tr.MessageReader(m)
	out, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := "Authentication-Results: other.example; spf=pass smtp.mailfrom=x.test\r\n" +
		"From: ceo@bank.test\r\n" +
		"Subject: hi\r\n\r\nAuthentication-Results: mx.gateway.test; body line, kept\r\n"
	if string(out) != want {
		t.Errorf("upstream copy\n%q\nwant\n%q", out, want)
	}
}

func TestNew(t *testing.T) {
	for _, h := range []string{"", "mx;evil", "mx gateway", "\"mx\""} {
		if _, err := New(Config{Hostname: h}); err == nil {
			t.Errorf("New(%q) accepted", h)
		}
	}
	f := newFilter(t)
	if f.Name() != "authresults" || f.Kind() != pipeline.Policy {
		t.Error("name or kind")
	}
	if f, err := New(Config{Hostname: "mx.example.org."}); err != nil || f.id != "mx.example.org" {
		t.Errorf("trailing dot: %+v %v", f, err)
	}
}

func TestAuthservID(t *testing.T) {
	cases := []struct {
		in, id string
		ok     bool
	}{
		{" example.org; spf=pass", "example.org", true},
		{"example.org", "example.org", true},
		{"\r\n\texample.org 1; none", "example.org", true},
		{" (c (nested \\) still) c) example.org;", "example.org", true},
		{" \"quoted id\\\"x\"; none", "quoted id\"x", true},
		{" \"unterminated", "unterminated", true},
		{") example.org;", "example.org", true},
		{" example.org/junk;", "example.org", true},
		{"", "", false},
		{"  (only a comment)  ", "", false},
		{" ; spf=pass", "", false},
		{" \"\"; none", "", false},
		{" \xffexample.org", "", false},
	}
	for _, c := range cases {
		id, ok := AuthservID(c.in)
		if id != c.id || ok != c.ok {
			t.Errorf("AuthservID(%q) = %q, %v; want %q, %v", c.in, id, ok, c.id, c.ok)
		}
	}
}

// FuzzAuthservID: never a panic; an id found is a token or came from a
// quoted string; a value we write ourselves is always recognised, however
// it is wrapped in white space and comments.
func FuzzAuthservID(f *testing.F) {
	f.Add("mx.gateway.test; dkim=pass", "")
	f.Add("(x) \"mx.gateway.test\" 1;", "(a\\)b)")
	f.Add("\r\n\t(((", "\\")
	f.Fuzz(func(t *testing.T, v, comment string) {
		id, ok := AuthservID(v)
		if ok != (id != "") {
			t.Fatalf("AuthservID(%q) = %q, %v", v, id, ok)
		}
		if ok && !strings.Contains(v, id) && !strings.Contains(v, "\"") {
			t.Fatalf("AuthservID(%q) = %q: not in the value", v, id)
		}
		// A well-formed comment before our own id never hides it.
		if !wellFormedComment(comment) {
			return
		}
		if id, _ := AuthservID(" " + comment + "\r\n\tmx.gateway.test; spf=pass"); id != "mx.gateway.test" {
			t.Fatalf("comment %q hid the id: got %q", comment, id)
		}
	})
}

// wellFormedComment reports whether s is a balanced RFC 5322 comment
// (or empty).
func wellFormedComment(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != '(' {
		return false
	}
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
			if i >= len(s) {
				return false
			}
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 && i != len(s)-1 {
				return false
			}
		}
	}
	return depth == 0
}

// FuzzHeader: whatever the results hold, the field is one well-formed
// header field: folded lines only, our authserv-id first, and go-msgauth
// reads one result per (non-empty) method back.
func FuzzHeader(f *testing.F) {
	f.Add("dkim", "pass", "header.d=example.org header.s=s1", "")
	f.Add("spf", "fail\r\nX: y", "smtp.mailfrom=a\"b", "reason \"quoted\" \\ (x)")
	f.Add("", "", "=", "\x00\xff")
	f.Fuzz(func(t *testing.T, method, result, property, reason string) {
		fl, _ := New(Config{Hostname: "mx.gateway.test"})
		results := []pipeline.AuthResult{
			{Method: method, Result: result, Property: property, Reason: reason},
			{Method: "dmarc", Result: "pass", Property: "header.from=example.org"},
		}
		h := fl.Header(results)
		if !strings.HasPrefix(h, "Authentication-Results: mx.gateway.test;") || !strings.HasSuffix(h, "\r\n") {
			t.Fatalf("field %q", h)
		}
		for i, line := range strings.Split(strings.TrimSuffix(h, "\r\n"), "\r\n") {
			if i > 0 && !strings.HasPrefix(line, "\t") || strings.ContainsAny(line, "\r\n") {
				t.Fatalf("line %d of %q is no continuation", i, h)
			}
		}
		value := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(h, "Authentication-Results:"), "\r\n"), "\r\n\t", " ")
		if id, ok := AuthservID(value); !ok || id != "mx.gateway.test" {
			t.Fatalf("authserv-id %q in %q", id, h)
		}
		want := 1
		if keyword(method) != "" {
			want = 2
		}
		if _, rs, err := authres.Parse(value); err != nil || len(rs) != want {
			t.Fatalf("parsed %q: %d results, %v", value, len(rs), err)
		}
	})
}
