// Package rates is the seed's "client control rules" (SPEC §4): per
// sender address and per client IP, limits on messages and recipients per
// time window (452, try later) and on message size (552). It runs for
// authenticated users too: slowing a compromised account's outbound flood
// is its main use.
//
// Counters live in the state.Store (fixed windows), so gateways sharing
// one Redis share one budget.
//
// YAML (filters.rates):
//
//	per_sender:    {messages: 200/1h, recipients: 1000/1h, max_size: 10MB}
//	per_client_ip: {messages: 500/1h, recipients: 2000/1h, max_size: 25MB}
//
// Every key is optional; an absent one is no limit. Like Postfix's
// smtpd_client_message_rate_limit, a message is counted at MAIL FROM,
// whether or not it is delivered in the end. The null sender has no
// per-sender limits (bounces come from anywhere); its client IP is still
// counted. IPv6 clients are counted per /64.
//
// An unavailable store fails open, with a warning: rate limits are a brake,
// not a reason to stop the mail.
package rates

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"mailgate/internal/state"
	"mailgate/pipeline"
)

// Rate is N per window Per ("200/1h"); N == 0 is no limit.
type Rate struct {
	N   int
	Per time.Duration
}

// Limits are one client control rule; zero fields are no limit.
type Limits struct {
	Messages, Recipients Rate
	MaxSize              int64 // octets
}

// Config is the rate policy.
type Config struct {
	PerSender, PerClientIP Limits
	Store                  state.Store
	// Log receives the fail-open warnings; nil discards them.
	Log *slog.Logger
}

// storeTimeout bounds the store calls of one command, whatever the
// backend's own timeouts.
const storeTimeout = 3 * time.Second

// maxKeyAddress is the longest sender kept readable in a key; longer ones
// are hashed (addresses may be 256 octets).
const maxKeyAddress = 64

// Filter is the rate limit filter.
type Filter struct {
	c Config
}

// New validates the config and returns the filter.
func New(c Config) (*Filter, error) {
	if c.Store == nil {
		return nil, errors.New("rates: no state store")
	}
	for _, l := range []struct {
		name string
		l    Limits
	}{{"per_sender", c.PerSender}, {"per_client_ip", c.PerClientIP}} {
		for _, r := range []Rate{l.l.Messages, l.l.Recipients} {
			if r.N < 0 || r.N > 0 && r.Per <= 0 {
				return nil, fmt.Errorf("rates: %s: bad rate %d/%v: want N/window, e.g. 200/1h", l.name, r.N, r.Per)
			}
		}
		if l.l.MaxSize < 0 {
			return nil, fmt.Errorf("rates: %s: negative max_size", l.name)
		}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Filter{c: c}, nil
}

func (*Filter) Name() string        { return "rates" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

var (
	tooManyMessages = pipeline.Defer(452, [3]int{4, 7, 1}, "Too many messages, slow down and try again later", "")
	tooManyRcpts    = pipeline.Defer(452, [3]int{4, 5, 3}, "Too many recipients, slow down and try again later", "")
	tooBig          = pipeline.Refuse(552, [3]int{5, 3, 4}, "Message size exceeds the limit for this sender", "")
)

// Mail refuses a declared SIZE over the limit, then counts the message.
func (f *Filter) Mail(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction) pipeline.Verdict {
	if v, over := f.checkSize(t, t.Size, "declared SIZE"); over {
		return v
	}
	return f.count(ctx, s, t, "msg", func(l Limits) Rate { return l.Messages }, tooManyMessages)
}

// Rcpt counts the recipient.
func (f *Filter) Rcpt(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction, _ pipeline.Address) pipeline.Verdict {
	return f.count(ctx, s, t, "rcpt", func(l Limits) Rate { return l.Recipients }, tooManyRcpts)
}

// Data refuses a message over the size limit (a client may declare no
// SIZE, or a false one).
func (f *Filter) Data(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	v, _ := f.checkSize(t, m.Size(), "message size")
	return v
}

// checkSize compares size with the smaller of the limits that apply.
func (f *Filter) checkSize(t *pipeline.Transaction, size int64, what string) (pipeline.Verdict, bool) {
	limit := f.c.PerClientIP.MaxSize
	if s := f.c.PerSender.MaxSize; !t.From.Null && s > 0 && (limit == 0 || s < limit) {
		limit = s
	}
	if limit > 0 && size > limit {
		return tooBig.WithReason(fmt.Sprintf("%s %d over the limit of %d", what, size, limit)), true
	}
	return pipeline.Pass(), false
}

// count adds one to the sender's and the client's counters of kind and
// returns over if either is past its rate.
func (f *Filter) count(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction, kind string, rate func(Limits) Rate, over pipeline.Verdict) pipeline.Verdict {
	type counter struct {
		who, key string
		r        Rate
	}
	var counters []counter
	if ip := s.ClientIP(); ip.IsValid() {
		k := ip.String()
		if ip.Is6() {
			p, _ := ip.Prefix(64) // one host usually has a whole /64
			k = p.String()
		}
		counters = append(counters, counter{"client " + k, "rate:" + kind + ":ip:" + k, rate(f.c.PerClientIP)})
	}
	if !t.From.Null {
		addr := strings.ToLower(t.From.String())
		key := "rate:" + kind + ":s:" + addr
		if len(addr) > maxKeyAddress {
			key = "rate:" + kind + ":sh:" + hash(addr)
		}
		counters = append(counters, counter{"sender " + addr, key, rate(f.c.PerSender)})
	}

	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	for _, c := range counters {
		if c.r.N == 0 {
			continue
		}
		n, err := f.c.Store.Incr(ctx, c.key, 1, c.r.Per)
		if err != nil {
			f.c.Log.Warn("rates: state store unavailable, rate limits not applied", "session", s.ID, "err", err)
			return pipeline.PassBecause("state store unavailable, rate limits not applied: " + err.Error())
		}
		if n > int64(c.r.N) {
			return over.WithReason(fmt.Sprintf("%s: %d %s within %v, limit %d", c.who, n, kind, c.r.Per, c.r.N))
		}
	}
	return pipeline.Pass()
}

// hash bounds the key size.
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:32]
}

var (
	_ pipeline.MailFilter = (*Filter)(nil)
	_ pipeline.RcptFilter = (*Filter)(nil)
	_ pipeline.DataFilter = (*Filter)(nil)
)
