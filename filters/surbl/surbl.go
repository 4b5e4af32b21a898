// Package surbl refuses messages that link to domains on URL block
// lists (SURBL, URIBL, Spamhaus DBL; SPEC §4 data): spam changes its
// sending addresses by the hour but must link to where it sells, and
// those domains are listed.
//
// The links of the text and HTML parts (attached HTML files too) are
// found (package urls), each host reduced to its registrable domain
// ("a.b.shop.example.com" → "example.com") or, for a numeric host, to
// its IPv4 address, which is looked up reversed as SURBL lists them
// (http://192.0.2.1/ → 1.2.0.192.<zone>). A message that was not
// MIME-parsed (too large, malformed, or with no text parts) is read raw
// instead: the first megabyte of its body, quoted-printable undone.
//
// Every domain is asked of every zone at once (16 queries at a time),
// all within one timeout. Answers are validated as package dnslist does
// for every DNS list, filters/dnsbl's too (RFC 5782): only 127.0.0.0/8
// codes count, and 127.0.0.1 and the 127.255.255.0/24 codes (the
// operator refusing our resolver) are errors, never listings. codes and
// mask select the lists of a combined zone such as multi.surbl.org
// (mask 8 = bit 3: phishing).
//
// A listed domain refuses the message:
//
//	554 5.7.1 Message refused: URL domain <domain> is listed at <zone>
//
// or, with action: score, adds score points to the message (the scoring
// filter's thresholds decide). A lookup that fails when no domain was
// found listed is skipped (on_dns_error: skip, the default: a dead list
// never blocks mail) or defers the message:
//
//	451 4.4.3 URL list lookup failed, try again later
//
// YAML (filters.surbl), with the defaults:
//
//	surbl:
//	  zones:
//	    - {zone: multi.surbl.org, mask: 24}  # bits of the last octet: 8 phishing, 16 malware
//	    - {zone: multi.uribl.com, codes: ["127.0.0.2"]}  # black only
//	  max_domains: 50        # looked up per message, the first found
//	  action: reject         # reject | score
//	  score: 1               # points with action: score
//	  timeout: 5s            # for all lookups of a message
//	  on_dns_error: skip     # skip | tempfail
//
// zones[].codes (default: any 127.0.0.0/8 code) and zones[].mask
// (default 0: unused) are filters/dnsbl's; weight is not used.
package surbl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailgate/filters/surbl/urls"
	"mailgate/internal/dnslist"
	"mailgate/internal/mimeparse"
	"mailgate/pipeline"
)

// Defaults.
const (
	DefaultMaxDomains = 50
	DefaultTimeout    = 5 * time.Second
	// Concurrency is the most queries in flight for one message.
	Concurrency = 16
	// RawLimit is how much of an unparsed message is read for links.
	RawLimit = 1 << 20
)

// Resolver is what the filter needs of the gateway's resolver.
type Resolver interface {
	LookupA(ctx context.Context, name string) ([]netip.Addr, error)
}

// Zone is one URL list.
type Zone struct {
	Zone string // "multi.surbl.org"
	// Codes are the return codes that count: "127.0.0.2" or ranges
	// "127.0.0.2-127.0.0.11". Empty: any 127.0.0.0/8 code.
	Codes []string
	// Mask, if not 0, is a bitmask the code must match (multi lists:
	// each bit of the last octet is one list).
	Mask uint32
}

// Config is the URL list policy.
type Config struct {
	Zones []Zone
	// MaxDomains looked up per message (default 50): the first found.
	MaxDomains int
	// Action for a listed domain: "reject" (default) or "score".
	Action string
	// Score added with Action "score".
	Score float64
	// Timeout for all lookups of one message (default 5s).
	Timeout time.Duration
	// OnDNSError when a lookup fails and nothing was found listed:
	// "skip" (default) or "tempfail".
	OnDNSError string
	Resolver   Resolver
	// Now is the clock that times the queries (tests); nil is time.Now.
	Now func() time.Time
}

// Filter is the URL list filter.
type Filter struct {
	zones      []*dnslist.Zone
	maxDomains int
	score      float64 // > 0 with action score; 0: reject
	timeout    time.Duration
	tempfail   bool
	resolver   Resolver
	now        func() time.Time
}

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	f := &Filter{
		maxDomains: cmp.Or(c.MaxDomains, DefaultMaxDomains),
		timeout:    cmp.Or(c.Timeout, DefaultTimeout),
		resolver:   c.Resolver,
		now:        c.Now,
	}
	if f.now == nil {
		f.now = time.Now
	}
	switch {
	case f.resolver == nil:
		return nil, errors.New("surbl: no resolver")
	case len(c.Zones) == 0:
		return nil, errors.New("surbl: no zones")
	case f.maxDomains < 1:
		return nil, fmt.Errorf("surbl: max_domains %d must be positive", c.MaxDomains)
	case f.timeout < 0:
		return nil, fmt.Errorf("surbl: timeout %v must be positive", c.Timeout)
	}
	switch c.Action {
	case "", "reject":
	case "score":
		if c.Score <= 0 {
			return nil, fmt.Errorf("surbl: action score needs a positive score, not %v", c.Score)
		}
		f.score = c.Score
	default:
		return nil, fmt.Errorf("surbl: action %q: want reject or score", c.Action)
	}
	switch c.OnDNSError {
	case "", "skip":
	case "tempfail":
		f.tempfail = true
	default:
		return nil, fmt.Errorf("surbl: on_dns_error %q: want skip or tempfail", c.OnDNSError)
	}
	seen := map[string]bool{}
	for _, zc := range c.Zones {
		z, err := dnslist.NewZone(zc.Zone, zc.Codes, zc.Mask)
		if err != nil {
			return nil, fmt.Errorf("surbl: zone %q: %w", zc.Zone, err)
		}
		if seen[z.Name()] {
			return nil, fmt.Errorf("surbl: zone %q listed twice", z.Name())
		}
		seen[z.Name()] = true
		f.zones = append(f.zones, z)
	}
	return f, nil
}

func (*Filter) Name() string        { return "surbl" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

// Data looks up the domains the message links to.
func (f *Filter) Data(ctx context.Context, _ *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	return f.Check(ctx, t.MIME, m.Reader)
}

// Check is Data on the parsed message (nil if none) and a way to read
// the raw one.
func (f *Filter) Check(ctx context.Context, msg *mimeparse.Message, raw func() io.Reader) pipeline.Verdict {
	c := urls.NewCollector(f.maxDomains)
	source, err := collect(c, msg, raw)
	if err != nil {
		return pipeline.Defer(451, [3]int{4, 3, 0}, "Temporary local problem, try again later",
			"reading the message for its links: "+err.Error())
	}
	targets := c.Targets()
	if len(targets) == 0 {
		return pipeline.PassBecause("no links in " + source)
	}
	searched := fmt.Sprintf("%s in %s", plural(len(targets), "domain"), source)
	if c.Full() {
		searched += " (max_domains reached)"
	}
	hits, failed := f.lookup(ctx, targets)

	if len(hits) > 0 {
		first := hits[0]
		reason := "listed: " + describe(hits) + "; looked up " + searched
		if failed != "" {
			reason += "; " + failed
		}
		if f.score > 0 {
			return pipeline.Points(f.score, "surbl", reason)
		}
		return pipeline.Refuse(554, [3]int{5, 7, 1},
			"Message refused: URL domain "+first.target.Name+" is listed at "+first.zone.Name(), reason)
	}
	if failed != "" {
		if f.tempfail {
			return pipeline.Defer(451, [3]int{4, 4, 3}, "URL list lookup failed, try again later",
				failed+"; none listed of "+searched)
		}
		return pipeline.PassBecause(failed + ", skipped (on_dns_error: skip); none listed of " + searched)
	}
	return pipeline.PassBecause("none listed of " + searched)
}

// collect reads the links of the text parts, and the raw message when
// the parse has none to offer. It names what was read.
func collect(c *urls.Collector, msg *mimeparse.Message, raw func() io.Reader) (string, error) {
	parts := 0
	if msg != nil {
		for _, p := range msg.Parts {
			if c.Full() {
				break
			}
			switch {
			case p.HTML:
				c.HTML(p.Content)
			case p.Text:
				c.Text(string(p.Content))
			default:
				continue
			}
			parts++
		}
	}
	source := plural(parts, "text part")
	why := ""
	switch {
	case msg == nil:
		why = "not MIME-parsed"
	case msg.Skipped:
		why = "too large to MIME-parse"
	case msg.Malformed != "":
		why = "malformed MIME"
	case parts == 0:
		why = "no text parts"
	default:
		return source, nil
	}
	if c.Full() {
		return source, nil
	}
	data, err := io.ReadAll(io.LimitReader(raw(), RawLimit))
	if err != nil {
		return "", err
	}
	c.Raw(data)
	source = "the raw body (" + why + ")"
	if parts > 0 {
		source = plural(parts, "text part") + " and " + source
	}
	return source, nil
}

// hit is one listing.
type hit struct {
	target urls.Target
	zone   *dnslist.Zone
	codes  []netip.Addr
}

// lookup asks every zone about every target, Concurrency queries at a
// time, all within the timeout. It returns the listings in message
// order (then zone order), and what failed ("" if nothing).
func (f *Filter) lookup(ctx context.Context, targets []urls.Target) (hits []hit, failed string) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	n := len(targets) * len(f.zones)
	answers := make([]dnslist.Answer, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, Concurrency) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t, z := targets[i/len(f.zones)], f.zones[i%len(f.zones)]
				name := t.Query() + "." + z.Name()
				if len(name) > 253 {
					continue // cannot be asked, cannot be listed
				}
				if ctx.Err() != nil {
					answers[i] = dnslist.Answer{Err: "timeout"}
					z.Record(answers[i], 0)
					continue
				}
				start := f.now()
				addrs, err := f.resolver.LookupA(ctx, name)
				answers[i] = z.Judge(addrs, err)
				z.Record(answers[i], f.now().Sub(start))
			}
		})
	}
	wg.Wait()

	errs := map[string]int{}
	var errZones []string
	for i, a := range answers {
		t, z := targets[i/len(f.zones)], f.zones[i%len(f.zones)]
		switch {
		case a.Listed:
			hits = append(hits, hit{target: t, zone: z, codes: a.Codes})
		case a.Err != "":
			key := z.Name() + ": " + a.Err
			if errs[key] == 0 {
				errZones = append(errZones, key)
			}
			errs[key]++
		}
	}
	if len(errZones) > 0 {
		var b strings.Builder
		b.WriteString("lookups failed (")
		for i, k := range errZones {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(k + " ×" + strconv.Itoa(errs[k]))
		}
		b.WriteString(")")
		failed = b.String()
	}
	return hits, failed
}

// describe lists the listings for the log:
// "example.com at multi.test=127.0.0.4, 192.0.2.1 at ip.test=127.0.0.2".
func describe(hits []hit) string {
	var b strings.Builder
	for i, h := range hits {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(h.target.Name + " at " + h.zone.Name() + "=")
		for j, c := range h.codes {
			if j > 0 {
				b.WriteString("+")
			}
			b.WriteString(c.String())
		}
	}
	return b.String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// Stats returns every zone's counters, in config order.
func (f *Filter) Stats() []dnslist.Stats {
	out := make([]dnslist.Stats, len(f.zones))
	for i, z := range f.zones {
		out[i] = z.Stats()
	}
	return out
}
