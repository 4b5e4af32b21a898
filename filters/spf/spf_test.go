package spf

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailgate/internal/dnstest"
	"mailgate/internal/mailaddr"
	"mailgate/internal/resolver"
	"mailgate/pipeline"
)

// newResolver points a real resolver at the test server.
func newResolver(t *testing.T, srv *dnstest.Server) *resolver.Resolver {
	t.Helper()
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newFilter(t *testing.T, c Config) *Filter {
	t.Helper()
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// run runs the filter for one MAIL FROM.
func run(t *testing.T, f *Filter, ip, from, helo string) (pipeline.Verdict, *pipeline.Transaction) {
	t.Helper()
	a, err := mailaddr.Parse(from)
	if err != nil {
		t.Fatalf("bad sender %q: %v", from, err)
	}
	s := &pipeline.Session{Client: netip.AddrPortFrom(netip.MustParseAddr(ip), 40000), Helo: helo}
	tr := &pipeline.Transaction{From: a}
	return f.Mail(context.Background(), s, tr), tr
}

// TestData runs the cases in testdata: NN-name.dns holds zone-file lines
// (and "servfail <suffix>" / "blackhole <suffix>"), NN-name.result lines
// "client-ip mail-from helo -> result [(reason)]" ("<>" is the null
// sender; the reason, when given, is the recorded one).
func TestData(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.dns")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".dns")
		t.Run(name, func(t *testing.T) {
			srv := dnstest.New(t)
			for _, line := range lines(t, file) {
				switch verb, arg, _ := strings.Cut(line, " "); verb {
				case "servfail":
					srv.ServFail(strings.TrimSpace(arg))
				case "blackhole":
					srv.Blackhole(strings.TrimSpace(arg))
				default:
					srv.Add(line)
				}
			}
			f := newFilter(t, Config{Resolver: newResolver(t, srv), Timeout: 2 * time.Second})
			cases := lines(t, strings.TrimSuffix(file, ".dns")+".result")
			if len(cases) == 0 {
				t.Fatal("no cases")
			}
			for _, c := range cases {
				lhs, rhs, _ := strings.Cut(c, "->")
				fields, want := strings.Fields(lhs), strings.Fields(rhs)
				if len(fields) != 3 || len(want) == 0 {
					t.Fatalf("bad case %q", c)
				}
				from := strings.TrimSuffix(strings.TrimPrefix(fields[1], "<"), ">")
				_, tr := run(t, f, fields[0], from, fields[2])
				got, ok := ResultOf(tr)
				if !ok {
					t.Fatalf("%s: no result recorded", c)
				}
				reason := strings.Trim(strings.Join(want[1:], " "), "()")
				if got.Result != want[0] || got.Reason != reason && reason != "" {
					t.Errorf("%s: got %s (%s)", c, got.Result, got.Reason)
				}
			}
		})
	}
}

// lines returns the non-blank, non-comment lines of a file.
func lines(t *testing.T, path string) []string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// zone has a domain for every result.
var zone = []string{
	"pass.test. 300 IN TXT \"v=spf1 ip4:127.0.0.1 -all\"",
	"fail.test. 300 IN TXT \"v=spf1 -all\"",
	"softfail.test. 300 IN TXT \"v=spf1 ~all\"",
	"neutral.test. 300 IN TXT \"v=spf1 ?all\"",
	"none.test. 300 IN A 127.0.0.1",
	"permerror.test. 300 IN TXT \"v=spf1 foo -all\"",
}

func TestActions(t *testing.T) {
	srv := dnstest.New(t, zone...)
	srv.ServFail("temperror.test")
	r := newResolver(t, srv)
	defaults := newFilter(t, Config{Resolver: r})
	strict := newFilter(t, Config{Resolver: r, SoftFail: Reject, Neutral: Reject, None: Tag, TempError: Reject, PermError: Reject, TagScore: 2.5})
	lenient := newFilter(t, Config{Resolver: r, Fail: Tempfail, SoftFail: Ignore, PermError: Tempfail, TempError: Ignore, Neutral: Tag})

	cases := []struct {
		f      *Filter
		domain string
		action pipeline.Action
		reply  string // Reject/Tempfail: the exact reply; Score: the tag
		score  float64
	}{
		{defaults, "pass.test", pipeline.Continue, "", 0},
		{defaults, "fail.test", pipeline.Reject, "550 5.7.23 Message rejected: sender domain does not designate your address as permitted sender", 0},
		{defaults, "softfail.test", pipeline.Score, "spf-softfail", 1},
		{defaults, "neutral.test", pipeline.Continue, "", 0},
		{defaults, "none.test", pipeline.Continue, "", 0},
		{defaults, "temperror.test", pipeline.Tempfail, "451 4.4.3 Temporary DNS error checking SPF, try again later", 0},
		{defaults, "permerror.test", pipeline.Continue, "", 0},

		{strict, "softfail.test", pipeline.Reject, "550 5.7.1 Message rejected by SPF policy", 0},
		{strict, "neutral.test", pipeline.Reject, "550 5.7.1 Message rejected by SPF policy", 0},
		{strict, "none.test", pipeline.Score, "spf-none", 2.5},
		{strict, "temperror.test", pipeline.Reject, "550 5.7.1 Message rejected by SPF policy", 0},
		{strict, "permerror.test", pipeline.Reject, "550 5.7.24 Message rejected: sender domain has an invalid SPF record", 0},
		{strict, "pass.test", pipeline.Continue, "", 0},

		{lenient, "fail.test", pipeline.Tempfail, "451 4.7.1 Message deferred by SPF policy, try again later", 0},
		{lenient, "permerror.test", pipeline.Tempfail, "451 4.7.1 Message deferred by SPF policy, try again later", 0},
		{lenient, "softfail.test", pipeline.Continue, "", 0},
		{lenient, "temperror.test", pipeline.Continue, "", 0},
		{lenient, "neutral.test", pipeline.Score, "spf-neutral", 1},
	}
	for _, c := range cases {
		v, _ := run(t, c.f, "127.0.0.1", "bob@"+c.domain, "mail.example.test")
		if v.Action != c.action {
			t.Errorf("%s: %v (%s), want %v", c.domain, v.Action, v.Reason, c.action)
			continue
		}
		want := "spf=" + strings.TrimSuffix(c.domain, ".test") + " domain " + c.domain
		if !strings.HasPrefix(v.Reason, want) {
			t.Errorf("%s: reason %q, want it to start with %q", c.domain, v.Reason, want)
		}
		switch v.Action {
		case pipeline.Reject, pipeline.Tempfail:
			if got := v.Reply.String(); got != c.reply {
				t.Errorf("%s: reply %q, want %q", c.domain, got, c.reply)
			}
		case pipeline.Score:
			if v.Tag != c.reply || v.Score != c.score {
				t.Errorf("%s: score %v tag %q, want %v %q", c.domain, v.Score, v.Tag, c.score, c.reply)
			}
		}
	}
}

// A DNS server that never answers costs at most Timeout, then temperror.
func TestTimeout(t *testing.T) {
	srv := dnstest.New(t)
	srv.Blackhole("slow.test")
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f := newFilter(t, Config{Resolver: r, Timeout: 300 * time.Millisecond})
	start := time.Now()
	v, tr := run(t, f, "127.0.0.1", "bob@slow.test", "mail.example.test")
	elapsed := time.Since(start)
	if elapsed < 300*time.Millisecond || elapsed > time.Second {
		t.Errorf("check took %v, want about 300ms", elapsed)
	}
	if res, _ := ResultOf(tr); res.Result != "temperror" {
		t.Errorf("result %+v, want temperror", res)
	}
	if got := v.Reply.String(); v.Action != pipeline.Tempfail || got != "451 4.4.3 Temporary DNS error checking SPF, try again later" {
		t.Errorf("verdict %v %q", v.Action, got)
	}
}

func TestAuthResults(t *testing.T) {
	srv := dnstest.New(t, zone...)
	srv.Add("mail.helo.test. 300 IN TXT \"v=spf1 ip4:127.0.0.1 -all\"")
	f := newFilter(t, Config{Resolver: newResolver(t, srv)})
	cases := []struct {
		from, helo string
		want       pipeline.AuthResult
	}{
		{"Bob@Pass.Test", "mail.helo.test", pipeline.AuthResult{Method: "spf", Result: "pass", Domain: "pass.test", Property: "smtp.mailfrom=pass.test", Reason: "matched ip"}},
		{"bob@fail.test", "mail.helo.test", pipeline.AuthResult{Method: "spf", Result: "fail", Domain: "fail.test", Property: "smtp.mailfrom=fail.test", Reason: "matched all"}},
		{"bob@none.test", "mail.helo.test", pipeline.AuthResult{Method: "spf", Result: "none", Domain: "none.test", Property: "smtp.mailfrom=none.test", Reason: "no SPF record"}},
		{"", "Mail.Helo.Test", pipeline.AuthResult{Method: "spf", Result: "pass", Domain: "mail.helo.test", Property: "smtp.helo=mail.helo.test", Reason: "matched ip"}},
		{"", "[127.0.0.1]", pipeline.AuthResult{Method: "spf", Result: "none", Property: "smtp.helo=", Reason: "no domain name to check"}},
	}
	for _, c := range cases {
		_, tr := run(t, f, "127.0.0.1", c.from, c.helo)
		if len(tr.AuthResults) != 1 || tr.AuthResults[0] != c.want {
			t.Errorf("%q/%q: %+v, want %+v", c.from, c.helo, tr.AuthResults, c.want)
		}
	}
	if _, ok := ResultOf(&pipeline.Transaction{}); ok {
		t.Error("ResultOf found a result in an unchecked transaction")
	}
}

func TestReceivedSPF(t *testing.T) {
	srv := dnstest.New(t, zone...)
	srv.Add("mail.helo.test. 300 IN TXT \"v=spf1 ip4:127.0.0.1 -all\"")
	r := newResolver(t, srv)
	named := newFilter(t, Config{Resolver: r, Hostname: "mx1.example.org"})
	anon := newFilter(t, Config{Resolver: r})
	cases := []struct {
		f              *Filter
		ip, from, helo string
		want           string
	}{
		{named, "127.0.0.1", "bob@pass.test", "mail.pass.test",
			"Received-SPF: pass (mx1.example.org: domain of bob@pass.test designates\r\n" +
				"\t127.0.0.1 as permitted sender) receiver=mx1.example.org;\r\n" +
				"\tclient-ip=127.0.0.1; envelope-from=\"bob@pass.test\";\r\n" +
				"\thelo=mail.pass.test; identity=mailfrom;\r\n"},
		{anon, "127.0.0.2", "bob@softfail.test", "mail.pass.test",
			"Received-SPF: softfail (domain of transitioning bob@softfail.test does not\r\n" +
				"\tdesignate 127.0.0.2 as permitted sender) client-ip=127.0.0.2;\r\n" +
				"\tenvelope-from=\"bob@softfail.test\"; helo=mail.pass.test;\r\n" +
				"\tidentity=mailfrom;\r\n"},
		{anon, "::1", "", "mail.helo.test",
			"Received-SPF: fail (domain of postmaster@mail.helo.test does not designate ::1\r\n" +
				"\tas permitted sender) client-ip=\"::1\"; envelope-from=\"\";\r\n" +
				"\thelo=mail.helo.test; identity=helo;\r\n"},
		{anon, "127.0.0.1", "", "[127.0.0.1]",
			"Received-SPF: none (no domain name to check) client-ip=127.0.0.1;\r\n" +
				"\tenvelope-from=\"\"; helo=\"[127.0.0.1]\"; identity=helo;\r\n"},
		// Quotes, parentheses and backslashes are escaped where they matter.
		{anon, "127.0.0.1", `"a(b)\"c\\d"@neutral.test`, `x;"y`,
			"Received-SPF: neutral (127.0.0.1 is neither permitted nor denied by domain of\r\n" +
				"\ta\\(b\\)\"c\\\\d@neutral.test) client-ip=127.0.0.1;\r\n" +
				"\tenvelope-from=\"\\\"a(b)\\\\\\\"c\\\\\\\\d\\\"@neutral.test\"; helo=\"x;\\\"y\";\r\n" +
				"\tidentity=mailfrom;\r\n"},
	}
	for _, c := range cases {
		_, tr := run(t, c.f, c.ip, c.from, c.helo)
		if len(tr.AddHeaders) != 1 || tr.AddHeaders[0] != c.want {
			t.Errorf("%q/%q:\n got %q\nwant %q", c.from, c.helo, tr.AddHeaders, c.want)
		}
	}
}

// Nothing a client sends can end the field early and start another one.
func TestReceivedSPFInjection(t *testing.T) {
	srv := dnstest.New(t, zone...)
	f := newFilter(t, Config{Resolver: newResolver(t, srv), Hostname: "mx1.example.org"})
	s := &pipeline.Session{Client: netip.MustParseAddrPort("127.0.0.1:40000"), Helo: "evil\r\nX-Helo: 1\n\x00\xff"}
	tr := &pipeline.Transaction{
		From:       pipeline.Address{Local: "x\r\nX-Injected: yes\r\n", Domain: "pass.test"},
		AddHeaders: []string{"X-Earlier: 1\r\n"},
	}
	f.Mail(context.Background(), s, tr)
	if len(tr.AddHeaders) != 2 || tr.AddHeaders[1] != "X-Earlier: 1\r\n" {
		t.Fatalf("headers %q: want Received-SPF prepended", tr.AddHeaders)
	}
	h := tr.AddHeaders[0]
	if !strings.HasPrefix(h, "Received-SPF: ") || !strings.HasSuffix(h, "\r\n") {
		t.Fatalf("header %q", h)
	}
	body := strings.TrimSuffix(h, "\r\n")
	for _, c := range []byte(strings.ReplaceAll(body, "\r\n\t", "")) {
		if c < ' ' || c > '~' {
			t.Fatalf("control or non-ASCII byte %#x outside a fold in %q", c, h)
		}
	}
	for _, line := range strings.Split(body, "\r\n") {
		if len(line) > 998 {
			t.Errorf("line of %d octets", len(line))
		}
	}
	if res, _ := ResultOf(tr); strings.ContainsAny(res.Reason+res.Property+res.Domain, "\r\n") {
		t.Errorf("auth result %+v", res)
	}
}

func TestNew(t *testing.T) {
	srv := dnstest.New(t)
	r := newResolver(t, srv)
	bad := []struct {
		c    Config
		want string
	}{
		{Config{}, "spf: no resolver"},
		{Config{Resolver: r, SoftFail: "rejct"}, `spf: softfail: unknown action "rejct" (want ignore, tag, reject or tempfail)`},
		{Config{Resolver: r, PermError: "Reject"}, `spf: permerror: unknown action "Reject" (want ignore, tag, reject or tempfail)`},
		{Config{Resolver: r, Timeout: -time.Second}, "spf: timeout: must not be negative"},
		{Config{Resolver: r, TagScore: -1}, "spf: tag_score: must not be negative"},
	}
	for _, b := range bad {
		if _, err := New(b.c); err == nil || err.Error() != b.want {
			t.Errorf("New(%+v): %v, want %q", b.c, err, b.want)
		}
	}
	f := newFilter(t, Config{Resolver: r})
	if f.Name() != "spf" || f.Kind() != pipeline.Antispam {
		t.Errorf("name %q kind %v", f.Name(), f.Kind())
	}
	if f.timeout != 10*time.Second || f.tagScore != 1 {
		t.Errorf("defaults: timeout %v tag score %v", f.timeout, f.tagScore)
	}
}

// TestEvaluationsReused: the same client, HELO and sender within
// resultTTL are evaluated once (same header, no lookups); a temporary
// error is never reused; after resultTTL it is evaluated again.
func TestEvaluationsReused(t *testing.T) {
	srv := dnstest.New(t, zone...)
	f := newFilter(t, Config{Resolver: newResolver(t, srv), Timeout: 200 * time.Millisecond})
	now := time.Now()
	f.now = func() time.Time { return now }
	_, first := run(t, f, "127.0.0.1", "bob@pass.test", "mail.example.test")

	// From now on every lookup times out: only a reused evaluation passes.
	dead := dnstest.New(t)
	dead.Blackhole("test")
	f.resolver = newResolver(t, dead)
	_, second := run(t, f, "127.0.0.1", "bob@pass.test", "mail.example.test")
	if first.AddHeaders[0] != second.AddHeaders[0] || second.AuthResults[0].Result != "pass" {
		t.Errorf("not reused:\n%q\n%q", first.AddHeaders, second.AddHeaders)
	}
	_, other := run(t, f, "127.0.0.2", "bob@pass.test", "mail.example.test")
	if other.AuthResults[0].Result != "temperror" {
		t.Errorf("another client got a reused result: %+v", other.AuthResults)
	}
	_, again := run(t, f, "127.0.0.2", "bob@pass.test", "mail.example.test")
	if again.AuthResults[0].Result != "temperror" || f.recent.Contains(evalKey{netip.MustParseAddr("127.0.0.2"), "mail.example.test", "bob@pass.test"}) {
		t.Errorf("a temperror was kept for reuse")
	}
	now = now.Add(resultTTL + time.Second)
	_, later := run(t, f, "127.0.0.1", "bob@pass.test", "mail.example.test")
	if later.AuthResults[0].Result != "temperror" {
		t.Errorf("after resultTTL: %+v, want a fresh evaluation", later.AuthResults)
	}
}
