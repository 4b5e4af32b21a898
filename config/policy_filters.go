package config

import (
	"fmt"
	"strings"
)

// filterPolicy prints the filters, DNS and state part of the effective
// policy, in the order the filters run.
func (c *Config) filterPolicy(section func(string), p func(string, ...any)) {
	f := &c.Filters
	section("Filters (in the order they run; shadow: logged, not applied)")
	on := func(name string, m FilterMode, format string, args ...any) {
		tag := ""
		if m == ModeShadow {
			tag = " [shadow]"
		}
		p("  %s%s\t%s", name, tag, fmt.Sprintf(format, args...))
	}
	if a := f.Access; a != nil {
		on("access", a.Mode, "allow %s; deny %s (allow wins; allowed clients skip antispam)", nets(a.Allow), nets(a.Deny))
	}
	for _, l := range c.Listeners {
		if len(l.Access.Allow)+len(l.Access.Deny) > 0 {
			on("access "+l.Name, ModeEnforce, "allow %s; deny %s", nets(l.Access.Allow), nets(l.Access.Deny))
		}
	}
	if r := f.RDNS; r != nil {
		on("rdns", r.Mode, "require_ptr %v, require_fcrdns %v, action %s, DNS errors: %s", *r.RequirePTR, r.RequireFCRDNS, r.Action, r.OnDNSError)
	}
	if b := f.DNSBL; b != nil {
		var z []string
		for _, x := range b.Zones {
			z = append(z, fmt.Sprintf("%s (%g)", x.Zone, x.Weight))
		}
		for _, x := range b.AllowZones {
			z = append(z, fmt.Sprintf("%s (%g)", x.Zone, x.Weight))
		}
		on("dnsbl", b.Mode, "%s; threshold %g, %s at %s", strings.Join(z, ", "), b.Threshold, b.Action, b.RejectAt)
	}
	if g := f.Pregreet; g != nil {
		on("pregreet", g.Mode, "banner held %s; talking first: %s", g.Wait, g.Action)
	}
	if h := f.Helo; h != nil {
		on("helo", h.Mode, "require_fqdn %v, reject_own_name %v, reject_ip_literal_mismatch %v, action %s",
			*h.RequireFQDN, *h.RejectOwnName, *h.RejectIPLiteralMismatch, h.Action)
	}
	if s := f.Senders; s != nil {
		on("senders", s.Mode, "%d allowed, %d denied (allow wins and skips antispam)", len(s.Allow), len(s.Deny))
	}
	p("  null_sender\t%s", f.NullSender)
	if b := f.Barring; b != nil {
		on("barring", b.Mode, "%d sender and %d recipient patterns (last match wins)", len(b.Senders), len(b.Recipients))
	}
	if r := f.Rates; r != nil {
		on("rates", r.Mode, "per sender %s; per client address %s", rateText(r.PerSender), rateText(r.PerClientIP))
	}
	if s := f.SPF; s != nil {
		on("spf", s.Mode, "fail %s, softfail %s, neutral %s, none %s, temperror %s, permerror %s",
			s.Fail, s.SoftFail, s.Neutral, s.None, s.TempError, s.PermError)
	}
	if g := f.Greylist; g != nil {
		key := "client network"
		if g.KeyOnSPFDomain {
			key += " (SPF-validated domain when SPF passes)"
		}
		on("greylist", g.Mode, "delay %s, expire %s, pass_ttl %s, /%d and /%d per %s; store errors: %s",
			g.Delay, g.Expire, g.PassTTL, g.NetmaskV4, g.NetmaskV6, key, g.OnError)
	}
	if s := f.Scoring; s != nil {
		on("scoring", ModeEnforce, "reject at %g (0: never), header at %g", s.Reject, s.Tag)
	}
	servers := "system resolver"
	if len(c.DNS.Servers) > 0 {
		servers = strings.Join(c.DNS.Servers, ", ")
	}
	p("  DNS\t%s, timeout %s, %d answers cached", servers, c.DNS.Timeout, c.DNS.CacheSize)
	p("  state\t%s", redactStore(c.State.Store))
}

func nets(l []Prefix) string {
	if len(l) == 0 {
		return "none"
	}
	s := make([]string, len(l))
	for i, p := range l {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

func rateText(l RateLimits) string {
	var parts []string
	if !l.Messages.IsZero() {
		parts = append(parts, "messages "+l.Messages.String())
	}
	if !l.Recipients.IsZero() {
		parts = append(parts, "recipients "+l.Recipients.String())
	}
	if l.MaxSize > 0 {
		parts = append(parts, "max_size "+l.MaxSize.String())
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// redactStore hides a Redis password.
func redactStore(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		if at := strings.LastIndex(s, "@"); at > i {
			return s[:i+3] + "***@" + s[at+1:]
		}
	}
	return s
}
