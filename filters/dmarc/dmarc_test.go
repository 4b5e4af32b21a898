package dmarc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"mailgate/filters/dkim"
	"mailgate/internal/dnstest"
	"mailgate/internal/resolver"
	"mailgate/internal/spool"
	"mailgate/pipeline"
)

// testCase is one testdata/*.case file: directives, "---", the message.
//
//	dns <zone-file line>          a record of the test DNS server
//	servfail <suffix>             SERVFAIL for names under suffix
//	spf <result> <domain>         the SPF result recorded at MAIL
//	sign <domain>                 sign (d=domain, s=sel) with the test key, published in DNS
//	alter                         change the body after signing
//	config key=value ...          reject_policy, quarantine, temperror, tag_score
//	percent <n>                   the draw for pct= sampling (default 0)
//	auth <user>                   an authenticated session
//	want dmarc=<result> [header.from=<domain>] | nothing
//	verdict continue | reject <reply> | tempfail <reply> | score <points> <tag>
type testCase struct {
	dns, servfail, sign []string
	spf                 []string
	alter               bool
	config              Config
	percent             int
	auth                string
	want, verdict       string
	message             string
}

func parseCase(t *testing.T, path string) testCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, msg, ok := strings.Cut(string(data), "\n---\n")
	if !ok {
		t.Fatalf("%s: no --- line", path)
	}
	c := testCase{config: Config{RejectPolicy: true}, message: strings.ReplaceAll(msg, "\n", "\r\n")}
	sc := bufio.NewScanner(strings.NewReader(head))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch verb {
		case "dns":
			c.dns = append(c.dns, arg)
		case "servfail":
			c.servfail = append(c.servfail, arg)
		case "spf":
			c.spf = strings.Fields(arg)
		case "sign":
			c.sign = append(c.sign, arg)
		case "alter":
			c.alter = true
		case "config":
			for _, kv := range strings.Fields(arg) {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "reject_policy":
					c.config.RejectPolicy = v == "true"
				case "quarantine":
					c.config.Quarantine = v
				case "temperror":
					c.config.TempError = v
				case "tag_score":
					c.config.TagScore, _ = strconv.ParseFloat(v, 64)
				default:
					t.Fatalf("%s: unknown config key %q", path, k)
				}
			}
		case "percent":
			c.percent, _ = strconv.Atoi(arg)
		case "auth":
			c.auth = arg
		case "want":
			c.want = arg
		case "verdict":
			c.verdict = arg
		default:
			t.Fatalf("%s: unknown directive %q", path, line)
		}
	}
	if c.want == "" || c.verdict == "" {
		t.Fatalf("%s: want and verdict are required", path)
	}
	return c
}

// signer is the test key.
type signer struct {
	key    ed25519.PrivateKey
	record string
}

func newSigner(t *testing.T) signer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{priv, `"v=DKIM1; k=ed25519; p=` + base64.StdEncoding.EncodeToString(pub) + `"`}
}

func (s signer) sign(t *testing.T, msg, domain string) string {
	t.Helper()
	var b bytes.Buffer
	if err := msgdkim.Sign(&b, strings.NewReader(msg), &msgdkim.SignOptions{Domain: domain, Selector: "sel", Signer: s.key,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed, BodyCanonicalization: msgdkim.CanonicalizationRelaxed}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func spooled(t *testing.T, msg string) *pipeline.Message {
	t.Helper()
	m := spool.New(1<<20, 10<<20, t.TempDir())
	if _, err := m.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestData runs testdata/*.case: the real dkim filter verifies the
// message, then DMARC evaluates it.
func TestData(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.case")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	key := newSigner(t)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".case"), func(t *testing.T) {
			c := parseCase(t, file)
			srv := dnstest.New(t, c.dns...)
			for _, s := range c.servfail {
				srv.ServFail(s)
			}
			msg := c.message
			for _, d := range c.sign {
				srv.Add("sel._domainkey." + d + ". 300 IN TXT " + key.record)
				msg = key.sign(t, msg, d)
			}
			if c.alter {
				msg = strings.Replace(msg, "Hello", "Hullo", 1)
			}
			r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			c.config.Resolver = r
			f, err := New(c.config)
			if err != nil {
				t.Fatal(err)
			}
			f.percent = func() int { return c.percent }
			dk, err := dkim.New(dkim.Config{Resolver: r})
			if err != nil {
				t.Fatal(err)
			}

			s := &pipeline.Session{AuthUser: c.auth}
			tr := &pipeline.Transaction{}
			if len(c.spf) == 2 {
				tr.AuthResults = append(tr.AuthResults, pipeline.AuthResult{Method: "spf", Result: c.spf[0],
					Domain: c.spf[1], Property: "smtp.mailfrom=" + c.spf[1]})
			}
			m := spooled(t, msg)
			dk.Data(context.Background(), s, tr, m)
			v := f.Data(context.Background(), s, tr, m)

			got := "nothing"
			if ar, ok := tr.AuthResult("dmarc"); ok {
				got = strings.TrimSpace("dmarc=" + ar.Result + " " + ar.Property)
			}
			if got != c.want {
				t.Errorf("result %q, want %q (reason %q)", got, c.want, v.Reason)
			}
			if gotV := describe(v); gotV != c.verdict {
				t.Errorf("verdict %q, want %q (reason %q)", gotV, c.verdict, v.Reason)
			}
		})
	}
}

func describe(v pipeline.Verdict) string {
	switch v.Action {
	case pipeline.Reject:
		return "reject " + v.Reply.String()
	case pipeline.Tempfail:
		return "tempfail " + v.Reply.String()
	case pipeline.Score:
		return fmt.Sprintf("score %g %s", v.Score, v.Tag)
	}
	return v.Action.String()
}

// The decision's reason says why, for the log and explain.
func TestReason(t *testing.T) {
	srv := dnstest.New(t, `_dmarc.example.test. 300 IN TXT "v=DMARC1; p=reject; pct=50"`)
	r, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	f, err := New(Config{Resolver: r, RejectPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	f.percent = func() int { return 70 }
	tr := &pipeline.Transaction{AuthResults: []pipeline.AuthResult{
		{Method: "spf", Result: "pass", Domain: "other.test"},
		{Method: "dkim", Result: "fail", Domain: "example.test"},
		{Method: "dkim", Result: "pass", Domain: "list.test"},
	}}
	v := f.Data(context.Background(), &pipeline.Session{}, tr, spooled(t, "From: a@example.test\r\n\r\nx\r\n"))
	want := "dmarc=fail header.from=example.test policy=quarantine (milder: outside pct= sample): " +
		"spf=pass other.test not aligned, dkim=fail d=example.test, dkim=pass d=list.test not aligned"
	if v.Reason != want {
		t.Errorf("reason\n%q, want\n%q", v.Reason, want)
	}
	ar, _ := tr.AuthResult("dmarc")
	if ar.Reason != "spf=pass other.test not aligned, dkim=fail d=example.test, dkim=pass d=list.test not aligned" {
		t.Errorf("recorded reason %q", ar.Reason)
	}
}

func TestNew(t *testing.T) {
	srv := dnstest.New(t)
	r, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	for _, c := range []Config{
		{},
		{Resolver: r, Quarantine: "drop"},
		{Resolver: r, TempError: "reject"},
		{Resolver: r, TagScore: -1},
		{Resolver: r, Timeout: -1},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	f, err := New(Config{Resolver: r})
	if err != nil || f.quarantine != Tag || f.tempError != Ignore || f.tagScore != 1 || f.timeout != 10*time.Second {
		t.Errorf("defaults: %+v %v", f, err)
	}
	if f.Name() != "dmarc" || f.Kind() != pipeline.Antispam {
		t.Error("name or kind")
	}
	for range 100 {
		if p := f.percent(); p < 0 || p >= 100 {
			t.Fatalf("percent draw %d", p)
		}
	}
}

func TestOrgDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":             "example.com",
		"Mail.Example.COM.":       "example.com",
		"a.b.example.co.uk":       "example.co.uk",
		"co.uk":                   "co.uk",
		"mail.example.test":       "example.test",
		"localhost":               "localhost",
		"user.github.io":          "user.github.io",
		"deep.user.github.io":     "user.github.io",
		"xn--bcher-kva.example":   "xn--bcher-kva.example",
		"a.xn--bcher-kva.example": "xn--bcher-kva.example",
	} {
		if got := OrgDomain(in); got != want {
			t.Errorf("OrgDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthorDomain(t *testing.T) {
	cases := []struct {
		from []string
		want string
		err  error
	}{
		{[]string{"alice@example.org"}, "example.org", nil},
		{[]string{` "Alice" <Alice@Example.ORG> (comment)`}, "example.org", nil},
		{[]string{"=?utf-8?q?Al=C3=AFce?= <alice@example.org>"}, "example.org", nil},
		{[]string{"=?x-unknown?q?Alice?= <alice@example.org>"}, "example.org", nil},
		{[]string{`"mallory@evil.test" <alice@example.org>`}, "example.org", nil},
		{[]string{"group: a@example.org, b@example.org;"}, "example.org", nil},
		{[]string{"alice@bücher.example"}, "xn--bcher-kva.example", nil},
		{[]string{"Alice <alice@example.org"}, "example.org", nil}, // lenient
		{[]string{"alice@example.org."}, "example.org", nil},       // lenient, dot trimmed
		{nil, "", ErrNoFrom},
		{[]string{"a@example.org", "b@example.org"}, "", ErrSeveralFrom},
		{[]string{"undisclosed:;"}, "", ErrNoAuthor},
		{[]string{"no address here"}, "", ErrNoAuthor},
		{[]string{"a@example.org, b@evil.test"}, "", ErrSeveralAuths},
		{[]string{"<a@example.org> <b@evil.test"}, "", ErrSeveralAuths}, // lenient, two domains
		{[]string{"a@[192.0.2.1]"}, "", ErrBadDomain},
		{[]string{"a@localhost"}, "", ErrBadDomain},
		{[]string{"a@exa..mple.org"}, "", ErrBadDomain},
		{[]string{"a@" + strings.Repeat("a", 64) + ".org"}, "", ErrBadDomain},
	}
	for _, c := range cases {
		got, err := AuthorDomain(c.from)
		if got != c.want || err != c.err {
			t.Errorf("AuthorDomain(%q) = %q, %v; want %q, %v", c.from, got, err, c.want, c.err)
		}
	}
}

func TestFromFields(t *testing.T) {
	cases := []struct {
		header string
		want   []string
	}{
		{"From: a@b.test\r\nTo: c@d.test\r\n\r\nFrom: body@x.test\r\n", []string{" a@b.test"}},
		{"from: a@b.test\r\n\tcontinued\r\n", []string{" a@b.test\tcontinued"}},
		{"Subject: x\r\n continued\r\nFROM :a@b.test", []string{"a@b.test"}},
		{"From: a@b.test\nFrom: c@d.test\nFrom: e@f.test\n", []string{" a@b.test", " c@d.test"}},
		{"X-From: a@b.test\r\nFromage: x\r\n\r\n", nil},
		{"no colon\r\n continued From: x\r\nFrom: a@b.test\r\n\r\n", []string{" a@b.test"}},
		{"From: " + strings.Repeat("x", 100<<10) + "@b.test\r\nTo: y\r\n\r\n", []string{" " + strings.Repeat("x", maxFromField-1)}},
	}
	for _, c := range cases {
		got, err := fromFields(strings.NewReader(c.header))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("fromFields(%.60q) = %.80q, want %.80q", c.header, got, c.want)
		}
	}
}

// FuzzAuthorDomain: whatever the header, the domain found is a lower-case
// DNS name (it is looked up and named in replies) or there is an error.
func FuzzAuthorDomain(f *testing.F) {
	f.Add("From: Alice <alice@example.org>\r\n\r\nbody")
	f.Add("From: a@b.test,\r\n c@B.TEST\r\nFrom : x@y.test\r\n")
	f.Add("From: =?utf-8?b?w6k=?= <x@bücher.example>\r\n")
	f.Add("From: <a@[1.2.3.4]> \"x@y\"@z.test\r\n")
	f.Fuzz(func(t *testing.T, header string) {
		from, err := fromFields(strings.NewReader(header))
		if err != nil {
			t.Fatal(err)
		}
		if len(from) > 2 {
			t.Fatalf("%d From fields kept", len(from))
		}
		d, err := AuthorDomain(from)
		if err != nil {
			if d != "" {
				t.Fatalf("domain %q with error %v", d, err)
			}
			return
		}
		if n, ok := normalise(d); !ok || n != d {
			t.Fatalf("domain %q is not a normal DNS name", d)
		}
		for i := 0; i < len(d); i++ {
			if d[i] >= 'A' && d[i] <= 'Z' || d[i] >= 0x80 {
				t.Fatalf("domain %q not lower-case ASCII", d)
			}
		}
	})
}
