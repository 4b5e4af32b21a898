// Package spf checks the sender's SPF record at MAIL FROM (SPEC §4 mail,
// RFC 7208) with blitiri.com.ar/go/spf, through the gateway's own caching
// resolver, within the RFC's limits (10 DNS lookups, 2 void lookups).
//
// Every checked transaction gets the result twice: as an
// pipeline.AuthResult (for the Authentication-Results header written at
// DATA, and for filters that want a validated domain) and as a
// Received-SPF header field (RFC 7208 §9.1) for the internal server.
// Then the result's configured action is applied.
//
// YAML (filters.spf), with the defaults:
//
//	spf:
//	  fail: reject         # ignore | tag | reject | tempfail, per result
//	  softfail: tag
//	  neutral: ignore
//	  none: ignore
//	  temperror: tempfail
//	  permerror: ignore
//	  tag_score: 1         # points a "tag" adds
//	  timeout: 10s         # bound on the whole check
//
// Hostname comes from the top-level `hostname` key.
package spf

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/net/idna"

	"mailgate/internal/mailaddr"
	"mailgate/pipeline"
)

// Actions a result can be mapped to.
const (
	Ignore   = "ignore"
	Tag      = "tag"
	Reject   = "reject"
	Tempfail = "tempfail"
)

// Config is the SPF policy.
type Config struct {
	// Action per result: Ignore, Tag, Reject or Tempfail; "" takes the
	// default (fail: reject, softfail: tag, temperror: tempfail, the
	// others ignore).
	Fail, SoftFail, Neutral, None, TempError, PermError string
	// TagScore is the points a Tag action adds (0: the default, 1).
	TagScore float64
	// Timeout bounds the whole check (default 10s; RFC 7208 §4.6.4 asks
	// for at least 20s overall, but a session should not wait that long
	// for a record that will most likely time out anyway).
	Timeout time.Duration
	// Hostname is the gateway's name, the "receiver" of Received-SPF.
	Hostname string
	// Resolver does the lookups: the gateway's *resolver.Resolver.
	Resolver spf.DNSResolver
}

// Filter is the SPF check.
type Filter struct {
	actions  map[spf.Result]string
	tagScore float64
	timeout  time.Duration
	hostname string
	resolver spf.DNSResolver
	// recent are evaluations of the last resultTTL, with their
	// Received-SPF field: a client sending many messages for one sender
	// is evaluated once (the DNS answers are cached anyway; the
	// evaluation and the header were a fifth of a message's filter
	// time).
	recent *lru.Cache[evalKey, cached]
	now    func() time.Time
}

// resultTTL is how long an evaluation is reused. SPF records change
// rarely and the resolver caches them longer than this.
const resultTTL = time.Minute

// evalKey is everything an evaluation and its header depend on.
type evalKey struct {
	ip         netip.Addr
	helo, from string
}

type cached struct {
	c       check
	header  string
	expires time.Time
}

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	if c.Resolver == nil {
		return nil, errors.New("spf: no resolver")
	}
	if c.Timeout < 0 {
		return nil, errors.New("spf: timeout: must not be negative")
	}
	if c.TagScore < 0 {
		return nil, errors.New("spf: tag_score: must not be negative")
	}
	f := &Filter{
		actions:  map[spf.Result]string{},
		tagScore: cmp.Or(c.TagScore, 1),
		timeout:  cmp.Or(c.Timeout, 10*time.Second),
		hostname: c.Hostname,
		resolver: c.Resolver,
		now:      time.Now,
	}
	f.recent, _ = lru.New[evalKey, cached](10000)
	for _, a := range []struct {
		key, value, def string
		result          spf.Result
	}{
		{"fail", c.Fail, Reject, spf.Fail},
		{"softfail", c.SoftFail, Tag, spf.SoftFail},
		{"neutral", c.Neutral, Ignore, spf.Neutral},
		{"none", c.None, Ignore, spf.None},
		{"temperror", c.TempError, Tempfail, spf.TempError},
		{"permerror", c.PermError, Ignore, spf.PermError},
	} {
		v := cmp.Or(a.value, a.def)
		switch v {
		case Ignore, Tag, Reject, Tempfail:
		default:
			return nil, fmt.Errorf("spf: %s: unknown action %q (want ignore, tag, reject or tempfail)", a.key, v)
		}
		f.actions[a.result] = v
	}
	return f, nil
}

func (*Filter) Name() string        { return "spf" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

// ResultOf returns the transaction's SPF result, once the filter has run.
func ResultOf(t *pipeline.Transaction) (pipeline.AuthResult, bool) {
	return t.AuthResult("spf")
}

// check is one SPF evaluation and what it was about.
type check struct {
	result spf.Result
	// domain is the domain checked, "" when there was none to check.
	domain string
	// sender is the mailbox checked (postmaster@<helo> for the null
	// sender, RFC 7208 §2.4).
	sender string
	// identity is "mailfrom" or "helo".
	identity string
	reason   string
}

// Mail checks the sender, records the result and applies its action.
func (f *Filter) Mail(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction) pipeline.Verdict {
	c, header := f.evaluate(ctx, s, t.From)
	t.AuthResults = append(t.AuthResults, c.authResult())
	t.AddHeaders = append([]string{header}, t.AddHeaders...)
	return f.verdict(c)
}

// evaluate is check with its Received-SPF field, reusing an evaluation
// of the last resultTTL for the same client address, HELO and sender.
// Temporary errors are never reused.
func (f *Filter) evaluate(ctx context.Context, s *pipeline.Session, from pipeline.Address) (check, string) {
	k := evalKey{ip: s.ClientIP(), helo: s.Helo, from: from.String()}
	now := f.now()
	if e, ok := f.recent.Get(k); ok && now.Before(e.expires) {
		return e.c, e.header
	}
	c := f.check(ctx, s, from)
	header := f.receivedSPF(s, from, c)
	if c.result != spf.TempError {
		f.recent.Add(k, cached{c: c, header: header, expires: now.Add(resultTTL)})
	}
	return c, header
}

func (f *Filter) check(ctx context.Context, s *pipeline.Session, from pipeline.Address) check {
	c := check{identity: "mailfrom", domain: from.Domain}
	local := from.Local
	if from.Null {
		// RFC 7208 §2.4: the null sender is checked as postmaster@<HELO>.
		c.identity, c.domain, local = "helo", mailaddr.ASCIILower(strings.TrimSuffix(s.Helo, ".")), "postmaster"
	}
	if strings.Contains(local, "@") {
		// A quoted local part holding '@' would make the library split
		// the address at the wrong '@'; the local part only feeds
		// macros, so its RFC 7208 §4.3 stand-in will do.
		local = "postmaster"
	}
	c.domain = aLabels(c.domain)
	c.sender = local + "@" + c.domain
	if !checkable(c.domain) {
		// RFC 7208 §4.3: no (or a malformed) domain is "none". So is an
		// address literal, and a name IDNA cannot turn into A-labels.
		c.result, c.reason, c.domain = spf.None, "no domain name to check", ""
		return c
	}

	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	res, err := spf.CheckHostWithSender(net.IP(s.ClientIP().AsSlice()), s.Helo, c.sender,
		spf.WithResolver(f.resolver), spf.WithContext(ctx))
	c.result = res
	switch {
	case res == spf.None:
		c.reason = "no SPF record"
	case err != nil:
		c.reason = err.Error() // "matched all", "lookup limit reached", a DNS error ...
	}
	return c
}

// checkable reports whether d is a multi-label ASCII domain name that SPF
// can look up (RFC 7208 §4.3).
// aLabels turns an internationalised domain (SMTPUTF8 senders) into the
// A-labels its SPF record is published under, lower case; a name that
// is not one is returned as it is (checkable then refuses it).
func aLabels(d string) string {
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			if a, err := idna.Lookup.ToASCII(d); err == nil {
				return strings.ToLower(a)
			}
			return d
		}
	}
	return d
}

func checkable(d string) bool {
	if len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func (c check) authResult() pipeline.AuthResult {
	prop := "smtp.mailfrom="
	if c.identity == "helo" {
		prop = "smtp.helo="
	}
	return pipeline.AuthResult{
		Method:   "spf",
		Result:   string(c.result),
		Domain:   c.domain,
		Property: prop + c.domain,
		Reason:   clean(c.reason, 200),
	}
}

// Replies. They name no domain: the client knows which one it sent.
var (
	rejectFail      = pipeline.Refuse(550, [3]int{5, 7, 23}, "Message rejected: sender domain does not designate your address as permitted sender", "")
	rejectPermError = pipeline.Refuse(550, [3]int{5, 7, 24}, "Message rejected: sender domain has an invalid SPF record", "")
	rejectOther     = pipeline.Refuse(550, [3]int{5, 7, 1}, "Message rejected by SPF policy", "")
	deferTempError  = pipeline.Defer(451, [3]int{4, 4, 3}, "Temporary DNS error checking SPF, try again later", "")
	deferOther      = pipeline.Defer(451, [3]int{4, 7, 1}, "Message deferred by SPF policy, try again later", "")
)

func (f *Filter) verdict(c check) pipeline.Verdict {
	reason := "spf=" + string(c.result)
	if c.domain != "" {
		reason += " domain " + c.domain
	}
	if c.reason != "" {
		reason += ": " + clean(c.reason, 200)
	}
	if c.result == spf.Pass {
		return pipeline.PassBecause(reason)
	}
	var v pipeline.Verdict
	switch f.actions[c.result] {
	case Tag:
		return pipeline.Points(f.tagScore, "spf-"+string(c.result), reason)
	case Reject:
		switch c.result {
		case spf.Fail:
			v = rejectFail
		case spf.PermError:
			v = rejectPermError
		default:
			v = rejectOther
		}
	case Tempfail:
		v = deferOther
		if c.result == spf.TempError {
			v = deferTempError
		}
	default:
		return pipeline.PassBecause(reason)
	}
	v.Reason = reason
	return v
}
