// Package rdns checks the client's reverse DNS at connect (SPEC §4
// connect): a PTR record is required, and optionally forward-confirmed
// (FCrDNS: one of the PTR names resolves back to the client's address).
// Mail servers are expected to have both; botnets of home machines
// usually have neither, or a generic one that does not match.
//
// Whatever is required, the filter tries to confirm the PTR names, because
// the forward-confirmed name is what Session.ClientHostname (the Received
// header) reports.
//
// YAML (filters.rdns):
//
//	require_ptr:    true      # no PTR record → action
//	require_fcrdns: false     # no PTR name resolving back to the client → action
//	action:         reject    # reject (550 5.7.25) | tempfail (450 4.7.25) | score
//	score:          1         # points for action: score
//	on_dns_error:   tempfail  # DNS timeout/SERVFAIL: tempfail (451 4.7.25) | skip
package rdns

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"mailgate/pipeline"
)

// Resolver is what the filter needs of the gateway's resolver.
type Resolver interface {
	LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error)
	LookupIP(ctx context.Context, name string) ([]netip.Addr, error)
}

// Config is the rDNS policy.
type Config struct {
	RequirePTR    bool
	RequireFCRDNS bool // implies a PTR record
	// Action on failure: "reject" (default), "tempfail" or "score".
	Action string
	// Score is the points for Action "score" (default 1).
	Score float64
	// OnDNSError is what a DNS failure (timeout, SERVFAIL) of a required
	// check does: "tempfail" (default) or "skip".
	OnDNSError string
	Resolver   Resolver
}

// maxNames bounds the forward lookups: a PTR set larger than this is
// either a mistake or an attempt to make us work.
const maxNames = 10

// Filter is the reverse DNS filter.
type Filter struct{ c Config }

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	c.Action = cmp.Or(c.Action, "reject")
	c.OnDNSError = cmp.Or(c.OnDNSError, "tempfail")
	c.Score = cmp.Or(c.Score, 1)
	switch {
	case c.Action != "reject" && c.Action != "tempfail" && c.Action != "score":
		return nil, fmt.Errorf("rdns: action %q: want reject, tempfail or score", c.Action)
	case c.OnDNSError != "tempfail" && c.OnDNSError != "skip":
		return nil, fmt.Errorf("rdns: on_dns_error %q: want tempfail or skip", c.OnDNSError)
	case c.Resolver == nil:
		return nil, errors.New("rdns: no resolver")
	}
	return &Filter{c: c}, nil
}

func (*Filter) Name() string        { return "rdns" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

// Connect looks the client up and sets s.ClientHostname when its PTR is
// forward-confirmed.
func (f *Filter) Connect(ctx context.Context, s *pipeline.Session) pipeline.Verdict {
	ip := s.ClientIP()
	needPTR := f.c.RequirePTR || f.c.RequireFCRDNS

	names, err := f.c.Resolver.LookupPTR(ctx, ip)
	if err != nil && !isNotFound(err) {
		reason := fmt.Sprintf("PTR lookup for %s failed: %v", ip, err)
		if !needPTR {
			return pipeline.PassBecause(reason)
		}
		return f.dnsError(reason)
	}
	if len(names) == 0 {
		reason := "no PTR record for " + ip.String()
		if !needPTR {
			return pipeline.PassBecause(reason)
		}
		return f.fail(550, "cannot find your hostname", "rdns-missing", reason)
	}
	names = names[:min(len(names), maxNames)]

	name, err := confirm(ctx, f.c.Resolver, ip, names)
	if name != "" {
		s.ClientHostname = name
		return pipeline.PassBecause(fmt.Sprintf("%s is %s (forward-confirmed)", ip, name))
	}
	if !f.c.RequireFCRDNS {
		return pipeline.PassBecause(fmt.Sprintf("PTR of %s (%s) not forward-confirmed", ip, strings.Join(names, ", ")))
	}
	if err != nil {
		return f.dnsError(fmt.Sprintf("forward lookup of PTR names of %s (%s) failed: %v", ip, strings.Join(names, ", "), err))
	}
	return f.fail(550, "reverse DNS does not match", "rdns-mismatch",
		fmt.Sprintf("no PTR name of %s (%s) resolves back to it", ip, strings.Join(names, ", ")))
}

// fail applies the configured action to a failed check.
func (f *Filter) fail(code int, text, tag, reason string) pipeline.Verdict {
	text = "Client host rejected: " + text
	switch f.c.Action {
	case "tempfail":
		return pipeline.Defer(450, [3]int{4, 7, 25}, text, reason)
	case "score":
		return pipeline.Points(f.c.Score, tag, reason)
	}
	return pipeline.Refuse(code, [3]int{5, 7, 25}, text, reason)
}

func (f *Filter) dnsError(reason string) pipeline.Verdict {
	if f.c.OnDNSError == "skip" {
		return pipeline.PassBecause(reason + " (skipped)")
	}
	return pipeline.Defer(451, [3]int{4, 7, 25}, "Client host rejected: cannot verify your hostname, try again later", reason)
}

// confirm looks the names up in parallel and returns the first one found
// to resolve to ip. With none confirmed, err is a lookup failure other
// than "not found", if any: the answer might have been yes.
func confirm(ctx context.Context, r Resolver, ip netip.Addr, names []string) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the remaining lookups are not needed once one matched
	type result struct {
		name string
		ok   bool
		err  error
	}
	results := make(chan result, len(names))
	for _, name := range names {
		go func() {
			if !hostname(name) { // it would end up in a Received header
				results <- result{name: name}
				return
			}
			addrs, err := r.LookupIP(ctx, name)
			for _, a := range addrs {
				if a.Unmap() == ip {
					results <- result{name: name, ok: true}
					return
				}
			}
			results <- result{name: name, err: err}
		}()
	}
	var failure error
	for range names {
		res := <-results
		if res.ok {
			return res.name, nil
		}
		if res.err != nil && !isNotFound(res.err) {
			failure = res.err
		}
	}
	return "", failure
}

// hostname reports whether name is letters, digits, hyphens and dots
// (underscores too: they are common in real PTR records).
func hostname(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
