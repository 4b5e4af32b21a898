// Package dkimsign signs the mail of authenticated users with DKIM
// (SPEC §3 filters.dkim.sign, RFC 6376), so that what they send passes
// DKIM and DMARC at its recipients.
//
// A message is signed when the session is authenticated and the domain of
// its From header field has a key: the domain's own, or else its
// organisational domain's (d=example.com signing for
// mail.example.com is aligned under DMARC's default relaxed alignment).
// Other messages pass unsigned; that is not an error.
//
// The signature covers the message as it goes upstream (after every
// header field removal), with relaxed/relaxed canonicalisation and
// rsa-sha256 or ed25519-sha256 per the key; the usual header fields are
// signed where present, and From once more than present, so that no
// second From can be added without breaking the signature.
//
// YAML (filters.dkim):
//
//	dkim:
//	  sign:
//	    - {domain: example.com, selector: s2026, key: /etc/mailgate/dkim/example.com.pem}
//
// The key is a PEM file: RSA (PKCS#1 "RSA PRIVATE KEY" or PKCS#8, at
// least 1024 bits, 2048 recommended) or Ed25519 (PKCS#8). Keys are read
// once, when the filter is built. The DNS record to publish at
// <selector>._domainkey.<domain> is "v=DKIM1; k=rsa; p=<base64 of the
// public key, PKIX DER>" (k=ed25519 for Ed25519: p= the raw 32 bytes).
//
// If signing fails the client gets 451 4.3.0 and retries: mail from a
// domain that has a key is never sent unsigned.
package dkimsign

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"strings"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"mailgate/filters/dmarc"
	"mailgate/pipeline"
)

// Key is one domain's signing key.
type Key struct {
	Domain   string
	Selector string
	File     string // PEM private key
}

// Config lists the signing keys.
type Config struct {
	Keys []Key
}

// signingKey is a loaded key.
type signingKey struct {
	domain, selector string
	signer           crypto.Signer
}

// Filter is the DKIM signer.
type Filter struct {
	keys map[string]signingKey // by domain
}

// New loads every key; an error names the file.
func New(c Config) (*Filter, error) {
	f := &Filter{keys: map[string]signingKey{}}
	for _, k := range c.Keys {
		domain := strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		if domain == "" || k.Selector == "" {
			return nil, fmt.Errorf("dkimsign: a key needs a domain and a selector (%s)", k.File)
		}
		if _, dup := f.keys[domain]; dup {
			return nil, fmt.Errorf("dkimsign: %s has two keys", domain)
		}
		signer, err := LoadKey(k.File)
		if err != nil {
			return nil, err
		}
		f.keys[domain] = signingKey{domain: domain, selector: k.Selector, signer: signer}
	}
	return f, nil
}

// LoadKey reads a PEM private key for DKIM: RSA (PKCS#1 or PKCS#8, at
// least 1024 bits, RFC 8301) or Ed25519 (PKCS#8). Errors name the file.
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkimsign: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("dkimsign: %s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("dkimsign: %s: %q is not a supported key (want RSA PRIVATE KEY or PRIVATE KEY)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("dkimsign: %s: %w", path, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 1024 {
			return nil, fmt.Errorf("dkimsign: %s: RSA key of %d bits: verifiers ignore keys under 1024 bits (RFC 8301)", path, k.N.BitLen())
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("dkimsign: %s: %T keys are not supported (want RSA or Ed25519)", path, key)
}

func (*Filter) Name() string        { return "dkimsign" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// signedFields are the header fields signed where present (RFC 6376
// §5.4.1), in this order.
var signedFields = []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "In-Reply-To", "References"}

// maxHeader bounds the header read to choose the key and the fields.
const maxHeader = 1 << 20

// replySignFailed: the message cannot go out unsigned, and a retry may
// well succeed.
var replySignFailed = pipeline.Defer(451, [3]int{4, 3, 0}, "Message could not be signed, try again later", "")

// Data signs the message of an authenticated user whose From domain has a
// key.
func (f *Filter) Data(_ context.Context, s *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	if s.AuthUser == "" {
		return pipeline.Pass()
	}
	r := t.MessageReader(m)
	header, err := textproto.NewReader(bufio.NewReader(io.LimitReader(r, maxHeader))).ReadMIMEHeader()
	_ = r.Close()
	if err != nil {
		// Malformed, over maxHeader, or without the empty line that ends
		// it: not something DKIM can sign.
		return pipeline.PassBecause("not signed: header not readable: " + err.Error())
	}
	domain, err := dmarc.AuthorDomain(header.Values("From"))
	if err != nil {
		return pipeline.PassBecause("not signed: " + err.Error())
	}
	key, ok := f.key(domain)
	if !ok {
		return pipeline.PassBecause("not signed: no key for " + domain)
	}
	// Sign the fields present (as often as present, bottom-up as RFC
	// 6376 §5.4.2 counts them), and From once more.
	var fields []string
	for _, name := range signedFields {
		for range header.Values(name) {
			fields = append(fields, strings.ToLower(name))
		}
	}
	fields = append(fields, "from")

	sig, err := sign(t.MessageReader(m), &msgdkim.SignOptions{
		Domain:                 key.domain,
		Selector:               key.selector,
		Signer:                 key.signer,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
		BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
		HeaderKeys:             fields,
	})
	if err != nil {
		return replySignFailed.WithReason(fmt.Sprintf("signing for %s (d=%s s=%s): %v", domain, key.domain, key.selector, err))
	}
	t.AddHeaders = append(t.AddHeaders, sig)
	return pipeline.PassBecause(fmt.Sprintf("signed d=%s s=%s for From domain %s", key.domain, key.selector, domain))
}

// key returns the domain's key, or its organisational domain's.
func (f *Filter) key(domain string) (signingKey, bool) {
	if k, ok := f.keys[domain]; ok {
		return k, true
	}
	k, ok := f.keys[dmarc.OrgDomain(domain)]
	return k, ok
}

// sign reads the message and returns the DKIM-Signature field (folded,
// with its CRLF).
func sign(r io.ReadCloser, opts *msgdkim.SignOptions) (string, error) {
	defer r.Close()
	s, err := msgdkim.NewSigner(opts)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(s, r); err != nil {
		_ = s.Close()
		return "", err
	}
	if err := s.Close(); err != nil {
		return "", err
	}
	return s.Signature(), nil
}
