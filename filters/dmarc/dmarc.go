// Package dmarc evaluates the DMARC policy of a message's author domain
// at DATA (SPEC §4 data, RFC 7489): the domain of the From header field
// must be aligned with a domain that passed SPF or DKIM, or the domain
// owner's published policy (p=, or sp= for a subdomain) says what to do.
//
// The policy record is fetched through the gateway's own resolver and
// parsed by go-msgauth; the rest is here: the organisational-domain
// fallback (public suffix list), relaxed and strict alignment for SPF and
// DKIM, sp= for subdomains, and pct= sampling.
//
// The SPF and DKIM results come from the transaction's AuthResults (the
// spf filter at MAIL, the dkim filter before this one at DATA). The
// result is recorded as an AuthResult for the Authentication-Results
// header. Mail from authenticated users is outbound and not evaluated.
//
// YAML (filters.dmarc), with the defaults:
//
//	dmarc:
//	  reject_policy: true   # honour p=reject: 550 5.7.1; false: tag (score) instead
//	  quarantine: tag       # p=quarantine: tag | reject | ignore
//	  tag_score: 1          # points a tag adds
//	  temperror: ignore     # policy lookup failed: ignore | tempfail (451 4.7.1)
//
// Replies:
//
//	550 5.7.1 Message refused: DMARC policy of <domain> says reject
//	550 5.7.1 Message refused: DMARC policy of <domain> says quarantine  (quarantine: reject)
//	451 4.7.1 DMARC policy temporarily unavailable, try again later      (temperror: tempfail)
//
// p=none is monitoring only: the failure is in Authentication-Results,
// nothing else happens. A message without a From author domain is
// dmarc=permerror and passes; one with several From fields or authors of
// different domains (RFC 7489 §6.6.1 leaves that to the receiver) gets
// the strictest outcome of its author domains, so a second From cannot
// smuggle a spoofed first one past its domain's p=reject.
package dmarc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dmarc"

	"mailgate/pipeline"
)

// Actions for p=quarantine and for a policy that cannot be looked up.
const (
	Tag      = "tag"
	Reject   = "reject"
	Ignore   = "ignore"
	Tempfail = "tempfail"
)

// Resolver looks up TXT records: the gateway's *resolver.Resolver.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Config is the DMARC policy.
type Config struct {
	// RejectPolicy honours p=reject with a refusal; false tags instead.
	RejectPolicy bool
	// Quarantine is what p=quarantine does: Tag (default), Reject or
	// Ignore.
	Quarantine string
	// TagScore is the points a tag adds (0: the default, 1).
	TagScore float64
	// TempError is what happens when the policy cannot be looked up:
	// Ignore (default) or Tempfail.
	TempError string
	// Timeout bounds the policy lookups of a message (default 10s).
	Timeout  time.Duration
	Resolver Resolver
}

// Filter is the DMARC check.
type Filter struct {
	rejectPolicy bool
	quarantine   string
	tagScore     float64
	tempError    string
	timeout      time.Duration
	resolver     Resolver
	// percent draws a number in [0, 100) for pct= sampling.
	percent func() int
}

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	if c.Resolver == nil {
		return nil, errors.New("dmarc: no resolver")
	}
	if c.Timeout < 0 {
		return nil, errors.New("dmarc: timeout: must not be negative")
	}
	if c.TagScore < 0 {
		return nil, errors.New("dmarc: tag_score: must not be negative")
	}
	f := &Filter{
		rejectPolicy: c.RejectPolicy,
		quarantine:   cmp.Or(c.Quarantine, Tag),
		tagScore:     cmp.Or(c.TagScore, 1),
		tempError:    cmp.Or(c.TempError, Ignore),
		timeout:      cmp.Or(c.Timeout, 10*time.Second),
		resolver:     c.Resolver,
		percent:      func() int { return rand.IntN(100) },
	}
	switch f.quarantine {
	case Tag, Reject, Ignore:
	default:
		return nil, fmt.Errorf("dmarc: quarantine: unknown action %q (want tag, reject or ignore)", f.quarantine)
	}
	switch f.tempError {
	case Ignore, Tempfail:
	default:
		return nil, fmt.Errorf("dmarc: temperror: unknown action %q (want ignore or tempfail)", f.tempError)
	}
	return f, nil
}

func (*Filter) Name() string        { return "dmarc" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

// evaluation is one message's DMARC outcome and why.
type evaluation struct {
	result string
	domain string // the From domain, "" if none was found
	// policy is the one that applies (p= or sp=, after pct= sampling);
	// sampled is set when pct= made it milder.
	policy  dmarc.Policy
	sampled bool
	reason  string
}

// Data evaluates the message, records the result and applies the policy.
func (f *Filter) Data(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	if s.AuthUser != "" {
		return pipeline.PassBecause("authenticated submission: not evaluated")
	}
	e := f.evaluate(ctx, t, m)
	ar := pipeline.AuthResult{Method: "dmarc", Result: e.result, Domain: e.domain}
	if e.result != pipeline.ResultPass {
		// Why it did not pass is worth the internal server's log.
		ar.Reason = e.reason
	}
	if e.domain != "" {
		ar.Property = "header.from=" + e.domain
	}
	t.AuthResults = append(t.AuthResults, ar)
	return f.verdict(e)
}

func (f *Filter) evaluate(ctx context.Context, t *pipeline.Transaction, m *pipeline.Message) evaluation {
	from, err := fromFields(m.Reader())
	if err != nil {
		return evaluation{result: pipeline.ResultPermError, reason: "reading the header: " + err.Error()}
	}
	domain, err := AuthorDomain(from)
	if errors.Is(err, ErrSeveralFrom) || errors.Is(err, ErrSeveralAuths) {
		// A second From field or author must not be a way around the
		// first one's policy: each author domain is evaluated and the
		// strictest outcome applies.
		return f.strictest(ctx, t, authorDomains(from), err)
	}
	if err != nil {
		return evaluation{result: pipeline.ResultPermError, reason: err.Error()}
	}
	return f.evaluateDomain(ctx, t, domain)
}

// strictest evaluates every author domain and returns the evaluation
// whose policy acts hardest (a failing p=reject over quarantine over
// anything else).
func (f *Filter) strictest(ctx context.Context, t *pipeline.Transaction, domains []string, why error) evaluation {
	worst := evaluation{result: pipeline.ResultPermError, reason: why.Error()}
	rank := func(e evaluation) int {
		switch {
		case e.result == pipeline.ResultFail && e.policy == dmarc.PolicyReject:
			return 4
		case e.result == pipeline.ResultFail && e.policy == dmarc.PolicyQuarantine:
			return 3
		case e.result == pipeline.ResultTempError:
			return 2
		case e.result == pipeline.ResultFail:
			return 1
		}
		return 0
	}
	for _, d := range domains {
		e := f.evaluateDomain(ctx, t, d)
		if rank(e) > rank(worst) {
			worst = e
		}
	}
	worst.reason = why.Error() + "; strictest: " + worst.reason
	return worst
}

func (f *Filter) evaluateDomain(ctx context.Context, t *pipeline.Transaction, domain string) evaluation {
	e := evaluation{domain: domain}

	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	rec, at, err := f.lookup(ctx, domain)
	switch {
	case errors.Is(err, errNoPolicy):
		e.result, e.reason = pipeline.ResultNone, "no DMARC record"
		return e
	case errors.Is(err, errSeveral):
		e.result, e.reason = pipeline.ResultNone, "several DMARC records at _dmarc."+at+": none applies (RFC 7489 §6.6.3)"
		return e
	case errors.Is(err, errTemporary):
		e.result, e.reason = pipeline.ResultTempError, err.Error()
		return e
	case err != nil:
		e.result, e.reason = pipeline.ResultPermError, err.Error()
		return e
	}

	e.policy = rec.Policy
	if at != domain && rec.SubdomainPolicy != "" {
		e.policy = rec.SubdomainPolicy
	}
	if rec.Percent != nil && *rec.Percent < 100 && f.percent() >= *rec.Percent {
		// RFC 7489 §6.6.4: outside the sample, the next milder policy.
		switch e.policy {
		case dmarc.PolicyReject:
			e.policy, e.sampled = dmarc.PolicyQuarantine, true
		case dmarc.PolicyQuarantine:
			e.policy, e.sampled = dmarc.PolicyNone, true
		}
	}

	spfOK, spfTemp, spfWhy := alignedSPF(t, domain, rec.SPFAlignment)
	dkimOK, dkimTemp, dkimWhy := alignedDKIM(t, domain, rec.DKIMAlignment)
	why := spfWhy + ", " + dkimWhy
	switch {
	case spfOK || dkimOK:
		e.result = pipeline.ResultPass
	case spfTemp || dkimTemp:
		// An aligned check could not be completed: the message may well
		// pass on retry, so it must not fail now.
		e.result = pipeline.ResultTempError
	default:
		e.result = pipeline.ResultFail
	}
	e.reason = why
	return e
}

var (
	errNoPolicy  = errors.New("no DMARC record")
	errSeveral   = errors.New("several DMARC records")
	errTemporary = errors.New("temporary DNS error")
)

// lookup finds the policy for domain (RFC 7489 §6.6.3): its own record,
// else its organisational domain's. at is where the record was found.
func (f *Filter) lookup(ctx context.Context, domain string) (rec *dmarc.Record, at string, err error) {
	rec, err = f.fetch(ctx, domain)
	if !errors.Is(err, errNoPolicy) {
		return rec, domain, err
	}
	org := OrgDomain(domain)
	if org == domain {
		return nil, domain, err
	}
	rec, err = f.fetch(ctx, org)
	return rec, org, err
}

// fetch looks up and parses the DMARC record published at domain.
func (f *Filter) fetch(ctx context.Context, domain string) (*dmarc.Record, error) {
	txts, err := f.resolver.LookupTXT(ctx, "_dmarc."+domain)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, errNoPolicy
		}
		return nil, fmt.Errorf("%w looking up _dmarc.%s: %v", errTemporary, domain, err)
	}
	var records []string
	for _, txt := range txts {
		if isDMARC1(txt) {
			records = append(records, txt)
		}
	}
	switch len(records) {
	case 0:
		return nil, errNoPolicy
	case 1:
	default:
		return nil, errSeveral
	}
	rec, err := dmarc.Parse(records[0])
	if err != nil {
		return nil, fmt.Errorf("invalid DMARC record at _dmarc.%s: %s", domain, strings.TrimPrefix(err.Error(), "dmarc: "))
	}
	return rec, nil
}

// isDMARC1 reports whether a TXT record starts with the v=DMARC1 tag
// (RFC 7489 §6.4: it must come first; other records are not DMARC's).
func isDMARC1(txt string) bool {
	first, _, _ := strings.Cut(txt, ";")
	k, v, ok := strings.Cut(first, "=")
	return ok && strings.TrimSpace(k) == "v" && strings.TrimSpace(v) == "DMARC1"
}

// aligned reports whether an authenticated domain is aligned with the
// From domain: the same name (strict) or the same organisational domain
// (relaxed, the default).
func aligned(mode dmarc.AlignmentMode, from, authenticated string) bool {
	authenticated = strings.ToLower(strings.TrimSuffix(authenticated, "."))
	if authenticated == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return from == authenticated
	}
	return OrgDomain(from) == OrgDomain(authenticated)
}

// alignedSPF reports whether SPF passed for a domain aligned with from
// (the MAIL FROM domain, or the HELO name for the null sender, RFC 7489
// §4.1), and whether an aligned domain's check failed temporarily.
func alignedSPF(t *pipeline.Transaction, from string, mode dmarc.AlignmentMode) (ok, temp bool, why string) {
	r, found := t.AuthResult("spf")
	switch {
	case !found:
		return false, false, "spf not checked"
	case !aligned(mode, from, r.Domain):
		return false, false, fmt.Sprintf("spf=%s %s not aligned", r.Result, orNone(r.Domain))
	case r.Result == pipeline.ResultPass:
		return true, false, "spf=pass " + r.Domain + " aligned"
	}
	return false, r.Result == pipeline.ResultTempError, fmt.Sprintf("spf=%s %s", r.Result, r.Domain)
}

// alignedDKIM reports whether a DKIM signature of a domain aligned with
// from verified, and whether an aligned one failed temporarily.
func alignedDKIM(t *pipeline.Transaction, from string, mode dmarc.AlignmentMode) (ok, temp bool, why string) {
	var seen []string
	for _, r := range t.AuthResults {
		if r.Method != "dkim" || r.Result == pipeline.ResultNone {
			continue
		}
		if !aligned(mode, from, r.Domain) {
			seen = append(seen, fmt.Sprintf("dkim=%s d=%s not aligned", r.Result, orNone(r.Domain)))
			continue
		}
		if r.Result == pipeline.ResultPass {
			return true, false, "dkim=pass d=" + r.Domain + " aligned"
		}
		temp = temp || r.Result == pipeline.ResultTempError
		seen = append(seen, fmt.Sprintf("dkim=%s d=%s", r.Result, r.Domain))
	}
	if len(seen) == 0 {
		return false, false, "no DKIM signature"
	}
	return false, temp, strings.Join(seen, ", ")
}

func orNone(s string) string { return cmp.Or(s, "(none)") }

func (f *Filter) verdict(e evaluation) pipeline.Verdict {
	reason := "dmarc=" + e.result
	if e.domain != "" {
		reason += " header.from=" + e.domain
	}
	if e.policy != "" {
		reason += " policy=" + string(e.policy)
		if e.sampled {
			reason += " (milder: outside pct= sample)"
		}
	}
	reason += ": " + e.reason

	switch e.result {
	case pipeline.ResultFail:
	case pipeline.ResultTempError:
		if f.tempError == Tempfail {
			return deferTempError.WithReason(reason)
		}
		return pipeline.PassBecause(reason)
	default:
		return pipeline.PassBecause(reason)
	}
	switch e.policy {
	case dmarc.PolicyReject:
		if f.rejectPolicy {
			return refuse(e.domain, "reject", reason)
		}
		return pipeline.Points(f.tagScore, "dmarc-fail", reason)
	case dmarc.PolicyQuarantine:
		switch f.quarantine {
		case Reject:
			return refuse(e.domain, "quarantine", reason)
		case Tag:
			return pipeline.Points(f.tagScore, "dmarc-fail", reason)
		}
	}
	return pipeline.PassBecause(reason)
}

var deferTempError = pipeline.Defer(451, [3]int{4, 7, 1}, "DMARC policy temporarily unavailable, try again later", "")

// refuse is the 550 for a failing message. The domain named is the From
// domain the client sent, already reduced to a DNS name.
func refuse(domain, policy, reason string) pipeline.Verdict {
	return pipeline.Refuse(550, [3]int{5, 7, 1},
		"Message refused: DMARC policy of "+domain+" says "+policy, reason)
}
