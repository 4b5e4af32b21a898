// Package greylist is triplet greylisting (SPEC §4 rcpt): the first
// attempt of an unknown (client network, sender, recipient) triplet is
// deferred with 451 4.7.1; a real MTA retries after a few minutes and is
// let through, a spam bot that fires once and forgets is not. A client
// that passed once is remembered for a long time and not delayed again.
//
// The state lives in a state.Store, so gateways sharing one Redis
// recognise a retry that lands on another MX.
//
// YAML (filters.greylist):
//
//	delay: 5m              # a retry sooner than this is deferred again
//	expire: 4h             # a triplet not retried within this is forgotten
//	pass_ttl: 36d          # a client that passed is not greylisted again for this long
//	                       #   (counted from its last mail: the record is renewed daily on use)
//	netmask_v4: 24         # clients are grouped per network: MTA farms retry
//	netmask_v6: 64         #   from another address of the same network
//	key_on_spf_domain: false  # SPF pass: key on the validated domain, not the network
//	on_error: tempfail     # state store down: tempfail | accept
//
// Authenticated, relay-network and allow-listed clients are never
// greylisted: the filter is of kind Antispam, which the pipeline skips for
// whitelisted sessions (and it checks AuthUser itself as well).
package greylist

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"mailgate/internal/state"
	"mailgate/pipeline"
)

// Failure policies for an unavailable state store.
const (
	OnErrorTempfail = "tempfail"
	OnErrorAccept   = "accept"
)

// Defaults for zero values in Config (SPEC §3).
const (
	DefaultDelay     = 5 * time.Minute
	DefaultExpire    = 4 * time.Hour
	DefaultPassTTL   = 36 * 24 * time.Hour
	DefaultNetmaskV4 = 24
	DefaultNetmaskV6 = 64
)

// storeTimeout bounds the store calls of one recipient, whatever the
// backend's own timeouts: a slow Redis must not hold the session.
const storeTimeout = 3 * time.Second

// Config is the greylisting policy. Zero durations and netmasks take the
// defaults above.
type Config struct {
	Delay, Expire, PassTTL time.Duration
	NetmaskV4, NetmaskV6   int
	// KeyOnSPFDomain keys the triplet on the SPF-validated sender domain
	// when SPF passed, so a big provider retrying from another network
	// is not delayed twice.
	KeyOnSPFDomain bool
	// OnError is the policy when the store is unavailable: "tempfail"
	// (default) or "accept".
	OnError string
	Store   state.Store
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Log receives the warnings of the accept policy; nil discards them.
	Log *slog.Logger
}

// passCacheTTL is how long a client seen to have passed is trusted
// without asking the store again. A known client then costs no store
// round trip per message; the price is that a pass deleted from the
// store by hand is honoured for up to this long by each gateway.
const passCacheTTL = time.Minute

// passCacheSize bounds the passed clients remembered in-process.
const passCacheSize = 50000

// Filter is the greylisting filter.
type Filter struct {
	c Config
	// passed maps a client key to when its cached pass stops being
	// trusted.
	passed *lru.Cache[string, time.Time]
}

// New validates the config and returns the filter.
func New(c Config) (*Filter, error) {
	setDefault(&c.Delay, DefaultDelay)
	setDefault(&c.Expire, DefaultExpire)
	setDefault(&c.PassTTL, DefaultPassTTL)
	setDefault(&c.NetmaskV4, DefaultNetmaskV4)
	setDefault(&c.NetmaskV6, DefaultNetmaskV6)
	setDefault(&c.OnError, OnErrorTempfail)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Store == nil:
		return nil, errors.New("greylist: no state store")
	case c.Delay < 0 || c.Expire < 0 || c.PassTTL < 0:
		return nil, errors.New("greylist: negative duration")
	case c.Expire <= c.Delay:
		return nil, fmt.Errorf("greylist: expire %v must be longer than delay %v, or no retry could ever pass", c.Expire, c.Delay)
	case c.NetmaskV4 < 1 || c.NetmaskV4 > 32:
		return nil, fmt.Errorf("greylist: netmask_v4 %d not in 1..32", c.NetmaskV4)
	case c.NetmaskV6 < 1 || c.NetmaskV6 > 128:
		return nil, fmt.Errorf("greylist: netmask_v6 %d not in 1..128", c.NetmaskV6)
	case c.OnError != OnErrorTempfail && c.OnError != OnErrorAccept:
		return nil, fmt.Errorf("greylist: on_error %q: want tempfail or accept", c.OnError)
	}
	passed, err := lru.New[string, time.Time](passCacheSize)
	if err != nil {
		return nil, err
	}
	return &Filter{c: c, passed: passed}, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (*Filter) Name() string        { return "greylist" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

var greylisted = pipeline.Defer(451, [3]int{4, 7, 1}, "Greylisted, please try again later", "")

// Rcpt greylists the recipient's triplet.
func (f *Filter) Rcpt(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction, rcpt pipeline.Address) pipeline.Verdict {
	if s.AuthUser != "" {
		return pipeline.PassBecause("authenticated client is not greylisted")
	}
	client, ok := f.clientKey(s, t)
	if !ok {
		return pipeline.PassBecause("no client address to greylist")
	}
	now := f.c.Now()
	if until, ok := f.passed.Get(client); ok && now.Before(until) {
		return pipeline.PassBecause("client passed greylisting before (" + client + ")")
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()

	passKey := "greypass:" + client
	if v, passed, err := f.c.Store.Get(ctx, passKey); err != nil {
		return f.storeFailed(s, err)
	} else if passed {
		f.passed.Add(client, now.Add(passCacheTTL))
		f.renewPass(ctx, s, passKey, v, now)
		return pipeline.PassBecause("client passed greylisting before (" + client + ")")
	}

	key := "grey:" + client + "|" + hash(sender(t.From)+"|"+strings.ToLower(rcpt.String()))
	stamp := []byte(strconv.FormatInt(now.UnixNano(), 10))
	added, existing, err := f.c.Store.Add(ctx, key, stamp, f.c.Expire)
	if err != nil {
		return f.storeFailed(s, err)
	}
	if added {
		return greylisted.WithReason("new triplet (" + client + ")")
	}
	first, err := strconv.ParseInt(string(existing), 10, 64)
	if err != nil {
		// Not ours to read (another version wrote it): start over.
		if err := f.c.Store.Set(ctx, key, stamp, f.c.Expire); err != nil {
			return f.storeFailed(s, err)
		}
		return greylisted.WithReason("unreadable triplet record, restarted (" + client + ")")
	}
	waited := now.Sub(time.Unix(0, first))
	if waited < f.c.Delay {
		return greylisted.WithReason(fmt.Sprintf("retry too early: %v of %v (%s)", waited.Round(time.Second), f.c.Delay, client))
	}

	// The retry passed. Failing to remember it now only means the
	// client may be greylisted again later: pass it regardless.
	if err := f.c.Store.Set(ctx, passKey, stamp, f.c.PassTTL); err != nil {
		f.c.Log.Warn("greylist: cannot record passed client", "session", s.ID, "client", client, "err", err)
	} else {
		f.passed.Add(client, now.Add(passCacheTTL))
		if err := f.c.Store.Delete(ctx, key); err != nil {
			f.c.Log.Warn("greylist: cannot delete passed triplet", "session", s.ID, "client", client, "err", err)
		}
	}
	return pipeline.PassBecause(fmt.Sprintf("greylisting passed after %v (%s)", waited.Round(time.Second), client))
}

// renewEvery: a pass record older than this is renewed when the client
// is seen, so pass_ttl counts from the client's last mail, not its first
// (postgrey's auto-whitelist does the same); at most one store write per
// client per day.
const renewEvery = 24 * time.Hour

func (f *Filter) renewPass(ctx context.Context, s *pipeline.Session, key string, v []byte, now time.Time) {
	stamp, err := strconv.ParseInt(string(v), 10, 64)
	if err == nil && now.Sub(time.Unix(0, stamp)) < renewEvery {
		return
	}
	if err := f.c.Store.Set(ctx, key, []byte(strconv.FormatInt(now.UnixNano(), 10)), f.c.PassTTL); err != nil {
		f.c.Log.Warn("greylist: cannot renew passed client", "session", s.ID, "err", err)
	}
}

// clientKey is what stands for the client in the keys: its network, or
// "spf:<domain>" for a sender domain SPF vouched for.
func (f *Filter) clientKey(s *pipeline.Session, t *pipeline.Transaction) (string, bool) {
	if f.c.KeyOnSPFDomain {
		if r, ok := t.AuthResult("spf"); ok && r.Result == pipeline.ResultPass && r.Domain != "" {
			return "spf:" + strings.ToLower(r.Domain), true
		}
	}
	ip := s.ClientIP()
	bits := f.c.NetmaskV4
	if ip.Is6() {
		bits = f.c.NetmaskV6
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return "", false
	}
	return p.String(), true
}

// sender is the triplet's sender: the address in lower case, "<>" for
// bounces.
func sender(a pipeline.Address) string {
	if a.Null {
		return "<>"
	}
	return strings.ToLower(a.String())
}

// hash bounds the key size: addresses may be 256 octets each.
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:32]
}

var tempProblem = pipeline.Defer(451, [3]int{4, 3, 0}, "Temporary local problem, try again later", "")

// storeFailed applies the failure policy (SPEC §5).
func (f *Filter) storeFailed(s *pipeline.Session, err error) pipeline.Verdict {
	if f.c.OnError == OnErrorAccept {
		f.c.Log.Warn("greylist: state store unavailable, greylisting skipped", "session", s.ID, "err", err)
		return pipeline.PassBecause("state store unavailable, greylisting skipped: " + err.Error())
	}
	return tempProblem.WithReason("state store unavailable: " + err.Error())
}

// Ensure the filter implements the stage it runs at.
var _ pipeline.RcptFilter = (*Filter)(nil)
