// Package dkim verifies the DKIM signatures of incoming mail at DATA
// (SPEC §4 data, RFC 6376) with go-msgauth, looking the keys up through
// the gateway's own resolver.
//
// Each verified signature becomes a pipeline.AuthResult ("dkim", with
// the signing domain) for the dmarc filter and the Authentication-Results
// header; a message without signatures gets one "none". A signature that
// fails is never a reason to refuse the message by itself (RFC 6376
// §6.3): DMARC decides what a failure means for the author's domain.
//
// YAML (filters.dkim), with the defaults:
//
//	dkim:
//	  verify: true          # false: no verification (signing only)
//	  max_signatures: 5     # verified per message; the rest are ignored
//	  timeout: 10s          # bound on all key lookups of a message
//
// Mail from authenticated users is outbound and not verified. Signing
// (filters.dkim.sign) is the dkimsign filter.
package dkim

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"mailgate/pipeline"
)

// Resolver looks up TXT records: the gateway's *resolver.Resolver.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Config is the verification policy.
type Config struct {
	// MaxSignatures verified per message (default 5): each costs a DNS
	// lookup and a hash of the body, so a message with hundreds of
	// signatures must not cost hundreds.
	MaxSignatures int
	// Timeout bounds all key lookups of a message (default 10s).
	Timeout  time.Duration
	Resolver Resolver
}

// Filter is the DKIM verifier.
type Filter struct {
	max      int
	timeout  time.Duration
	resolver Resolver
}

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	if c.Resolver == nil {
		return nil, errors.New("dkim: no resolver")
	}
	if c.MaxSignatures < 0 {
		return nil, errors.New("dkim: max_signatures: must not be negative")
	}
	if c.Timeout < 0 {
		return nil, errors.New("dkim: timeout: must not be negative")
	}
	return &Filter{
		max:      cmp.Or(c.MaxSignatures, 5),
		timeout:  cmp.Or(c.Timeout, 10*time.Second),
		resolver: c.Resolver,
	}, nil
}

func (*Filter) Name() string        { return "dkim" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

// Data verifies the signatures and records their results. It never
// refuses: a failed signature is DMARC's business.
func (f *Filter) Data(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	if s.AuthUser != "" {
		return pipeline.PassBecause("authenticated submission: not verified")
	}
	results, note := f.verify(ctx, m)
	t.AuthResults = append(t.AuthResults, results...)
	parts := make([]string, len(results))
	for i, r := range results {
		parts[i] = "dkim=" + r.Result
		if r.Domain != "" {
			parts[i] += " d=" + r.Domain
		}
		if r.Reason != "" {
			parts[i] += " (" + r.Reason + ")"
		}
	}
	reason := strings.Join(parts, "; ")
	if note != "" {
		reason += "; " + note
	}
	return pipeline.PassBecause(reason)
}

// verify checks up to max signatures; note says what else is worth
// logging (signatures left unverified).
func (f *Filter) verify(ctx context.Context, m *pipeline.Message) (results []pipeline.AuthResult, note string) {
	// Unsigned messages are spared the verification, which reads the
	// whole message. go-msgauth reports no selector: the signatures' tags
	// are read here, in the order it finds them.
	sigs, err := signatureTags(m.Reader(), f.max)
	if err != nil || len(sigs) == 0 {
		return []pipeline.AuthResult{{Method: "dkim", Result: pipeline.ResultNone, Reason: "message not signed"}}, ""
	}

	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	verifs, err := msgdkim.VerifyWithOptions(m.Reader(), &msgdkim.VerifyOptions{
		MaxVerifications: f.max,
		LookupTXT:        func(name string) ([]string, error) { return f.resolver.LookupTXT(ctx, name) },
	})
	switch {
	case errors.Is(err, msgdkim.ErrTooManySignatures):
		note = fmt.Sprintf("more than %d signatures: the rest not verified", f.max)
	case err != nil:
		// Not a verdict on any one signature (the header could not be
		// read): nothing the library returned can be trusted.
		return []pipeline.AuthResult{{Method: "dkim", Result: pipeline.ResultPermError, Reason: clean(err.Error())}}, ""
	}
	for i, v := range verifs {
		r := pipeline.AuthResult{Method: "dkim", Result: result(v.Err), Domain: cleanName(v.Domain, true)}
		var tags sigTags
		if i < len(sigs) {
			tags = sigs[i]
		}
		if r.Domain == "" {
			// A signature go-msgauth gave up on before reading d=.
			r.Domain = tags.domain
		}
		var props []string
		if r.Domain != "" {
			props = append(props, "header.d="+r.Domain)
		}
		if tags.selector != "" {
			props = append(props, "header.s="+tags.selector)
		}
		r.Property = strings.Join(props, " ")
		if v.Err != nil {
			r.Reason = clean(v.Err.Error())
		}
		results = append(results, r)
	}
	return results, note
}

// result maps go-msgauth's verdict on one signature to RFC 8601's
// (never neutral or policy: go-msgauth has no such outcome).
func result(err error) string {
	switch {
	case err == nil:
		return pipeline.ResultPass
	case msgdkim.IsTempFail(err):
		return pipeline.ResultTempError // the key could not be fetched now
	case msgdkim.IsPermFail(err):
		return pipeline.ResultPermError // no key, a malformed signature or key, expired
	}
	return pipeline.ResultFail // the body hash or the signature did not verify
}

// sigTags is what is recorded of one DKIM-Signature field besides what
// go-msgauth returns.
type sigTags struct {
	domain, selector string
}

// signatureTags reads the header and returns the tags of the first max
// DKIM-Signature fields, found the way go-msgauth finds them (header lines
// as net/textproto reads them, a line starting with white space continuing
// the field before it, the field name trimmed of white space and compared
// case-insensitively), so that the i-th result is the i-th verification.
func signatureTags(r io.Reader, max int) ([]sigTags, error) {
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		headerReaders.Put(br)
	}()
	var (
		out     []sigTags
		current *strings.Builder // the signature field being collected
		started bool             // a field was seen: white space continues it
	)
	done := func() {
		if current != nil {
			v := current.String()
			out = append(out, sigTags{domain: strings.ToLower(tag(v, "d")), selector: tag(v, "s")})
			current = nil
		}
	}
	for len(out) < max {
		chunk, err := br.ReadSlice('\n')
		read := len(chunk) > 0
		line := strings.TrimRight(string(chunk), "\r\n")
		for err == bufio.ErrBufferFull {
			// Of a giant line, the start will do: a selector is short.
			_, err = br.ReadSlice('\n')
		}
		switch {
		case !read:
		case line == "":
			done()
			return out, nil
		case started && (line[0] == ' ' || line[0] == '\t'):
			if current != nil && current.Len() < 16<<10 {
				current.WriteString(line)
			}
		default:
			done()
			started = true
			if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature") {
				current = &strings.Builder{}
				current.WriteString(value)
			}
		}
		if err == io.EOF {
			done()
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// headerReaders spares a 64 KB allocation per message: only the header
// is read, but one field may be long.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

// tag returns the value of a tag of a tag=value list (RFC 6376 §3.2),
// whitespace removed, or "" when it is missing.
func tag(list, name string) string {
	for _, spec := range strings.Split(list, ";") {
		k, v, ok := strings.Cut(spec, "=")
		if ok && strings.TrimSpace(k) == name {
			return cleanName(strings.Join(strings.Fields(v), ""), false)
		}
	}
	return ""
}

// cleanName keeps a domain or selector from a signature only if it is
// made of DNS name characters (lower-cased for a domain): such values go
// into a header field for the internal server.
func cleanName(s string, lower bool) string {
	if lower {
		s = strings.ToLower(s)
	}
	s = strings.TrimSuffix(s, ".")
	if len(s) > 253 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return ""
		}
	}
	return s
}

// clean turns a library error into a short printable reason.
func clean(s string) string {
	s = strings.TrimPrefix(s, "dkim: ")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
