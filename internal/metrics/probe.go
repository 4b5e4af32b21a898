package metrics

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"mailgate/config"
	"mailgate/upstream"
)

// Probe defaults.
const (
	DefaultProbeTTL     = 5 * time.Second
	DefaultProbeTimeout = 2 * time.Second
)

// Probe tells whether the upstream servers can take mail, for /readyz and
// upstream_up. A server is up when it answers a cheap probe — a TCP
// connect and a 220 greeting (TCP connect only for implicit TLS, whose
// greeting comes after the handshake), then QUIT — and the relay has not
// marked it down after a failed session (a TLS or EHLO failure the probe
// cannot see). Results are cached for TTL, so probes and scrapes cost the
// upstream at most one connection per TTL.
type Probe struct {
	// Status is the relay's view of its servers (upstream.Relay.Status).
	Status func() []upstream.ServerStatus
	// TTL is how long a result is reused (default 5s).
	TTL time.Duration
	// Timeout bounds the probe of one server (default 2s).
	Timeout time.Duration
	// Dial is net.Dialer.DialContext if nil (tests replace it).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu   sync.Mutex
	at   time.Time
	last []ServerHealth
}

// ServerHealth is one upstream server's probe result.
type ServerHealth struct {
	Address string
	Up      bool
	// Reason says why the server is down ("" when up). It may name
	// internal hosts: it is for the operator, never for SMTP clients.
	Reason string
}

func (p *Probe) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultProbeTimeout
}

func (p *Probe) ttl() time.Duration {
	if p.TTL > 0 {
		return p.TTL
	}
	return DefaultProbeTTL
}

// Check returns every server's health, probing them (in parallel) if the
// cached result is older than TTL.
func (p *Probe) Check(ctx context.Context) []ServerHealth {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil && time.Since(p.at) < p.ttl() {
		return p.last
	}
	servers := p.Status()
	out := make([]ServerHealth, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		out[i].Address = s.Address
		wg.Go(func() {
			if err := p.probe(ctx, s); err != nil {
				out[i].Reason = err.Error()
				return
			}
			if !s.Up {
				out[i].Reason = "marked down after a failed session until " +
					s.DownUntil.Format(time.RFC3339) + ": " + s.LastError
				return
			}
			out[i].Up = true
		})
	}
	wg.Wait()
	p.last, p.at = out, time.Now()
	return out
}

// probe connects to one server and, unless it speaks implicit TLS, reads
// its greeting.
func (p *Probe) probe(ctx context.Context, s upstream.ServerStatus) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	dial := p.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c, err := dial(ctx, "tcp", s.Address)
	if err != nil {
		return err
	}
	defer c.Close()
	if s.TLS == config.TLSImplicit {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no greeting: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", sanitize(line, 100))
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return nil
}

// sanitize keeps a server's text printable for the readiness report.
func sanitize(s string, max int) string {
	b := []byte(s)
	if len(b) > max {
		b = b[:max]
	}
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

// WatchUpstream exports upstream_up from p and makes /readyz depend on
// it.
func (m *Metrics) WatchUpstream(p *Probe) {
	m.probe.Store(p)
	m.reg.MustRegister(upstreamCollector{p})
}

// Ready reports whether the gateway can take mail: it is not draining and
// at least one upstream server is up. The error says why not.
func (m *Metrics) Ready(ctx context.Context) error {
	if m.draining.Load() {
		return fmt.Errorf("draining: shutting down")
	}
	p := m.probe.Load()
	if p == nil {
		return nil
	}
	health := p.Check(ctx)
	var reasons []string
	for _, h := range health {
		if h.Up {
			return nil
		}
		reasons = append(reasons, h.Address+": "+h.Reason)
	}
	return fmt.Errorf("no upstream server reachable: %s", strings.Join(reasons, "; "))
}
