// Package dnsbl checks the client's address against DNS block lists and
// allow lists (SPEC §4 connect): every zone is asked in parallel, once per
// connection; each listed zone adds its weight to a score; block zones
// weigh up, allow zones (DNSWL) weigh down. At the threshold the client is
// refused, by default only at RCPT (as Postfix's smtpd_delay_reject), so
// the log shows whom the mail was from and for, and so a client that
// authenticates first is never refused for its dial-up address.
//
// Answers are validated (RFC 5782): only 127.0.0.0/8 codes count;
// anything else, and the 127.255.255.0/24 codes list operators send to a
// resolver they refuse to serve, are errors of that zone, never listings.
// A zone in error is skipped: a dead list never blocks mail, and the
// resolver's timeout bounds how long it can delay the connection.
//
// YAML (filters.dnsbl):
//
//	zones:           [{zone: zen.spamhaus.org, weight: 3, codes: ["127.0.0.2-127.0.0.11"], mask: 0}]
//	allow_zones:     [{zone: list.dnswl.org, weight: -2}]
//	threshold:       3         # score >= threshold: refuse (default 1)
//	allow_threshold: -2        # score <= this (< 0): whitelist the session (default 0: off)
//	reject_at:       rcpt      # rcpt (default) | connect
//	action:          reject    # reject (554 5.7.1, default) | tempfail (450 4.7.1)
package dnsbl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mailgate/pipeline"
)

// Resolver is what the filter needs of the gateway's resolver.
type Resolver interface {
	LookupA(ctx context.Context, name string) ([]netip.Addr, error)
}

// Zone is one list.
type Zone struct {
	Zone string // "zen.spamhaus.org"
	// Weight is added to the score when the client is listed. Default 1
	// for block zones, -1 for allow zones; an allow zone's weight always
	// counts negative.
	Weight float64
	// Codes are the return codes that count: "127.0.0.2" or ranges
	// "127.0.0.2-127.0.0.11". Empty: any 127.0.0.0/8 code.
	Codes []string
	// Mask, if not 0, is a bitmask the code must match (SURBL-style
	// multi lists: 0x04 = bit 2 of the last octet).
	Mask uint32
}

// Config is the DNSBL policy.
type Config struct {
	Zones, AllowZones []Zone
	// Threshold: a score >= Threshold refuses the client (default 1).
	Threshold float64
	// AllowThreshold, if < 0: a score <= it whitelists the session
	// (the remaining antispam filters are skipped). 0 is off.
	AllowThreshold float64
	// RejectAt is "rcpt" (default) or "connect".
	RejectAt string
	// Action is "reject" (554 5.7.1, default) or "tempfail" (450 4.7.1).
	Action   string
	Resolver Resolver
	// Now is the clock that times the queries (tests); nil is time.Now.
	Now func() time.Time
}

// ZoneStats is one zone's health, for monitoring.
type ZoneStats struct {
	Zone                    string
	Queries, Listed, Errors uint64
	LastError               string
	LatencySum              time.Duration
}

// Filter is the DNSBL filter.
type Filter struct {
	zones          []*zone // block zones, then allow zones, in config order
	threshold      float64
	allowThreshold float64
	atConnect      bool
	tempfail       bool
	resolver       Resolver
	now            func() time.Time
}

type zone struct {
	name   string
	weight float64
	allow  bool
	codes  []codeRange
	mask   uint32

	mu    sync.Mutex
	stats ZoneStats
}

// codeRange is an inclusive range of return codes, as uint32.
type codeRange struct{ lo, hi uint32 }

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	f := &Filter{
		threshold:      cmp.Or(c.Threshold, 1),
		allowThreshold: c.AllowThreshold,
		resolver:       c.Resolver,
		now:            c.Now,
	}
	if f.now == nil {
		f.now = time.Now
	}
	switch {
	case f.resolver == nil:
		return nil, errors.New("dnsbl: no resolver")
	case len(c.Zones)+len(c.AllowZones) == 0:
		return nil, errors.New("dnsbl: no zones")
	case f.threshold < 0:
		return nil, fmt.Errorf("dnsbl: threshold %v must be positive", c.Threshold)
	case f.allowThreshold > 0:
		return nil, fmt.Errorf("dnsbl: allow_threshold %v must be negative (or 0: off)", c.AllowThreshold)
	}
	switch c.RejectAt {
	case "", "rcpt":
	case "connect":
		f.atConnect = true
	default:
		return nil, fmt.Errorf("dnsbl: reject_at %q: want rcpt or connect", c.RejectAt)
	}
	switch c.Action {
	case "", "reject":
	case "tempfail":
		f.tempfail = true
	default:
		return nil, fmt.Errorf("dnsbl: action %q: want reject or tempfail", c.Action)
	}
	seen := map[string]bool{}
	for i, zc := range slices.Concat(c.Zones, c.AllowZones) {
		z, err := newZone(zc, i >= len(c.Zones))
		if err != nil {
			return nil, fmt.Errorf("dnsbl: zone %q: %w", zc.Zone, err)
		}
		if seen[z.name] {
			return nil, fmt.Errorf("dnsbl: zone %q listed twice", z.name)
		}
		seen[z.name] = true
		f.zones = append(f.zones, z)
	}
	return f, nil
}

func newZone(c Zone, allow bool) (*zone, error) {
	z := &zone{name: strings.ToLower(strings.TrimSuffix(c.Zone, ".")), weight: c.Weight, allow: allow, mask: c.Mask}
	z.stats.Zone = z.name
	if !validName(z.name) {
		return nil, errors.New("not a valid DNS name")
	}
	switch {
	case allow:
		z.weight = -math.Abs(cmp.Or(z.weight, 1))
	case z.weight < 0:
		return nil, errors.New("a block zone's weight must be positive (allow lists go in allow_zones)")
	default:
		z.weight = cmp.Or(z.weight, 1)
	}
	if c.Mask&0xff000000 != 0 {
		return nil, fmt.Errorf("mask %#x covers the first octet (127)", c.Mask)
	}
	for _, s := range c.Codes {
		r, err := parseCodes(s)
		if err != nil {
			return nil, err
		}
		z.codes = append(z.codes, r)
	}
	return z, nil
}

// parseCodes parses "127.0.0.2" or "127.0.0.2-127.0.0.11".
func parseCodes(s string) (codeRange, error) {
	loS, hiS, isRange := strings.Cut(s, "-")
	if !isRange {
		hiS = loS
	}
	var r codeRange
	for i, p := range []string{loS, hiS} {
		a, err := netip.ParseAddr(strings.TrimSpace(p))
		if err != nil || !a.Is4() || !codeNet.Contains(a) {
			return r, fmt.Errorf("code %q: want 127.0.0.0/8 addresses, or a range of them", s)
		}
		if i == 0 {
			r.lo = u32(a)
		} else {
			r.hi = u32(a)
		}
	}
	if r.lo > r.hi {
		return r, fmt.Errorf("code range %q runs backwards", s)
	}
	return r, nil
}

// validName reports whether zone can be a DNS name under which a query
// name of 64 IPv6 nibble labels still fits in 253 octets.
func validName(zone string) bool {
	if zone == "" || len(zone) > 253-64 {
		return false
	}
	for label := range strings.SplitSeq(zone, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func (*Filter) Name() string        { return "dnsbl" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

// deferred is the session note key for a refusal kept for RCPT.
type deferred struct{}

// Connect looks the client up in every zone and scores the result.
func (f *Filter) Connect(ctx context.Context, s *pipeline.Session) pipeline.Verdict {
	ip := s.ClientIP()
	if !ip.IsValid() {
		return pipeline.PassBecause("no client address")
	}
	results := f.lookup(ctx, ip)
	score := 0.0
	var blocked []*result
	for _, r := range results {
		if r.listed {
			score += r.zone.weight
			if !r.zone.allow {
				blocked = append(blocked, r)
			}
		}
	}
	// Weights like 0.7+0.2+0.1 must reach a threshold of 1.
	score = math.Round(score*1e6) / 1e6
	details := describe(results)

	switch {
	case score >= f.threshold:
		list := names(blocked)
		why := fmt.Sprintf("blocked using %s (score %s >= %s)", list, num(score), num(f.threshold))
		v := f.refusal(ip, list, why+": "+details)
		if f.atConnect {
			return v
		}
		s.SetNote(deferred{}, v)
		return pipeline.PassBecause(why + ", refusal deferred to RCPT: " + details)
	case f.allowThreshold < 0 && score <= f.allowThreshold:
		return pipeline.Whitelist(fmt.Sprintf("allow-listed (score %s <= %s): %s", num(score), num(f.allowThreshold), details))
	case score != 0:
		return pipeline.Points(score, "dnsbl", "score "+num(score)+": "+details)
	}
	return pipeline.PassBecause("score 0: " + details)
}

// Rcpt gives the refusal deferred from the connect stage, if any, to
// every recipient.
func (f *Filter) Rcpt(_ context.Context, s *pipeline.Session, _ *pipeline.Transaction, _ pipeline.Address) pipeline.Verdict {
	if v, ok := s.Note(deferred{}).(pipeline.Verdict); ok {
		return v
	}
	return pipeline.Pass()
}

// names lists the listed block zones, heaviest first: the reply names
// the lists, so the sender's admin knows where to ask for delisting.
func names(blocked []*result) string {
	slices.SortStableFunc(blocked, func(a, b *result) int { return cmp.Compare(b.zone.weight, a.zone.weight) })
	names := make([]string, len(blocked))
	for i, r := range blocked {
		names[i] = r.zone.name
	}
	return strings.Join(names, ", ")
}

func (f *Filter) refusal(ip netip.Addr, list, reason string) pipeline.Verdict {
	text := "Service unavailable; client [" + ip.String() + "] blocked using " + list
	if f.tempfail {
		return pipeline.Defer(450, [3]int{4, 7, 1}, text, reason)
	}
	return pipeline.Refuse(554, [3]int{5, 7, 1}, text, reason)
}

// num formats a score without float noise.
func num(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

// Stats returns every zone's counters, in config order.
func (f *Filter) Stats() []ZoneStats {
	out := make([]ZoneStats, len(f.zones))
	for i, z := range f.zones {
		z.mu.Lock()
		out[i] = z.stats
		z.mu.Unlock()
	}
	return out
}

// result is one zone's answer about the client.
type result struct {
	zone    *zone
	listed  bool
	codes   []netip.Addr // codes that count (listed) or were ignored
	err     string
	latency time.Duration
}

// lookup asks every zone at once; it returns when the last has answered
// or failed.
func (f *Filter) lookup(ctx context.Context, ip netip.Addr) []*result {
	name := queryName(ip)
	results := make([]*result, len(f.zones))
	var wg sync.WaitGroup
	for i, z := range f.zones {
		wg.Go(func() {
			start := f.now()
			addrs, err := f.resolver.LookupA(ctx, name+z.name)
			r := z.judge(addrs, err)
			r.latency = f.now().Sub(start)
			z.record(r)
			results[i] = r
		})
	}
	wg.Wait()
	return results
}

var (
	codeNet    = netip.MustParsePrefix("127.0.0.0/8")
	refusedNet = netip.MustParsePrefix("127.255.255.0/24")
)

// judge validates an answer and applies the zone's code filters.
func (z *zone) judge(addrs []netip.Addr, err error) *result {
	r := &result{zone: z}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return r
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
		r.err = "timeout"
		return r
	case errors.As(err, &dnsErr):
		r.err = dnsErr.Err
		return r
	case err != nil:
		r.err = err.Error()
		return r
	}
	// One bad address spoils the answer: a list that says something other
	// than 127.0.0.0/8 is broken (or its domain expired and now points
	// everything somewhere), and a 127.255.255.x code is the operator
	// refusing our resolver.
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.Is4() || !codeNet.Contains(a):
			r.err = "invalid answer " + a.String()
			return r
		case refusedNet.Contains(a):
			r.err = "resolver blocked by the list operator (" + a.String() + ")"
			return r
		}
	}
	var ignored []netip.Addr
	for _, a := range addrs {
		if z.counts(u32(a.Unmap())) {
			r.codes = append(r.codes, a)
		} else {
			ignored = append(ignored, a)
		}
	}
	r.listed = len(r.codes) > 0
	if !r.listed {
		r.codes = ignored
	}
	return r
}

// counts applies the Codes and Mask filters.
func (z *zone) counts(code uint32) bool {
	if z.mask != 0 && code&z.mask == 0 {
		return false
	}
	if len(z.codes) == 0 {
		return true
	}
	for _, r := range z.codes {
		if r.lo <= code && code <= r.hi {
			return true
		}
	}
	return false
}

func (z *zone) record(r *result) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.stats.Queries++
	z.stats.LatencySum += r.latency
	switch {
	case r.err != "":
		z.stats.Errors++
		z.stats.LastError = r.err
	case r.listed:
		z.stats.Listed++
	}
}

// describe lists every zone's result for logs and explain:
// "zen.test=127.0.0.4 (3) 12ms; bl.test=not listed 9ms; wl.test=error: timeout 500ms".
func describe(results []*result) string {
	var b strings.Builder
	for i, r := range results {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.zone.name + "=")
		switch {
		case r.err != "":
			b.WriteString("error: " + r.err)
		case r.listed:
			b.WriteString(joinAddrs(r.codes) + " (" + num(r.zone.weight) + ")")
		case len(r.codes) > 0:
			b.WriteString("not listed (" + joinAddrs(r.codes) + " ignored)")
		default:
			b.WriteString("not listed")
		}
		b.WriteString(" " + strconv.FormatInt(r.latency.Milliseconds(), 10) + "ms")
	}
	return b.String()
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// queryName is the RFC 5782 §2.1/§2.4 query prefix for ip, with the
// trailing dot: "1.2.0.192." or 32 reversed nibbles for IPv6.
func queryName(ip netip.Addr) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])) + ".")
		}
		return b.String()
	}
	const hex = "0123456789abcdef"
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		b.WriteByte('.')
	}
	return b.String()
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
