package dkimsign

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"mailgate/internal/spool"
	"mailgate/pipeline"
)

// keys are written to files once per test and published in a map that
// stands in for DNS.
type keyring struct {
	dir string
	dns map[string]string // TXT records by name
}

func newKeyring(t *testing.T) *keyring {
	return &keyring{dir: t.TempDir(), dns: map[string]string{}}
}

func (k *keyring) write(t *testing.T, name string, block *pem.Block) string {
	t.Helper()
	path := filepath.Join(k.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rsaKey writes an RSA key (PKCS#1 or PKCS#8) and publishes its public key.
func (k *keyring) rsaKey(t *testing.T, domain, selector string, pkcs8 bool) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	if pkcs8 {
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	k.dns[selector+"._domainkey."+domain] = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
	return k.write(t, domain+".pem", block)
}

func (k *keyring) edKey(t *testing.T, domain, selector string) string {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	k.dns[selector+"._domainkey."+domain] = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	return k.write(t, domain+".pem", &pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func (k *keyring) lookup(name string) ([]string, error) {
	if v, ok := k.dns[name]; ok {
		return []string{v}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// verify checks the DKIM signatures of a message as a recipient would.
func (k *keyring) verify(t *testing.T, msg string) []*msgdkim.Verification {
	t.Helper()
	v, err := msgdkim.VerifyWithOptions(strings.NewReader(msg), &msgdkim.VerifyOptions{LookupTXT: k.lookup})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const message = "From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nCc: carol@example.net\r\n" +
	"Subject: hello\r\nDate: Mon, 02 Jan 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n" +
	"X-Mailer: test\r\nReceived: from client\r\n\r\nHello Bob.\r\n"

// sent runs the filter on msg and returns the verdict and the message as
// the upstream would get it (added fields first, dropped ones gone).
func sent(t *testing.T, f *Filter, user, msg string, drop func(string, []byte) bool) (pipeline.Verdict, *pipeline.Transaction, string) {
	t.Helper()
	m := spool.New(1<<20, 10<<20, t.TempDir())
	defer m.Close()
	if _, err := m.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	tr := &pipeline.Transaction{AddHeaders: []string{"Received-SPF: none\r\n"}}
	if drop != nil {
		tr.AddDropHeader(drop)
	}
	v := f.Data(context.Background(), &pipeline.Session{AuthUser: user}, tr, m)
	r := tr.MessageReader(m)
	body, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	return v, tr, strings.Join(tr.AddHeaders, "") + "Received: from us\r\n" + string(body)
}

func TestSign(t *testing.T) {
	k := newKeyring(t)
	f, err := New(Config{Keys: []Key{
		{Domain: "Example.COM.", Selector: "s2026", File: k.rsaKey(t, "example.com", "s2026", false)},
		{Domain: "example.org", Selector: "ed", File: k.edKey(t, "example.org", "ed")},
		{Domain: "example.net", Selector: "p8", File: k.rsaKey(t, "example.net", "p8", true)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, from, domain, algo, selector string
	}{
		{"rsa pkcs1", "Alice <alice@example.com>", "example.com", "rsa-sha256", "s2026"},
		{"ed25519", "alice@Example.Org", "example.org", "ed25519-sha256", "ed"},
		{"rsa pkcs8", "alice@example.net", "example.net", "rsa-sha256", "p8"},
		// A subdomain is signed with its organisational domain's key:
		// aligned under relaxed DMARC.
		{"subdomain", "alice@mail.example.com", "example.com", "rsa-sha256", "s2026"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := strings.Replace(message, "Alice <alice@example.com>", c.from, 1)
			v, tr, up := sent(t, f, "alice", msg, nil)
			if v.Action != pipeline.Continue || !strings.HasPrefix(v.Reason, "signed d="+c.domain+" s="+c.selector) {
				t.Fatalf("verdict %v %q", v.Action, v.Reason)
			}
			sig := tr.AddHeaders[len(tr.AddHeaders)-1]
			for _, want := range []string{"DKIM-Signature:", "a=" + c.algo + ";", "c=relaxed/relaxed;", "d=" + c.domain + ";", "s=" + c.selector + ";",
				"h=from:to:cc:subject:date:message-id:from;"} {
				if !strings.Contains(sig, want) {
					t.Errorf("signature lacks %q:\n%s", want, sig)
				}
			}
			if !strings.HasSuffix(sig, "\r\n") {
				t.Errorf("signature field not terminated: %q", sig)
			}
			vs := k.verify(t, up)
			if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != c.domain {
				t.Fatalf("verification %+v", vs[0])
			}
			// What the signature protects.
			for _, change := range [][2]string{{"Hello Bob.", "Hello Eve."}, {"Subject: hello", "Subject: pay now"},
				{"Subject: hello\r\n", "Subject: hello\r\nFrom: mallory@evil.test\r\n"}} {
				if vs := k.verify(t, strings.Replace(up, change[0], change[1], 1)); vs[0].Err == nil {
					t.Errorf("still verifies after %q -> %q", change[0], change[1])
				}
			}
			// What it leaves alone: trace fields added on the way.
			if vs := k.verify(t, "Received: from next.hop\r\n"+up); vs[0].Err != nil {
				t.Errorf("a Received field on top broke it: %v", vs[0].Err)
			}
		})
	}
}

// The signature covers the message as it goes upstream: after the header
// fields other filters remove.
func TestSignsWhatGoesUpstream(t *testing.T) {
	k := newKeyring(t)
	f, err := New(Config{Keys: []Key{{Domain: "example.com", Selector: "s", File: k.edKey(t, "example.com", "s")}}})
	if err != nil {
		t.Fatal(err)
	}
	msg := "Authentication-Results: mx.gateway.test; dkim=pass\r\n" + message
	drop := func(name string, _ []byte) bool { return strings.EqualFold(name, "Authentication-Results") }
	_, _, up := sent(t, f, "alice", msg, drop)
	if strings.Contains(up, "dkim=pass") {
		t.Fatal("the dropped field reached the upstream")
	}
	if vs := k.verify(t, up); vs[0].Err != nil {
		t.Errorf("upstream copy does not verify: %v", vs[0].Err)
	}
}

func TestNotSigned(t *testing.T) {
	k := newKeyring(t)
	f, err := New(Config{Keys: []Key{{Domain: "example.com", Selector: "s", File: k.edKey(t, "example.com", "s")}}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, user, msg, reason string
	}{
		{"not authenticated", "", message, ""},
		{"no key", "alice", strings.Replace(message, "alice@example.com", "alice@other.test", 1), "not signed: no key for other.test"},
		{"two From fields", "alice", "From: bob@example.com\r\n" + message, "not signed: several From header fields"},
		{"no From", "alice", strings.Replace(message, "From:", "Sender:", 1), "not signed: no From header field"},
		{"no end of header", "alice", "From: alice@example.com\r\nSubject: x\r\n", "not signed: header not readable: EOF"},
		{"malformed header", "alice", "From: alice@example.com\r\nno colon\r\n\r\nbody\r\n", `not signed: header not readable: malformed MIME header: missing colon: "no colon"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, tr, _ := sent(t, f, c.user, c.msg, nil)
			if v.Action != pipeline.Continue || v.Reason != c.reason {
				t.Errorf("verdict %v %q, want continue %q", v.Action, v.Reason, c.reason)
			}
			if len(tr.AddHeaders) != 1 {
				t.Errorf("fields added: %q", tr.AddHeaders)
			}
		})
	}
}

// failingSigner is a key whose signing fails (an HSM gone away).
type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("key unavailable")
}

func TestSignFailure(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	f := &Filter{keys: map[string]signingKey{"example.com": {domain: "example.com", selector: "s", signer: failingSigner{priv}}}}
	v, tr, _ := sent(t, f, "alice", message, nil)
	if v.Action != pipeline.Tempfail || v.Reply.String() != "451 4.3.0 Message could not be signed, try again later" {
		t.Errorf("verdict %v %q", v.Action, v.Reply.String())
	}
	if !strings.Contains(v.Reason, "key unavailable") || len(tr.AddHeaders) != 1 {
		t.Errorf("reason %q, headers %q", v.Reason, tr.AddHeaders)
	}
}

func TestLoadKeyErrors(t *testing.T) {
	k := newKeyring(t)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecSEC, _ := x509.MarshalECPrivateKey(ec)
	notPEM := filepath.Join(k.dir, "not.pem")
	_ = os.WriteFile(notPEM, []byte("not a key"), 0o600)
	cases := map[string]string{
		filepath.Join(k.dir, "missing.pem"): "no such file",
		notPEM:                              "no PEM block",
		k.write(t, "ec8.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}):               "*ecdsa.PrivateKey keys are not supported",
		k.write(t, "ec.pem", &pem.Block{Type: "EC PRIVATE KEY", Bytes: ecSEC}):             `"EC PRIVATE KEY" is not a supported key`,
		k.write(t, "junk.pem", &pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("junk")}): "asn1",
	}
	for path, want := range cases {
		_, err := New(Config{Keys: []Key{{Domain: "example.com", Selector: "s", File: path}}})
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want the file named and %q", filepath.Base(path), err, want)
		}
	}
	good := k.edKey(t, "example.com", "s")
	if _, err := New(Config{Keys: []Key{{Domain: "example.com", Selector: "s", File: good}, {Domain: "EXAMPLE.com.", Selector: "t", File: good}}}); err == nil {
		t.Error("two keys for one domain accepted")
	}
	if _, err := New(Config{Keys: []Key{{Domain: "example.com", File: good}}}); err == nil {
		t.Error("a key without selector accepted")
	}
	if f, err := New(Config{}); err != nil || f.Name() != "dkimsign" || f.Kind() != pipeline.Policy {
		t.Errorf("empty config: %v", err)
	}
}

// A 512-bit RSA key is refused when loaded, whoever notices first (Go's
// parser or our RFC 8301 check).
func TestShortRSAKey(t *testing.T) {
	k := newKeyring(t)
	// Go no longer generates such keys; this one was made with
	// "openssl genrsa 512".
	block, _ := pem.Decode([]byte(shortKey))
	path := k.write(t, "short.pem", block)
	if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("512-bit key: %v", err)
	}
}

const shortKey = `-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAx1haGyyHLKj8Ipur
U1PTqcOfxL1Z6AQWUUJlsESH75tXUdIBPiriuwKlGmHRSzjo8cu/2M/VtsCmwT75
b7bpnwIDAQABAkB3oXwhxq0wjhESK927WhkyTiX5ibEE3j8OcQxZpib2EXBKyJG1
GSpHoGURtr6ft7LKs6JnGfZLfpmdeLMr6iuRAiEA/vR8jpCgHywEHGbg6jUrFqJs
CgRgk4fEaOysr8ROz1MCIQDIKYQt+IU1kMX6omzQSd0eH+TuCXfADwHVAi9Erf0P
BQIgF4Q7nPbQHi/0LR58Ln46/Dp9FqtysQj73+W8w/Wqg0sCIQCNiLW7X+CpmL41
VIbG3YPqGjlhi/ZOKw5rlUjhMnofFQIhAMg/JvIn9HFm9c7Ztsk7msAp3vUrA54K
fUpa97nX7sQz
-----END PRIVATE KEY-----
`
