// Package relay is relay control (SPEC §4 rcpt): mail for the local
// domains is inbound and open to anyone; mail for anywhere else is relayed
// only for the trusted networks and for authenticated users. Everything
// else is refused, so the gateway is never an open relay.
package relay

import (
	"context"
	"net/netip"
	"strings"

	"mailgate/pipeline"
)

// Config is the relay policy.
type Config struct {
	// Domains are the local domains (lower case). Subdomains are not
	// included unless listed.
	Domains []string
	// Networks may relay without authentication.
	Networks []netip.Prefix
	// Authenticated users may relay.
	Authenticated bool
}

// Filter is the relay control filter.
type Filter struct {
	domains       map[string]bool
	networks      []netip.Prefix
	authenticated bool
}

// New returns the relay control filter.
func New(c Config) *Filter {
	f := &Filter{domains: map[string]bool{}, networks: c.Networks, authenticated: c.Authenticated}
	for _, d := range c.Domains {
		f.domains[strings.ToLower(strings.TrimSuffix(d, "."))] = true
	}
	return f
}

func (f *Filter) Name() string        { return "relay" }
func (f *Filter) Kind() pipeline.Kind { return pipeline.Policy }

// IsLocal reports whether mail to rcpt is inbound: a local domain, our own
// address literal, or the bare "postmaster" RFC 5321 §4.5.1 requires.
func (f *Filter) IsLocal(s *pipeline.Session, rcpt pipeline.Address) bool {
	switch {
	case rcpt.Domain == "":
		return strings.EqualFold(rcpt.Local, "postmaster") && !rcpt.Quoted
	case rcpt.Literal.IsValid():
		return rcpt.Literal.Unmap() == s.Local.Addr().Unmap()
	}
	return f.domains[rcpt.Domain]
}

var denied = pipeline.Refuse(554, [3]int{5, 7, 1}, "Relay access denied", "")

// Rcpt decides whether the recipient may be accepted.
func (f *Filter) Rcpt(_ context.Context, s *pipeline.Session, _ *pipeline.Transaction, rcpt pipeline.Address) pipeline.Verdict {
	if f.IsLocal(s, rcpt) {
		return pipeline.Pass()
	}
	ip := s.ClientIP()
	for _, n := range f.networks {
		if n.Contains(ip) {
			return pipeline.PassBecause("relaying for trusted network " + n.String())
		}
	}
	if s.AuthUser != "" && f.authenticated {
		return pipeline.PassBecause("relaying for authenticated user")
	}
	v := denied
	v.Reason = "relay to " + rcpt.Domain + " denied: not a local domain, client not trusted, not authenticated"
	return v
}
