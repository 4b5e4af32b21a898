// Package dnsbl checks the client's address against DNS block lists and
// allow lists (SPEC §4 connect): every zone is asked in parallel, once per
// connection; each listed zone adds its weight to a score; block zones
// weigh up, allow zones (DNSWL) weigh down. At the threshold the client is
// refused, by default only at RCPT (as Postfix's smtpd_delay_reject), so
// the log shows whom the mail was from and for, and so a client that
// authenticates first is never refused for its dial-up address.
//
// Answers are validated as package dnslist does for every DNS list
// (RFC 5782): only 127.0.0.0/8 codes count; anything else, 127.0.0.1 (never
// a listing code) and the 127.255.255.0/24 codes list operators send to a
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
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mailgate/internal/dnslist"
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

// zone is a list and what its listing weighs here.
type zone struct {
	*dnslist.Zone
	weight float64
	allow  bool
}

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
		if seen[z.Name()] {
			return nil, fmt.Errorf("dnsbl: zone %q listed twice", z.Name())
		}
		seen[z.Name()] = true
		f.zones = append(f.zones, z)
	}
	return f, nil
}

func newZone(c Zone, allow bool) (*zone, error) {
	dz, err := dnslist.NewZone(c.Zone, c.Codes, c.Mask)
	if err != nil {
		return nil, err
	}
	z := &zone{Zone: dz, weight: c.Weight, allow: allow}
	switch {
	case allow:
		z.weight = -math.Abs(cmp.Or(z.weight, 1))
	case z.weight < 0:
		return nil, errors.New("a block zone's weight must be positive (allow lists go in allow_zones)")
	default:
		z.weight = cmp.Or(z.weight, 1)
	}
	return z, nil
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
		if r.Listed {
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
		names[i] = r.zone.Name()
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
func (f *Filter) Stats() []dnslist.Stats {
	out := make([]dnslist.Stats, len(f.zones))
	for i, z := range f.zones {
		out[i] = z.Stats()
	}
	return out
}

// result is one zone's answer about the client.
type result struct {
	dnslist.Answer
	zone    *zone
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
			addrs, err := f.resolver.LookupA(ctx, name+z.Name())
			r := &result{Answer: z.Judge(addrs, err), zone: z, latency: f.now().Sub(start)}
			z.Record(r.Answer, r.latency)
			results[i] = r
		})
	}
	wg.Wait()
	return results
}

// describe lists every zone's result for logs and explain:
// "zen.test=127.0.0.4 (3) 12ms; bl.test=not listed 9ms; wl.test=error: timeout 500ms".
func describe(results []*result) string {
	var b strings.Builder
	for i, r := range results {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.zone.Name() + "=")
		switch {
		case r.Err != "":
			b.WriteString("error: " + r.Err)
		case r.Listed:
			b.WriteString(joinAddrs(r.Codes) + " (" + num(r.zone.weight) + ")")
		case len(r.Ignored) > 0:
			b.WriteString("not listed (" + joinAddrs(r.Ignored) + " ignored)")
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
