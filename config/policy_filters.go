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
	c.contentPolicy(on)
	if s := f.Scoring; s != nil {
		on("scoring", ModeEnforce, "reject at %g (0: never), header at %g", s.Reject, s.Tag)
	}
	if k := f.DKIM; k != nil && len(k.Sign) > 0 {
		var d []string
		for _, s := range k.Sign {
			d = append(d, s.Selector+"._domainkey."+s.Domain)
		}
		on("dkimsign", k.Mode, "signs authenticated mail from %s", strings.Join(d, ", "))
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

// contentPolicy prints the data-stage filters in the order they run.
func (c *Config) contentPolicy(on func(string, FilterMode, string, ...any)) {
	f := &c.Filters
	if m := f.MIME; m != nil {
		on("mime", ModeEnforce, "depth %d, %d parts, headers %s, parsed up to %s; malformed: %s",
			m.MaxDepth, m.MaxParts, m.MaxHeaderSize, m.MaxParseSize, m.Malformed)
	}
	if ct := f.Content; ct != nil {
		on("content", ct.Mode, "%d header and %d body patterns", len(ct.DenyHeaders), len(ct.DenyBody))
	}
	if a := f.Attachments; a != nil {
		on("attachments", a.Mode, "extensions %s; types %s; inside zip %v; %s",
			orNone(a.DenyExtensions), orNone(a.DenyTypes), *a.ScanArchives, a.Action)
	}
	if a := f.ClamAV; a != nil {
		on("clamav", a.Mode, "%s, up to %s, timeout %s, %d scans at once; clamd errors: %s",
			a.Address, a.MaxSize, a.Timeout, a.Connections, a.OnError)
	}
	if k := f.DKIM; k != nil && *k.Verify {
		on("dkim", k.Mode, "verify up to %d signatures, timeout %s", k.MaxSignatures, k.Timeout)
	}
	if d := f.DMARC; d != nil {
		reject := "reject"
		if !*d.RejectPolicy {
			reject = "tag"
		}
		on("dmarc", d.Mode, "p=reject: %s, p=quarantine: %s, lookup errors: %s", reject, d.Quarantine, d.TempError)
	}
	if f.SPF != nil || f.DKIM != nil || f.DMARC != nil {
		on("authresults", ModeEnforce, "Authentication-Results: %s; forged ones with this id removed", c.Hostname)
	}
	if s := f.SURBL; s != nil {
		var z []string
		for _, x := range s.Zones {
			z = append(z, x.Zone)
		}
		on("surbl", s.Mode, "%s; up to %d domains, %s; DNS errors: %s", strings.Join(z, ", "), s.MaxDomains, s.Action, s.OnDNSError)
	}
	if s := f.Spamd; s != nil {
		on("spamd", s.Mode, "%s, reject at %g (0: never), tag at %g, up to %s; errors: %s",
			s.Address, s.RejectScore, s.TagScore, s.MaxSize, s.OnError)
	}
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, " ")
}
