package dkim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"mailgate/internal/dnstest"
	"mailgate/internal/resolver"
	"mailgate/internal/spool"
	"mailgate/pipeline"
)

// testKey is a signing key and its DNS record.
type testKey struct {
	signer crypto.Signer
	record string // the TXT value
}

func rsaKey(t testing.TB) testKey {
	t.Helper()
	// 1024 bits: the smallest verifiers accept (RFC 8301), and quick.
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{k, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)}
}

func edKey(t testing.TB) testKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}
}

// txt is a zone-file TXT line for a long value, cut into strings of at
// most 255 octets (RFC 1035 §3.3.14).
func txt(name, value string) string {
	var parts []string
	for len(value) > 200 {
		parts = append(parts, `"`+value[:200]+`"`)
		value = value[200:]
	}
	parts = append(parts, `"`+value+`"`)
	return name + ". 300 IN TXT " + strings.Join(parts, " ")
}

// publish puts the key at selector._domainkey.domain.
func (k testKey) publish(srv *dnstest.Server, domain, selector string) {
	srv.Add(txt(selector+"._domainkey."+domain, k.record))
}

// sign returns msg with a DKIM-Signature of d=domain s=selector prepended.
func (k testKey) sign(t testing.TB, msg, domain, selector string) string {
	t.Helper()
	var b bytes.Buffer
	err := msgdkim.Sign(&b, strings.NewReader(msg), &msgdkim.SignOptions{
		Domain: domain, Selector: selector, Signer: k.signer,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
		BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

const message = "From: Alice <alice@example.test>\r\nTo: bob@example.com\r\nSubject: hello\r\n" +
	"Date: Mon, 02 Jan 2026 10:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\nHello Bob.\r\n"

func spooled(t testing.TB, msg string) *pipeline.Message {
	t.Helper()
	m := spool.New(1<<20, 10<<20, t.TempDir())
	if _, err := m.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newFilter(t testing.TB, srv *dnstest.Server, c Config) *Filter {
	t.Helper()
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Resolver = r
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func run(t testing.TB, f *Filter, msg string) (pipeline.Verdict, []pipeline.AuthResult) {
	t.Helper()
	tr := &pipeline.Transaction{}
	v := f.Data(context.Background(), &pipeline.Session{}, tr, spooled(t, msg))
	if v.Action != pipeline.Continue {
		t.Errorf("verdict %v (%s): DKIM must never refuse", v.Action, v.Reason)
	}
	return v, tr.AuthResults
}

// short is a result in the form "result d= s=" for comparisons.
func short(rs []pipeline.AuthResult) string {
	var out []string
	for _, r := range rs {
		if r.Method != "dkim" {
			out = append(out, "method "+r.Method)
		}
		s := r.Result
		if r.Property != "" {
			s += " " + r.Property
		}
		if r.Domain != "" && !strings.Contains(r.Property, "header.d="+r.Domain) {
			s += " domain " + r.Domain
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

func TestVerify(t *testing.T) {
	srv := dnstest.New(t)
	rk, ek, other := rsaKey(t), edKey(t), rsaKey(t)
	rk.publish(srv, "example.test", "rsa")
	ek.publish(srv, "example.test", "ed")
	other.publish(srv, "example.test", "other")
	srv.Add(txt("revoked._domainkey.example.test", "v=DKIM1; k=rsa; p="))
	srv.Add(txt("bad._domainkey.example.test", "v=DKIM1; k=rsa; p=notbase64!"))
	srv.Add(txt("sha1._domainkey.example.test", rk.record+"; h=sha1"))
	srv.ServFail("broken.test")
	f := newFilter(t, srv, Config{})

	signed := rk.sign(t, message, "example.test", "rsa")
	cases := []struct {
		name, msg, want string
	}{
		{"unsigned", message, "none"},
		{"rsa", signed, "pass header.d=example.test header.s=rsa"},
		{"ed25519", ek.sign(t, message, "example.test", "ed"), "pass header.d=example.test header.s=ed"},
		{"altered body", strings.Replace(signed, "Hello Bob.", "Hello Bob!", 1), "fail header.d=example.test header.s=rsa"},
		{"altered subject", strings.Replace(signed, "Subject: hello", "Subject: HELLO", 1), "fail header.d=example.test header.s=rsa"},
		// Relaxed canonicalisation forgives white space changes.
		{"rewrapped white space", strings.Replace(signed, "Subject: hello", "Subject:   hello ", 1), "pass header.d=example.test header.s=rsa"},
		{"wrong key", rk.sign(t, message, "example.test", "other"), "fail header.d=example.test header.s=other"},
		{"no key", rk.sign(t, message, "example.test", "missing"), "permerror header.d=example.test header.s=missing"},
		{"revoked key", rk.sign(t, message, "example.test", "revoked"), "permerror header.d=example.test header.s=revoked"},
		{"bad key", rk.sign(t, message, "example.test", "bad"), "permerror header.d=example.test header.s=bad"},
		{"key for sha1 only", rk.sign(t, message, "example.test", "sha1"), "permerror header.d=example.test header.s=sha1"},
		{"DNS failure", rk.sign(t, message, "broken.test", "rsa"), "temperror header.d=broken.test header.s=rsa"},
		{"malformed signature", "DKIM-Signature: v=1; d=example.test; s=rsa; garbage\r\n" + message, "permerror header.d=example.test header.s=rsa"},
		{"wrong version", "DKIM-Signature: v=2; a=rsa-sha256; d=example.test; s=rsa; h=from; bh=; b=\r\n" + message, "permerror header.d=example.test header.s=rsa"},
		{"two signatures", ek.sign(t, signed, "example.test", "ed"), "pass header.d=example.test header.s=ed; pass header.d=example.test header.s=rsa"},
		{"one bad, one good", rk.sign(t, signed, "example.test", "missing"), "permerror header.d=example.test header.s=missing; pass header.d=example.test header.s=rsa"},
		// "dkim-signature" elsewhere in the header is no signature.
		{"mentioned only", "Subject: about DKIM-Signature\r\n" + message, "none"},
		{"obsolete name syntax", strings.Replace(signed, "DKIM-Signature:", "DKIM-Signature :", 1), "pass header.d=example.test header.s=rsa"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, rs := run(t, f, c.msg)
			if got := short(rs); got != c.want {
				t.Errorf("got %q, want %q (reason %q)", got, c.want, v.Reason)
			}
		})
	}
}

// The result details: reasons for failures, and the decision's summary.
func TestReasons(t *testing.T) {
	srv := dnstest.New(t)
	k := rsaKey(t)
	k.publish(srv, "example.test", "rsa")
	f := newFilter(t, srv, Config{})
	signed := k.sign(t, message, "example.test", "rsa")

	v, rs := run(t, f, strings.Replace(signed, "Hello", "Goodbye", 1))
	want := pipeline.AuthResult{Method: "dkim", Result: "fail", Domain: "example.test",
		Property: "header.d=example.test header.s=rsa", Reason: "body hash did not verify"}
	if len(rs) != 1 || rs[0] != want {
		t.Errorf("results %+v, want %+v", rs, want)
	}
	if v.Reason != "dkim=fail d=example.test (body hash did not verify)" {
		t.Errorf("reason %q", v.Reason)
	}
	v, rs = run(t, f, message)
	if want := (pipeline.AuthResult{Method: "dkim", Result: "none", Reason: "message not signed"}); len(rs) != 1 || rs[0] != want {
		t.Errorf("unsigned: %+v", rs)
	}
	if v.Reason != "dkim=none (message not signed)" {
		t.Errorf("unsigned reason %q", v.Reason)
	}
}

// At most max_signatures are verified: each costs a lookup and a hash.
func TestMaxSignatures(t *testing.T) {
	srv := dnstest.New(t)
	k := rsaKey(t)
	msg := message
	for i := range 4 {
		sel := fmt.Sprintf("s%d", i)
		k.publish(srv, "example.test", sel)
		msg = k.sign(t, msg, "example.test", sel)
	}
	f := newFilter(t, srv, Config{MaxSignatures: 2})
	v, rs := run(t, f, msg)
	// The newest signature is on top.
	if got, want := short(rs), "pass header.d=example.test header.s=s3; pass header.d=example.test header.s=s2"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !strings.HasSuffix(v.Reason, "more than 2 signatures: the rest not verified") {
		t.Errorf("reason %q", v.Reason)
	}
	if n := srv.Queries("s1._domainkey.example.test", 16) + srv.Queries("s0._domainkey.example.test", 16); n != 0 {
		t.Errorf("%d lookups for the signatures beyond the limit", n)
	}
}

// A key server that never answers costs at most the timeout: temperror.
func TestTimeout(t *testing.T) {
	srv := dnstest.New(t)
	srv.Blackhole("slow.test")
	k := rsaKey(t)
	f := newFilter(t, srv, Config{Timeout: 300 * time.Millisecond})
	start := time.Now()
	_, rs := run(t, f, k.sign(t, message, "slow.test", "rsa"))
	if d := time.Since(start); d < 300*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("took %v, want about 300ms", d)
	}
	if got := short(rs); got != "temperror header.d=slow.test header.s=rsa" {
		t.Errorf("got %q", got)
	}
}

// Authenticated submission is outbound mail: nothing to verify.
func TestAuthenticatedSkipped(t *testing.T) {
	srv := dnstest.New(t)
	f := newFilter(t, srv, Config{})
	tr := &pipeline.Transaction{}
	v := f.Data(context.Background(), &pipeline.Session{AuthUser: "alice"}, tr, spooled(t, rsaKey(t).sign(t, message, "example.test", "x")))
	if v.Action != pipeline.Continue || len(tr.AuthResults) != 0 {
		t.Errorf("verdict %+v, results %+v", v, tr.AuthResults)
	}
}

func TestNew(t *testing.T) {
	srv := dnstest.New(t)
	r, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	for _, c := range []Config{{}, {Resolver: r, MaxSignatures: -1}, {Resolver: r, Timeout: -1}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	f, err := New(Config{Resolver: r})
	if err != nil || f.max != 5 || f.timeout != 10*time.Second || f.Name() != "dkim" || f.Kind() != pipeline.Antispam {
		t.Errorf("defaults: %+v %v", f, err)
	}
}

// The selector is recorded only when it is a DNS name: it goes into a
// header field.
func TestSignatureTags(t *testing.T) {
	hdr := "Subject: x\r\n" +
		"DKIM-Signature: v=1; s = sel\r\n one; d=a.test\r\n" +
		"dkim-signature: s=\"x\r\n\tinjected: yes\"\r\n" +
		" DKIM-Signature: s=third\r\n" +
		"\r\nDKIM-Signature: s=body\r\n"
	got, err := signatureTags(strings.NewReader(hdr), 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []sigTags{{"a.test", "selone"}, {"", ""}}
	// " DKIM-Signature" after a field continues that field.
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	got, _ = signatureTags(strings.NewReader(" DKIM-Signature: s=first\r\n\r\n"), 10)
	if len(got) != 1 || got[0].selector != "first" {
		t.Errorf("a leading white-space field: %+v", got)
	}
}

func FuzzSignatureTags(f *testing.F) {
	f.Add("DKIM-Signature: v=1; s=sel; d=a.test\r\n\r\nbody")
	f.Add("x: y\r\n dkim-signature: s=a\r\nDKIM-Signature :s=b;s=c\r\n")
	f.Add(" DKIM-Signature: s=\xff\r\n")
	f.Fuzz(func(t *testing.T, hdr string) {
		got, err := signatureTags(strings.NewReader(hdr), 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 5 {
			t.Fatalf("%d signatures, max 5", len(got))
		}
		for _, s := range got {
			if cleanName(s.selector, false) != s.selector || cleanName(s.domain, true) != s.domain {
				t.Fatalf("unclean tags %+v", s)
			}
		}
	})
}
