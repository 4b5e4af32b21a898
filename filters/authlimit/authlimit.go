// Package authlimit limits failed SMTP AUTH attempts per client address
// (SPEC §4 auth: "failures limited per session and per IP"). The per
// session limit is the protocol engine's (auth.max_failures); this filter
// remembers failures across sessions, so a password-guessing bot that
// reconnects after every refusal is shut out, and its guesses stop costing
// the gateway a password hash each.
package authlimit

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"mailgate/pipeline"
)

// Config is the per-address limit.
type Config struct {
	// MaxFailures failed attempts within Window refuse further AUTH from
	// the address until the window has passed.
	MaxFailures int
	Window      time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Failures hold the recent failures; nil gives the filter its own.
	// The gateway passes the same Failures to the filter of every
	// configuration generation, so a reload does not forgive a
	// password-guessing client.
	Failures *Failures
}

// Failures are the recent failed AUTH attempts per client address.
type Failures struct {
	mu    sync.Mutex
	times *lru.Cache[netip.Prefix, []time.Time]
}

// NewFailures returns an empty record.
func NewFailures() *Failures {
	cache, _ := lru.New[netip.Prefix, []time.Time](maxTracked)
	return &Failures{times: cache}
}

// maxTracked bounds the memory used: the least recently failing
// addresses are forgotten first.
const maxTracked = 100000

// Filter counts failures per client address (IPv6 per /64: one host
// usually has a whole /64).
type Filter struct {
	c Config
	f *Failures
}

// New returns the filter.
func New(c Config) *Filter {
	if c.Now == nil {
		c.Now = time.Now
	}
	f := c.Failures
	if f == nil {
		f = NewFailures()
	}
	return &Filter{c: c, f: f}
}

func (*Filter) Name() string        { return "auth-limit" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

func key(a netip.Addr) netip.Prefix {
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// recent returns the failures within the window, dropping older ones.
func (f *Filter) recent(k netip.Prefix, now time.Time) []time.Time {
	times, _ := f.f.times.Get(k)
	cut := now.Add(-f.c.Window)
	i := 0
	for i < len(times) && !times[i].After(cut) {
		i++
	}
	return times[i:]
}

// Auth refuses AUTH from an address over its limit.
func (f *Filter) Auth(_ context.Context, s *pipeline.Session) pipeline.Verdict {
	k := key(s.ClientIP())
	f.f.mu.Lock()
	n := len(f.recent(k, f.c.Now()))
	f.f.mu.Unlock()
	if n >= f.c.MaxFailures {
		v := pipeline.Defer(421, [3]int{4, 7, 0}, "Too many authentication failures, try again later",
			fmt.Sprintf("%d failed AUTH attempts from %s within %s", n, k, f.c.Window))
		v.Reply.Close = true
		return v
	}
	return pipeline.Pass()
}

// AuthResult counts a failure.
func (f *Filter) AuthResult(s *pipeline.Session, _ string, ok bool) {
	if ok {
		return
	}
	now := f.c.Now()
	k := key(s.ClientIP())
	f.f.mu.Lock()
	defer f.f.mu.Unlock()
	times := f.recent(k, now)
	if len(times) >= f.c.MaxFailures {
		times = times[1:] // keep the list bounded
	}
	f.f.times.Add(k, append(append([]time.Time(nil), times...), now))
}
