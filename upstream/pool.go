package upstream

import (
	"context"
	"time"
)

// Idle upstream sessions are kept for reuse by the next client session,
// as Postfix's SMTP client caches connections: a proxy that opened a new
// upstream connection (connect, greeting, EHLO, maybe TLS) for every
// client would spend most of its time there.
const (
	// DefaultMaxIdle is how many idle sessions are kept.
	DefaultMaxIdle = 32
	// DefaultIdleTimeout is how long an idle session is kept: well below
	// the idle timeouts of common MTAs (Postfix 300 s, Exchange 600 s).
	DefaultIdleTimeout = 30 * time.Second
)

type idleConn struct {
	c     *Conn
	since time.Time
}

// Get returns an idle session from the pool if one is fresh enough, else
// opens a new one (Open). A reused session may turn out to have been
// closed by the upstream: see Conn.Reused.
func (r *Relay) Get(ctx context.Context) (*Conn, error) {
	now := time.Now()
	r.mu.Lock()
	var stale []*Conn
	var c *Conn
	for len(r.idle) > 0 {
		last := r.idle[len(r.idle)-1]
		r.idle = r.idle[:len(r.idle)-1]
		if now.Sub(last.since) < r.idleTimeout && !last.c.Broken() {
			c = last.c
			break
		}
		stale = append(stale, last.c)
	}
	r.mu.Unlock()
	for _, s := range stale {
		go s.Close()
	}
	if c != nil {
		c.reused = true
		return c, nil
	}
	return r.Open(ctx)
}

// Release gives back a session that has no transaction open (after a
// delivered message or a successful RSET). A broken session is closed.
func (r *Relay) Release(c *Conn) {
	if c == nil {
		return
	}
	if c.Broken() || r.maxIdle <= 0 {
		_ = c.Close()
		return
	}
	now := time.Now()
	r.mu.Lock()
	// Drop the oldest sessions first: they are the likeliest to have been
	// timed out by the upstream.
	var evict []*Conn
	for len(r.idle) > 0 && (len(r.idle) >= r.maxIdle || now.Sub(r.idle[0].since) >= r.idleTimeout) {
		evict = append(evict, r.idle[0].c)
		r.idle = r.idle[1:]
	}
	r.idle = append(r.idle, idleConn{c: c, since: now})
	r.mu.Unlock()
	for _, e := range evict {
		go e.Close()
	}
}

// CloseIdle ends every idle session (at shutdown).
func (r *Relay) CloseIdle() {
	r.mu.Lock()
	idle := r.idle
	r.idle = nil
	r.mu.Unlock()
	for _, i := range idle {
		_ = i.c.Close()
	}
}

// Idle returns the number of idle sessions kept.
func (r *Relay) Idle() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.idle)
}

// Reused reports whether the session came from the idle pool; a network
// error on its first command then only means the upstream had closed it.
func (c *Conn) Reused() bool { return c.reused }
