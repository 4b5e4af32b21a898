// Package connlimit is the connection limits of SPEC §4 connect: total
// connections to this gateway, concurrent connections per client, and new
// connections per client per time window. A client over a limit gets
// "421 4.7.0 ..." and the connection is closed. It runs first in the
// pipeline, so a flood is turned away before any DNS or store work.
//
// A client is an IPv4 address or an IPv6 /64 (one host usually holds a
// whole /64). Allow-listed clients and relay networks (Config.Exempt) are
// exempt from the per-client limits, like Postfix's
// smtpd_client_event_limit_exceptions = $mynetworks; the total limit
// applies to everyone, as it protects the process.
//
// Concurrent connections are counted in this process. The rate counters
// are in the state store, so gateways sharing a Redis share each client's
// rate budget. When the store is unavailable the rate limit fails open:
// the connection proceeds (reason "rate store unavailable: ...", logged as
// a warning), since refusing every client because Redis is down would turn
// a store outage into a mail outage, and the concurrency limits still hold.
//
// Configuration (SPEC §3):
//
//	limits:
//	  max_connections: 2000          # Config.MaxConnections
//	  max_connections_per_ip: 20     # Config.MaxPerIP
//	  connection_rate_per_ip: 60/1m  # Config.Rate = 60, Config.RateWindow = 1m
package connlimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"mailgate/internal/state"
	"mailgate/pipeline"
)

// Config holds the limits; a zero limit is no limit.
type Config struct {
	// MaxConnections bounds the connections to this gateway process.
	MaxConnections int
	// MaxPerIP bounds the concurrent connections of one client.
	MaxPerIP int
	// Rate bounds the new connections of one client per RateWindow.
	Rate       int
	RateWindow time.Duration
	// Exempt reports the clients exempt from the per-client limits
	// (access.Filter.Allowed); nil exempts no one.
	Exempt func(ip netip.Addr, listener string) bool
	// Store keeps the rate counters; required with Rate.
	Store state.Store
	// Log receives store errors; nil discards them.
	Log *slog.Logger
	// Counters hold the open connections; nil gives the filter its own.
	// The gateway passes the same Counters to the filter of every
	// configuration generation, so a reload does not forget the
	// connections that are open.
	Counters *Counters
}

// Counters are the open connections, in total and per client.
type Counters struct {
	total atomic.Int64
	mu    sync.Mutex
	perIP map[netip.Prefix]int // entries deleted at zero
}

// NewCounters returns empty counters.
func NewCounters() *Counters { return &Counters{perIP: map[netip.Prefix]int{}} }

// storeTimeout bounds a rate lookup: a slow store must not hold the
// banner back for long, and a failed lookup lets the client in anyway.
const storeTimeout = 2 * time.Second

// Filter is the connection limits filter.
type Filter struct {
	c Config
	n *Counters
}

// New returns the filter.
func New(c Config) (*Filter, error) {
	switch {
	case c.MaxConnections < 0 || c.MaxPerIP < 0 || c.Rate < 0:
		return nil, errors.New("connlimit: limits must not be negative")
	case c.Rate > 0 && c.RateWindow <= 0:
		return nil, errors.New("connlimit: a connection rate needs a positive window")
	case c.Rate > 0 && c.Store == nil:
		return nil, errors.New("connlimit: a connection rate needs a state store")
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	n := c.Counters
	if n == nil {
		n = NewCounters()
	}
	return &Filter{c: c, n: n}, nil
}

func (*Filter) Name() string        { return "connlimit" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// Current returns the number of connections counted now.
func (f *Filter) Current() (total int) { return int(f.n.total.Load()) }

// noteKey marks a counted session; its value is a *counted.
type noteKey struct{}

// counted is what Connect added, so Disconnect takes back exactly that.
type counted struct {
	client netip.Prefix
	perIP  bool
}

func client(ip netip.Addr) netip.Prefix {
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func tooMany(text, reason string) pipeline.Verdict {
	v := pipeline.Defer(421, [3]int{4, 7, 0}, text, reason)
	v.Reply.Close = true
	return v
}

// Connect counts the connection and refuses it when over a limit. A
// refused connection stays counted until Disconnect: it is open until
// then.
func (f *Filter) Connect(ctx context.Context, s *pipeline.Session) pipeline.Verdict {
	n := f.n.total.Add(1)
	c := &counted{}
	s.SetNote(noteKey{}, c)
	if limit := f.c.MaxConnections; limit > 0 && n > int64(limit) {
		return tooMany("Too many connections, try again later",
			fmt.Sprintf("%d connections to this gateway, limit %d", n, limit))
	}
	ip := s.ClientIP()
	if !ip.IsValid() || f.c.Exempt != nil && f.c.Exempt(ip, s.Listener) {
		return pipeline.Pass()
	}
	c.client = client(ip)
	if f.c.MaxPerIP > 0 {
		c.perIP = true
		f.n.mu.Lock()
		f.n.perIP[c.client]++
		mine := f.n.perIP[c.client]
		f.n.mu.Unlock()
		if mine > f.c.MaxPerIP {
			return tooMany("Too many connections from your address, try again later",
				fmt.Sprintf("%d connections from %s, limit %d", mine, c.client, f.c.MaxPerIP))
		}
	}
	if f.c.Rate > 0 {
		return f.rate(ctx, c.client)
	}
	return pipeline.Pass()
}

// rate counts a new connection of the client in the store.
func (f *Filter) rate(ctx context.Context, p netip.Prefix) pipeline.Verdict {
	key := "conn:" + p.String()
	if p.Bits() == 32 {
		key = "conn:" + p.Addr().String()
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	n, err := f.c.Store.Incr(ctx, key, 1, f.c.RateWindow)
	if err != nil {
		f.c.Log.Warn("connection rate not checked: state store failed, letting the client in", "client", p, "err", err)
		return pipeline.PassBecause("rate store unavailable: " + err.Error())
	}
	if n > int64(f.c.Rate) {
		return tooMany("Connection rate limit exceeded, try again later",
			fmt.Sprintf("%d connections from %s within %s, limit %d", n, p, f.c.RateWindow, f.c.Rate))
	}
	return pipeline.Pass()
}

// Disconnect takes back what Connect counted for the session; a session
// Connect never saw (or one already ended) changes nothing.
func (f *Filter) Disconnect(s *pipeline.Session) {
	c, ok := s.Note(noteKey{}).(*counted)
	if !ok {
		return
	}
	s.SetNote(noteKey{}, nil)
	f.n.total.Add(-1)
	if !c.perIP {
		return
	}
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if f.n.perIP[c.client] <= 1 {
		delete(f.n.perIP, c.client)
	} else {
		f.n.perIP[c.client]--
	}
}
