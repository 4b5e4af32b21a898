package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// State store kinds.
const (
	storeFile   = "file:"
	storeRedis  = "redis://"
	storeRediss = "rediss://"
	storeMemory = "memory:"
)

func (c *Config) validateDNS(d *diag) {
	for i, s := range c.DNS.Servers {
		key := fmt.Sprintf("dns.servers[%d]", i)
		if a, err := netip.ParseAddr(s); err == nil {
			c.DNS.Servers[i] = net.JoinHostPort(a.String(), "53")
			continue
		}
		norm, err := checkHostPort(s, true)
		if err != nil {
			d.errorf(key, "%v", err)
			continue
		}
		c.DNS.Servers[i] = norm
	}
	if c.DNS.Timeout <= 0 || c.DNS.Timeout.D() > 30*time.Second {
		d.errorf("dns.timeout", "%s is out of range: want more than 0 and at most 30s", c.DNS.Timeout)
	}
	if c.DNS.CacheSize < 0 {
		d.errorf("dns.cache_size", "must not be negative, got %d", c.DNS.CacheSize)
	}
}

func (c *Config) validateState(d *diag) {
	s := strings.TrimSpace(c.State.Store)
	c.State.Store = s
	switch {
	case strings.HasPrefix(s, storeFile):
		path := strings.TrimPrefix(s, storeFile)
		if path == "" {
			d.errorf("state.store", "file: needs a path, e.g. file:/var/lib/mailgate/state.db")
			return
		}
		if c.NeedsState() {
			if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
				d.warnf("state.store", "the directory of %s does not exist: greylisting and rate rules will fail until it is created", path)
			}
		}
	case strings.HasPrefix(s, storeRedis), strings.HasPrefix(s, storeRediss):
		if strings.TrimPrefix(strings.TrimPrefix(s, storeRedis), storeRediss) == "" {
			d.errorf("state.store", "%q: want redis://host:6379/0", s)
		}
	case s == storeMemory:
		if c.NeedsState() {
			d.warnf("state.store", "memory: greylisting and rate state is lost on every restart")
		}
	default:
		d.errorf("state.store", "unknown store %q (want file:/path/state.db, redis://host:6379/0, rediss://... or memory:)", s)
	}
}

func (c *Config) validateConnLimits(d *diag) {
	l := &c.Limits
	if l.MaxConnections < 0 {
		d.errorf("limits.max_connections", "must not be negative, got %d", l.MaxConnections)
	}
	if l.MaxConnectionsPerIP < 0 {
		d.errorf("limits.max_connections_per_ip", "must not be negative, got %d", l.MaxConnectionsPerIP)
	}
	if l.MaxConnections > 0 && l.MaxConnectionsPerIP > l.MaxConnections {
		d.warnf("limits.max_connections_per_ip", "%d is more than max_connections (%d)", l.MaxConnectionsPerIP, l.MaxConnections)
	}
}

var (
	modes          = []string{string(ModeEnforce), string(ModeShadow)}
	spfActions     = []string{"ignore", "tag", "reject", "tempfail"}
	scoreActions   = []string{"reject", "tempfail", "score"}
	onDNSErrors    = []string{"tempfail", "skip"}
	dnsblRejectAts = []string{"rcpt", "connect"}
)

func (c *Config) validateFilters(d *diag) {
	for _, m := range c.filterModes() {
		checkEnum(d, m.key, (*string)(m.mode), modes)
	}
	f := &c.Filters
	checkEnum(d, "filters.null_sender", &f.NullSender, []string{"accept", "reject"})
	if r := f.RDNS; r != nil {
		checkEnum(d, "filters.rdns.action", &r.Action, scoreActions)
		checkEnum(d, "filters.rdns.on_dns_error", &r.OnDNSError, onDNSErrors)
		checkScore(d, "filters.rdns.score", r.Score)
		if !*r.RequirePTR && !r.RequireFCRDNS {
			d.warnf("filters.rdns", "require_ptr and require_fcrdns are both off: the filter only records the client's host name")
		}
	}
	if p := f.Pregreet; p != nil {
		checkEnum(d, "filters.pregreet.action", &p.Action, scoreActions)
		checkScore(d, "filters.pregreet.score", p.Score)
		if p.Wait < 0 || p.Wait.D() > 30*time.Second {
			d.errorf("filters.pregreet.wait", "%s is out of range: want at most 30s (clients give up on a slow banner)", p.Wait)
		}
	}
	if h := f.Helo; h != nil {
		checkEnum(d, "filters.helo.action", &h.Action, []string{"reject", "score"})
		checkScore(d, "filters.helo.score", h.Score)
	}
	if b := f.DNSBL; b != nil {
		c.validateDNSBL(d, b)
	}
	if b := f.Barring; b != nil {
		checkPatterns(d, "filters.barring.senders", b.Senders)
		checkPatterns(d, "filters.barring.recipients", b.Recipients)
	}
	if s := f.Senders; s != nil {
		checkAddressList(d, "filters.senders.allow", s.Allow)
		checkAddressList(d, "filters.senders.deny", s.Deny)
	}
	if s := f.SPF; s != nil {
		for _, a := range []struct {
			key string
			v   *string
		}{{"fail", &s.Fail}, {"softfail", &s.SoftFail}, {"neutral", &s.Neutral}, {"none", &s.None},
			{"temperror", &s.TempError}, {"permerror", &s.PermError}} {
			checkEnum(d, "filters.spf."+a.key, a.v, spfActions)
		}
		checkScore(d, "filters.spf.tag_score", s.TagScore)
		if s.Timeout <= 0 || s.Timeout.D() > time.Minute {
			d.errorf("filters.spf.timeout", "%s is out of range: want more than 0 and at most 1m", s.Timeout)
		}
	}
	if g := f.Greylist; g != nil {
		c.validateGreylist(d, g)
	}
	if r := f.Rates; r != nil {
		for _, l := range []struct {
			key string
			v   RateLimits
		}{{"filters.rates.per_sender", r.PerSender}, {"filters.rates.per_client_ip", r.PerClientIP}} {
			if l.v.MaxSize < 0 {
				d.errorf(l.key+".max_size", "must not be negative")
			}
		}
		if r.PerSender == (RateLimits{}) && r.PerClientIP == (RateLimits{}) {
			d.warnf("filters.rates", "no rule set: give per_sender or per_client_ip messages, recipients or max_size")
		}
	}
	if s := f.Scoring; s != nil {
		checkScore(d, "filters.scoring.reject", s.Reject)
		checkScore(d, "filters.scoring.tag", s.Tag)
	}
}

func checkScore(d *diag, key string, v float64) {
	if v < 0 || v > 1000 {
		d.errorf(key, "%g is out of range: want between 0 and 1000", v)
	}
}

func (c *Config) validateDNSBL(d *diag, b *DNSBL) {
	if len(b.Zones) == 0 && len(b.AllowZones) == 0 {
		d.errorf("filters.dnsbl.zones", "at least one zone is required (e.g. {zone: zen.spamhaus.org})")
	}
	checkZones(d, "filters.dnsbl.zones", b.Zones)
	checkZones(d, "filters.dnsbl.allow_zones", b.AllowZones)
	if b.Threshold <= 0 {
		d.errorf("filters.dnsbl.threshold", "must be positive, got %g", b.Threshold)
	}
	if b.AllowThreshold > 0 {
		d.errorf("filters.dnsbl.allow_threshold", "must be negative (a score at or below it whitelists the client) or 0 (off), got %g", b.AllowThreshold)
	}
	checkEnum(d, "filters.dnsbl.reject_at", &b.RejectAt, dnsblRejectAts)
	checkEnum(d, "filters.dnsbl.action", &b.Action, []string{"reject", "tempfail"})
}

// checkZones checks DNS list zones (DNSBL, DNSWL, SURBL): name, return
// codes and mask.
func checkZones(d *diag, key string, list []DNSBLZone) {
	for i := range list {
		z := &list[i]
		k := fmt.Sprintf("%s[%d]", key, i)
		n, err := checkDomain(z.Zone, true)
		if err != nil {
			d.errorf(k+".zone", "%v", err)
		} else {
			z.Zone = n
		}
		for j, code := range z.Codes {
			if err := checkCode(code); err != nil {
				d.errorf(fmt.Sprintf("%s.codes[%d]", k, j), "%v", err)
			}
		}
		if z.Mask < 0 || z.Mask > 255 {
			d.errorf(k+".mask", "%d is out of range: want 1 to 255 (a bitmask on the answer's last octet)", z.Mask)
		}
	}
}

// checkCode checks a DNSBL return code or range inside 127.0.0.0/8.
func checkCode(s string) error {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	a, err := netip.ParseAddr(strings.TrimSpace(lo))
	if err != nil || !a.Is4() || a.As4()[0] != 127 {
		return fmt.Errorf("%q: want a 127.0.0.x code or a range 127.0.0.2-127.0.0.11", s)
	}
	if isRange {
		b, err := netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil || !b.Is4() || b.As4()[0] != 127 || b.Less(a) {
			return fmt.Errorf("%q: want a range of 127.0.0.x codes, low to high", s)
		}
	}
	return nil
}

// checkPatterns does the cheap checks of barring patterns (the filter
// compiles them).
func checkPatterns(d *diag, key string, list []string) {
	for i, p := range list {
		p = strings.TrimSpace(p)
		k := fmt.Sprintf("%s[%d]", key, i)
		switch {
		case p == "" || p == "~":
			d.errorf(k, "empty pattern")
		case len(p) > 512:
			d.errorf(k, "pattern longer than 512 characters")
		case strings.ContainsAny(p, " \t"):
			d.errorf(k, "%q: patterns cannot hold spaces", p)
		}
	}
}

// checkAddressList checks sender list entries: user@domain, domain or
// @domain.
func checkAddressList(d *diag, key string, list []string) {
	for i, e := range list {
		k := fmt.Sprintf("%s[%d]", key, i)
		e = strings.TrimSpace(e)
		dom := e
		if i := strings.IndexByte(e, '@'); i >= 0 {
			dom = e[i+1:]
		}
		if strings.ContainsAny(e, " \t<>") || strings.Contains(dom, "@") {
			d.errorf(k, "%q: want user@example.com, example.com (and its subdomains) or @example.com", e)
		} else if _, err := checkDomain(dom, false); err != nil {
			d.errorf(k, "%v", err)
		}
	}
}

func (c *Config) validateGreylist(d *diag, g *Greylist) {
	if g.Delay <= 0 || g.Delay.D() > 24*time.Hour {
		d.errorf("filters.greylist.delay", "%s is out of range: want more than 0 and at most 1d", g.Delay)
	}
	if g.Expire <= g.Delay {
		d.errorf("filters.greylist.expire", "%s must be longer than delay (%s): retries must have time to pass", g.Expire, g.Delay)
	}
	if g.PassTTL <= 0 {
		d.errorf("filters.greylist.pass_ttl", "must be positive, got %s", g.PassTTL)
	}
	if g.NetmaskV4 < 8 || g.NetmaskV4 > 32 {
		d.errorf("filters.greylist.netmask_v4", "%d is out of range: want 8 to 32", g.NetmaskV4)
	}
	if g.NetmaskV6 < 16 || g.NetmaskV6 > 128 {
		d.errorf("filters.greylist.netmask_v6", "%d is out of range: want 16 to 128", g.NetmaskV6)
	}
	checkEnum(d, "filters.greylist.on_error", &g.OnError, []string{"tempfail", "accept"})
	if g.OnError == "accept" {
		d.warnf("filters.greylist.on_error", "accept: while the state store is down, greylisting lets everything through")
	}
}
