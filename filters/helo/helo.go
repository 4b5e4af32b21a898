// Package helo checks the name a client gives at HELO/EHLO (SPEC §4
// helo). RFC 5321 §4.1.1.1 wants the client's fully-qualified domain name
// or, failing that, an address literal in brackets. Spamware often sends
// a bare word, a bare IP, our own name, or a literal that is not its
// address; real MTAs rarely do.
//
// YAML (filters.helo):
//
//	require_fqdn:               true   # a hostname with a dot, or an address literal
//	reject_own_name:            true   # our hostname, a local domain or our IP → reject
//	reject_ip_literal_mismatch: true   # [address literal] must be the client's address
//	action:                     reject # reject | score
//	score:                      1      # points for action: score
//
// The lead fills OwnNames from `hostname` and `domains`.
package helo

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"strings"

	"mailgate/pipeline"
)

// Config is the HELO policy.
type Config struct {
	RequireFQDN             bool
	RejectOwnName           bool
	RejectIPLiteralMismatch bool
	// OwnNames are our hostname and local domains: a client greeting
	// with one of them is forging.
	OwnNames []string
	// Action on failure: "reject" (default) or "score".
	Action string
	// Score is the points for Action "score" (default 1).
	Score float64
}

// Filter is the HELO filter.
type Filter struct {
	c   Config
	own map[string]bool
}

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	c.Action = cmp.Or(c.Action, "reject")
	c.Score = cmp.Or(c.Score, 1)
	if c.Action != "reject" && c.Action != "score" {
		return nil, fmt.Errorf("helo: action %q: want reject or score", c.Action)
	}
	f := &Filter{c: c, own: map[string]bool{}}
	for _, n := range c.OwnNames {
		f.own[canon(n)] = true
	}
	return f, nil
}

func (*Filter) Name() string        { return "helo" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

// The replies never include the client's HELO text.
var (
	invalid  = fail{501, [3]int{5, 5, 2}, "invalid hostname", "helo-invalid"}
	nonFQDN  = fail{504, [3]int{5, 5, 2}, "need fully-qualified hostname", "helo-non-fqdn"}
	notMe    = fail{550, [3]int{5, 7, 1}, "you are not me", "helo-forged"}
	mismatch = fail{550, [3]int{5, 7, 1}, "address literal does not match your address", "helo-literal-mismatch"}
)

type fail struct {
	code     int
	enhanced [3]int
	text     string
	tag      string
}

// Helo judges s.Helo.
func (f *Filter) Helo(_ context.Context, s *pipeline.Session) pipeline.Verdict {
	helo := s.Helo
	client, local := s.ClientIP(), s.Local.Addr().Unmap()
	// A client on our own address is the gateway itself (a local
	// probe): it may use our name.
	us := client == local

	if inner, ok := strings.CutPrefix(helo, "["); ok {
		lit, ok := literal(strings.TrimSuffix(inner, "]"))
		switch {
		case !ok || !strings.HasSuffix(inner, "]"):
			return f.check(f.c.RequireFQDN, invalid, "malformed address literal %q", helo)
		case lit == local && !us && f.c.RejectOwnName:
			return f.check(true, notMe, "address literal %q is our address; client is %s", helo, client)
		case lit != client:
			return f.check(f.c.RejectIPLiteralMismatch, mismatch, "address literal %q is not the client's address %s", helo, client)
		}
		return pipeline.Pass()
	}

	if ip, err := netip.ParseAddr(helo); err == nil {
		if v := f.check(f.c.RequireFQDN, invalid, "bare IP address %q without brackets", helo); v.Action != pipeline.Continue {
			return v
		}
		if ip.Unmap() == local && !us {
			return f.check(f.c.RejectOwnName, notMe, "HELO %q is our address; client is %s", helo, client)
		}
		return pipeline.Pass()
	}

	name := canon(helo)
	switch {
	case !hostname(name):
		return f.check(f.c.RequireFQDN, invalid, "HELO %q is not a valid hostname", helo)
	case !fqdn(name):
		return f.check(f.c.RequireFQDN, nonFQDN, "HELO %q is not fully qualified", helo)
	case f.own[name] && !us:
		return f.check(f.c.RejectOwnName, notMe, "HELO %q is our own name; client is %s", helo, client)
	}
	return pipeline.Pass()
}

// check turns a failed rule into the verdict of the configured action, if
// the rule is enabled.
func (f *Filter) check(enabled bool, r fail, format string, args ...any) pipeline.Verdict {
	reason := fmt.Sprintf(format, args...)
	switch {
	case !enabled:
		return pipeline.PassBecause(reason + " (check disabled)")
	case f.c.Action == "score":
		return pipeline.Points(f.c.Score, r.tag, reason)
	}
	return pipeline.Refuse(r.code, r.enhanced, "Helo command rejected: "+r.text, reason)
}

// literal parses the inside of an address literal (RFC 5321 §4.1.3):
// "192.0.2.1" or "IPv6:2001:db8::1".
func literal(s string) (netip.Addr, bool) {
	v6 := len(s) > 5 && strings.EqualFold(s[:5], "IPv6:")
	if v6 {
		s = s[5:]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" || ip.Is6() != v6 {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// hostname reports whether name is syntactically a hostname: labels of
// letters, digits, hyphens (not first or last) and underscores (common in
// real Windows hosts' names), at most 63 octets each, 253 in all.
func hostname(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// fqdn reports whether a valid hostname is fully qualified: it has a dot
// and its top-level label is not all digits (as in "host.123").
func fqdn(name string) bool {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return false
	}
	return strings.Trim(name[i+1:], "0123456789") != ""
}

func canon(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }
