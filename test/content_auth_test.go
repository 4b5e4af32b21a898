package test

// Sender authentication at DATA end to end: DKIM verification, DMARC,
// the Authentication-Results header and DKIM signing of authenticated
// submission, with the real binary, the in-process DNS server (dnstest)
// holding the DKIM keys and the DMARC and SPF records, and a recording
// upstream. Clients come from 127.0.5.0/24 (this file's range).

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailgate/internal/dnstest"
	"mailgate/internal/recorder"
	"mailgate/internal/resolver"
)

// caTXT is a zone-file TXT line for a long value (a DKIM key), cut into
// strings of at most 255 octets.
func caTXT(name, value string) string {
	var parts []string
	for len(value) > 200 {
		parts = append(parts, `"`+value[:200]+`"`)
		value = value[200:]
	}
	parts = append(parts, `"`+value+`"`)
	return name + ". 300 IN TXT " + strings.Join(parts, " ")
}

// caSign signs msg as the sending domain's own MTA would.
func caSign(t *testing.T, key ed25519.PrivateKey, msg, domain, selector string) string {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: selector, Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// caWorld is the DNS server, the upstream and a gateway with an MX
// listener and a submission listener, SPF, DKIM (verify and sign) and
// DMARC on.
type caWorld struct {
	dns       *dnstest.Server
	up        *recorder.Server
	env       *tlsEnv
	mx, sub   string
	gw        *gateway
	senderKey ed25519.PrivateKey // the key of the sending domains
}

func startContentAuth(t *testing.T) *caWorld {
	t.Helper()
	w := &caWorld{dns: dnstest.New(t), up: startUpstream(t, recorder.Options{}), env: newTLSEnv(t),
		mx: freeAddr(t), sub: freeAddr(t)}

	// The sending domains' keys and policies.
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w.senderKey = priv
	senderRecord := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	w.dns.Add(
		// signed.test: SPF, DKIM and DMARC p=reject.
		`signed.test. 300 IN TXT "v=spf1 ip4:127.0.5.0/24 -all"`,
		caTXT("s1._domainkey.signed.test", senderRecord),
		`_dmarc.signed.test. 300 IN TXT "v=DMARC1; p=reject"`,
		// strict.test: p=reject, and only DKIM can pass it (SPF neutral).
		`strict.test. 300 IN TXT "v=spf1 ?all"`,
		caTXT("s1._domainkey.strict.test", senderRecord),
		`_dmarc.strict.test. 300 IN TXT "v=DMARC1; p=reject"`,
		// plain.test publishes nothing.
		`plain.test. 300 IN A 192.0.2.1`,
		// example.com, ours: DMARC p=reject (our own users are not
		// evaluated) and the gateway's signing key.
		`_dmarc.example.com. 300 IN TXT "v=DMARC1; p=reject"`,
	)

	// The gateway's signing key for example.com: RSA, PKCS#1, as
	// "openssl genrsa -traditional" writes it.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "example.com.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	w.dns.Add(caTXT("gw2026._domainkey.example.com", "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der)))

	cfg := w.env.config(w.up.Addr(), listener("mx", w.mx, "none", "off"), listener("submission", w.sub, "starttls", "required")) +
		fmt.Sprintf(`dns: {servers: [%q], timeout: 500ms}
state: {store: "memory:"}
filters:
  spf: {}
  dkim:
    max_signatures: 3
    timeout: 2s
    sign:
      - {domain: example.com, selector: gw2026, key: %s}
  dmarc: {reject_policy: true}
`, w.dns.Addr(), keyFile)
	w.gw = startGateway(t, cfg, w.mx, w.sub)
	return w
}

// deliver sends msg to the MX listener from src.
func (w *caWorld) deliver(t *testing.T, src, from, msg string) error {
	t.Helper()
	c := client(t, src, w.mx)
	defer c.Quit()
	return send(c, from, []string{"bob@example.com"}, msg)
}

// got waits for the upstream's message from sender.
func (w *caWorld) got(t *testing.T, from string) recorder.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, m := range w.up.Messages() {
			if m.From == from {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream got no message from <%s>", from)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// authResults returns the unfolded values of the Authentication-Results
// fields of a message's header.
func authResults(data []byte) []string {
	header, _, _ := strings.Cut(string(data), "\r\n\r\n")
	header = strings.NewReplacer("\r\n\t", " ", "\r\n ", " ").Replace(header)
	var out []string
	for _, line := range strings.Split(header, "\r\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "Authentication-Results") {
			out = append(out, strings.TrimSpace(value))
		}
	}
	return out
}

// verifyDKIM checks a message's signatures as a recipient would, with the
// keys from the test DNS.
func (w *caWorld) verifyDKIM(t *testing.T, data []byte) []*dkim.Verification {
	t.Helper()
	r, err := resolver.New(resolver.Config{Servers: []string{w.dns.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return r.LookupTXT(ctx, name)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func caMessage(from, subject, body string) string {
	return fmt.Sprintf("From: %s\r\nTo: bob@example.com\r\nSubject: %s\r\nDate: Mon, 02 Jan 2026 10:00:00 +0000\r\n"+
		"Message-ID: <%d@test>\r\n\r\n%s\r\n", from, subject, time.Now().UnixNano(), body)
}

func TestContentAuth(t *testing.T) {
	t.Parallel()
	w := startContentAuth(t)

	// A message signed by its aligned domain is delivered, with our
	// Authentication-Results saying so, and the signature intact.
	t.Run("signed and aligned", func(t *testing.T) {
		msg := caSign(t, w.senderKey, caMessage("Alice <alice@signed.test>", "signed", "Hello Bob."), "signed.test", "s1")
		if err := w.deliver(t, "127.0.5.1", "alice@signed.test", msg); err != nil {
			t.Fatal(err)
		}
		m := w.got(t, "alice@signed.test")
		ars := authResults(m.Data)
		want := "mx.gateway.test; spf=pass reason=\"matched ip\" smtp.mailfrom=signed.test; " +
			"dkim=pass header.d=signed.test header.s=s1; dmarc=pass header.from=signed.test"
		if len(ars) != 1 || ars[0] != want {
			t.Errorf("Authentication-Results %q, want [%q]\n%s", ars, want, m.Data)
		}
		if !bytes.HasPrefix(m.Data, []byte("Received-SPF: pass")) || !bytes.Contains(m.Data, []byte("\r\nAuthentication-Results: mx.gateway.test;\r\n\tspf=pass")) {
			t.Errorf("header fields out of place:\n%s", m.Data)
		}
		if vs := w.verifyDKIM(t, m.Data); len(vs) != 1 || vs[0].Err != nil {
			t.Errorf("the upstream's copy no longer verifies: %+v", vs[0])
		}
		rec := w.gw.Log.WaitForClient(t, "message", "127.0.5.1")
		if d := envDecision(t, rec, "dkim"); d["verdict"] != "continue" || !strings.Contains(fmt.Sprint(d["reason"]), "dkim=pass d=signed.test") {
			t.Errorf("dkim decision %v", d)
		}
	})

	// The body changed after signing, from a p=reject domain whose SPF
	// does not pass: refused, and nothing reaches the upstream. The
	// same message unaltered is delivered.
	t.Run("altered body, p=reject", func(t *testing.T) {
		msg := caSign(t, w.senderKey, caMessage("bob@strict.test", "invoice", "Please pay 10 EUR."), "strict.test", "s1")
		err := w.deliver(t, "127.0.5.2", "bob@strict.test", strings.Replace(msg, "10 EUR", "9000 EUR", 1))
		wantCode(t, "DATA", err, 550, "5.7.1")
		if !containsText(err, "Message refused: DMARC policy of strict.test says reject") {
			t.Errorf("refusal %v", err)
		}
		rec := w.gw.Log.WaitForClient(t, "message", "127.0.5.2")
		if d := envDecision(t, rec, "dmarc"); d["verdict"] != "reject" {
			t.Errorf("dmarc decision %v", d)
		}
		if d := envDecision(t, rec, "dkim"); d["verdict"] != "continue" || !strings.Contains(fmt.Sprint(d["reason"]), "dkim=fail") {
			t.Errorf("dkim decision %v", d)
		}
		for _, m := range w.up.Messages() {
			if m.From == "bob@strict.test" {
				t.Fatalf("the altered message reached the upstream:\n%s", m.Data)
			}
		}
		if err := w.deliver(t, "127.0.5.3", "bob@strict.test", msg); err != nil {
			t.Fatalf("the unaltered message: %v", err)
		}
		if ars := authResults(w.got(t, "bob@strict.test").Data); len(ars) != 1 || !strings.Contains(ars[0], "dkim=pass header.d=strict.test") ||
			!strings.Contains(ars[0], "dmarc=pass header.from=strict.test") || !strings.Contains(ars[0], "spf=neutral") {
			t.Errorf("Authentication-Results %q", ars)
		}
	})

	// Forged Authentication-Results with our authserv-id are removed
	// before the upstream sees them; those of other servers are kept.
	t.Run("forged Authentication-Results", func(t *testing.T) {
		msg := "Authentication-Results: mx.gateway.test; dkim=pass header.d=bank.test;\r\n\tdmarc=pass header.from=bank.test\r\n" +
			"Authentication-Results: (really) MX.Gateway.Test ; spf=pass smtp.mailfrom=bank.test\r\n" +
			"Authentication-Results: \"mx.gateway.test\"; dmarc=pass header.from=bank.test\r\n" +
			"Authentication-Results: other.example; spf=pass smtp.mailfrom=plain.test\r\n" +
			caMessage("ceo@plain.test", "wire transfer", "Authentication-Results: mx.gateway.test; a body line stays.")
		if err := w.deliver(t, "127.0.5.4", "ceo@plain.test", msg); err != nil {
			t.Fatal(err)
		}
		m := w.got(t, "ceo@plain.test")
		ars := authResults(m.Data)
		want := []string{
			"mx.gateway.test; spf=none reason=\"no SPF record\" smtp.mailfrom=plain.test; dkim=none reason=\"message not signed\"; " +
				"dmarc=none reason=\"no DMARC record\" header.from=plain.test",
			"other.example; spf=pass smtp.mailfrom=plain.test",
		}
		if fmt.Sprint(ars) != fmt.Sprint(want) {
			t.Errorf("Authentication-Results\n%q\nwant\n%q", ars, want)
		}
		if bytes.Contains(m.Data, []byte("bank.test")) {
			t.Errorf("a forged result reached the upstream:\n%s", m.Data)
		}
		if !bytes.Contains(m.Data, []byte("\r\n\r\nAuthentication-Results: mx.gateway.test; a body line stays.\r\n")) {
			t.Errorf("the body was changed:\n%s", m.Data)
		}
	})

	// An authenticated user's message is signed with the configured key;
	// the upstream's copy verifies against the key in DNS.
	t.Run("authenticated submission signed", func(t *testing.T) {
		c, err := smtp.NewClientStartTLS(dialFrom(t, "127.0.5.5", w.sub), w.env.client())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", "alice", "alice-secret")); err != nil {
			t.Fatal(err)
		}
		msg := caMessage("Alice <alice@example.com>", "from a user", "Signed on the way out.")
		if err := send(c, "alice@example.com", []string{"friend@elsewhere.test"}, msg); err != nil {
			t.Fatalf("submission: %v", err)
		}
		_ = c.Quit()
		m := w.got(t, "alice@example.com")
		if !bytes.Contains(m.Data, []byte("DKIM-Signature: ")) {
			t.Fatalf("not signed:\n%s", m.Data)
		}
		vs := w.verifyDKIM(t, m.Data)
		if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.com" {
			t.Fatalf("verification %+v", vs[0])
		}
		for _, h := range []string{"from", "to", "subject", "date", "message-id"} {
			if !strings.Contains(strings.Join(vs[0].HeaderKeys, ":"), h) {
				t.Errorf("%s not signed: h=%v", h, vs[0].HeaderKeys)
			}
		}
		rec := w.gw.Log.WaitForClient(t, "message", "127.0.5.5")
		if d := envDecision(t, rec, "dkimsign"); !strings.HasPrefix(fmt.Sprint(d["reason"]), "signed d=example.com s=gw2026") {
			t.Errorf("dkimsign decision %v", d)
		}
		// Outbound mail of our own users is not held to DMARC (the
		// message is not signed yet when it is checked).
		if d := envDecision(t, rec, "dmarc"); d["verdict"] != "continue" {
			t.Errorf("dmarc decision %v", d)
		}
	})
}
