package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/redis/go-redis/v9"

	"mailgate/config"
	"mailgate/filters/access"
	"mailgate/filters/authlimit"
	"mailgate/filters/barring"
	"mailgate/filters/connlimit"
	"mailgate/filters/dnsbl"
	"mailgate/filters/greylist"
	"mailgate/filters/helo"
	"mailgate/filters/limits"
	"mailgate/filters/loop"
	"mailgate/filters/pregreet"
	"mailgate/filters/rates"
	"mailgate/filters/rdns"
	"mailgate/filters/relay"
	"mailgate/filters/relayexploit"
	"mailgate/filters/scoring"
	"mailgate/filters/senders"
	"mailgate/filters/size"
	"mailgate/filters/spf"
	"mailgate/internal/resolver"
	"mailgate/internal/state"
	"mailgate/pipeline"
	"mailgate/smtpd"
)

// deps are the shared services the filters use.
type deps struct {
	resolver *resolver.Resolver
	store    state.Store
	log      *slog.Logger
	// counts are kept across configuration reloads (open connections,
	// recent AUTH failures); nil: fresh ones.
	counts *counts
}

// counts are the in-process counters every configuration generation
// shares.
type counts struct {
	conns        *connlimit.Counters
	authFailures *authlimit.Failures
}

func newCounts() *counts {
	return &counts{conns: connlimit.NewCounters(), authFailures: authlimit.NewFailures()}
}

func prefixes(list []config.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(list))
	for i, p := range list {
		out[i] = p.Prefix
	}
	return out
}

func mode(m config.FilterMode) pipeline.Mode {
	if m == config.ModeShadow {
		return pipeline.Shadow
	}
	return pipeline.Enforce
}

// buildPipeline turns the config into the ordered filter list: connection
// limits first (before any other work), then the cheap and decisive
// checks, the DNS-based ones, and the stateful ones last.
func buildPipeline(c *config.Config, d deps) (*pipeline.Pipeline, error) {
	var entries []pipeline.Entry
	var errs []error
	add := func(f pipeline.Filter, m config.FilterMode, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		entries = append(entries, pipeline.Entry{Filter: f, Mode: mode(m)})
	}
	fc := &c.Filters
	relayNets := prefixes(c.Relay.Networks)
	if d.counts == nil {
		d.counts = newCounts()
	}

	acc := access.Config{Trusted: relayNets, Listeners: map[string]access.Rules{}}
	accessMode := config.ModeEnforce
	if fc.Access != nil {
		acc.Global = access.Rules{Allow: prefixes(fc.Access.Allow), Deny: prefixes(fc.Access.Deny)}
		accessMode = fc.Access.Mode
	}
	for _, l := range c.Listeners {
		acc.Listeners[l.Name] = access.Rules{Allow: prefixes(l.Access.Allow), Deny: prefixes(l.Access.Deny)}
	}
	accessFilter, err := access.New(acc)
	if err != nil {
		return nil, err
	}
	l := c.Limits
	cl, err := connlimit.New(connlimit.Config{
		MaxConnections: l.MaxConnections,
		MaxPerIP:       l.MaxConnectionsPerIP,
		Rate:           l.ConnectionRatePerIP.N,
		RateWindow:     l.ConnectionRatePerIP.Per.D(),
		Exempt:         accessFilter.Allowed,
		Store:          d.store,
		Log:            d.log,
		Counters:       d.counts.conns,
	})
	add(cl, config.ModeEnforce, err)
	add(accessFilter, accessMode, nil)

	if r := fc.RDNS; r != nil {
		f, err := rdns.New(rdns.Config{RequirePTR: *r.RequirePTR, RequireFCRDNS: r.RequireFCRDNS,
			Action: r.Action, Score: r.Score, OnDNSError: r.OnDNSError, Resolver: d.resolver})
		add(f, r.Mode, err)
	}
	if b := fc.DNSBL; b != nil {
		f, err := dnsbl.New(dnsbl.Config{Zones: dnsblZones(b.Zones), AllowZones: dnsblZones(b.AllowZones),
			Threshold: b.Threshold, AllowThreshold: b.AllowThreshold, RejectAt: b.RejectAt, Action: b.Action,
			Resolver: d.resolver})
		add(f, b.Mode, err)
	}
	if p := fc.Pregreet; p != nil {
		f, err := pregreet.New(pregreet.Config{Action: p.Action, Score: p.Score})
		add(f, p.Mode, err)
	}
	if h := fc.Helo; h != nil {
		f, err := helo.New(helo.Config{RequireFQDN: *h.RequireFQDN, RejectOwnName: *h.RejectOwnName,
			RejectIPLiteralMismatch: *h.RejectIPLiteralMismatch, OwnNames: append([]string{c.Hostname}, c.Domains...),
			Action: h.Action, Score: h.Score})
		add(f, h.Mode, err)
	}
	add(authlimit.New(authlimit.Config{MaxFailures: c.Auth.MaxFailuresPerIP, Window: c.Auth.FailureWindow.D(),
		Failures: d.counts.authFailures}),
		config.ModeEnforce, nil)
	add(limits.New(limits.Config{MaxRecipients: l.MaxRecipients, MaxMessagesPerSession: l.MaxMessagesPerSession}),
		config.ModeEnforce, nil)
	add(size.New(int64(l.MaxMessageSize)), config.ModeEnforce, nil)
	add(relayexploit.New(), config.ModeEnforce, nil)
	add(relay.New(relay.Config{Domains: c.Domains, Networks: relayNets,
		Authenticated: c.Relay.Authenticated == nil || *c.Relay.Authenticated}), config.ModeEnforce, nil)

	// Sender lists come before the checks they can whitelist past.
	sendersMode := config.ModeEnforce
	sc := senders.Config{NullSender: fc.NullSender}
	if s := fc.Senders; s != nil {
		sc.Allow, sc.Deny, sendersMode = s.Allow, s.Deny, s.Mode
	}
	if fc.Senders != nil || fc.NullSender != "accept" {
		f, err := senders.New(sc)
		add(f, sendersMode, err)
	}
	if b := fc.Barring; b != nil {
		f, err := barring.New(barring.Config{Senders: b.Senders, Recipients: b.Recipients})
		add(f, b.Mode, err)
	}
	if r := fc.Rates; r != nil {
		f, err := rates.New(rates.Config{PerSender: rateLimits(r.PerSender), PerClientIP: rateLimits(r.PerClientIP),
			Store: d.store, Log: d.log})
		add(f, r.Mode, err)
	}
	if s := fc.SPF; s != nil {
		f, err := spf.New(spf.Config{Fail: s.Fail, SoftFail: s.SoftFail, Neutral: s.Neutral, None: s.None,
			TempError: s.TempError, PermError: s.PermError, TagScore: s.TagScore, Timeout: s.Timeout.D(),
			Hostname: c.Hostname, Resolver: d.resolver})
		add(f, s.Mode, err)
	}
	if g := fc.Greylist; g != nil {
		f, err := greylist.New(greylist.Config{Delay: g.Delay.D(), Expire: g.Expire.D(), PassTTL: g.PassTTL.D(),
			NetmaskV4: g.NetmaskV4, NetmaskV6: g.NetmaskV6, KeyOnSPFDomain: g.KeyOnSPFDomain, OnError: g.OnError,
			Store: d.store, Log: d.log})
		add(f, g.Mode, err)
	}
	add(loop.New(l.MaxReceivedHeaders), config.ModeEnforce, nil)
	content, err := contentFilters(c, d)
	if err != nil {
		errs = append(errs, err)
	}
	for _, w := range content {
		add(w.Filter, w.Mode, nil)
	}
	// Scoring comes after every filter that scores, at RCPT and DATA.
	if s := fc.Scoring; s != nil {
		add(scoring.New(scoring.Config{Reject: s.Reject, Tag: s.Tag}), config.ModeEnforce, nil)
	}
	// Signing last: it signs the message as it will go upstream.
	if w, err := wireDKIMSign(c, d); err != nil || w.Filter != nil {
		add(w.Filter, w.Mode, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return pipeline.New(entries...), nil
}

func dnsblZones(list []config.DNSBLZone) []dnsbl.Zone {
	out := make([]dnsbl.Zone, len(list))
	for i, z := range list {
		out[i] = dnsbl.Zone{Zone: z.Zone, Weight: z.Weight, Codes: z.Codes, Mask: uint32(z.Mask)}
	}
	return out
}

func rateLimits(l config.RateLimits) rates.Limits {
	return rates.Limits{
		Messages:   rates.Rate{N: l.Messages.N, Per: l.Messages.Per.D()},
		Recipients: rates.Rate{N: l.Recipients.N, Per: l.Recipients.Per.D()},
		MaxSize:    int64(l.MaxSize),
	}
}

// usesDNS reports whether a filter looks anything up.
func usesDNS(c *config.Config) bool {
	f := c.Filters
	return f.RDNS != nil || f.DNSBL != nil || f.SPF != nil || f.DKIM != nil || f.DMARC != nil || f.SURBL != nil
}

// gateway is everything `run` starts.
type gateway struct {
	servers   []*smtpd.Server
	addresses []string
	store     state.Store // kept across reloads
	counts    *counts     // kept across reloads

	log  *slog.Logger
	cert *certSource // the TLS certificate, swapped by reloads

	mu  sync.Mutex     // serialises reloads
	cfg *config.Config // the configuration applied
	gen *generation    // what new sessions get (reload.go)

	metrics *gatewayMetrics // nil when metrics.address is empty (metrics.go)
}

// close releases what build opened.
func (g *gateway) close() {
	if g.store != nil {
		_ = g.store.Close()
	}
}

// build wires a gateway from a validated config.
func build(c *config.Config, log *slog.Logger) (*gateway, error) {
	redis.SetLogger(state.RedisLogger{Log: log})
	store, err := state.Open(c.State.Store)
	if err != nil {
		return nil, fmt.Errorf("state.store: %w", err)
	}
	mx := newGatewayMetrics(c, log)
	store = mx.wrapStore(store)
	g := &gateway{store: store, log: log, cert: &certSource{}, cfg: c, metrics: mx}
	gen, cert, err := g.newGeneration(c, nil, nil)
	if err != nil {
		g.close()
		return nil, err
	}
	if cert != nil {
		g.cert.cert.Store(cert)
	}
	g.gen = gen
	g.metrics.attach(gen)
	for _, l := range c.Listeners {
		sc := gen.listenerConfig(c, l)
		sc.Proxy = proxyConfig(l) // fixed for the socket's life: Server.Update keeps it
		g.servers = append(g.servers, smtpd.NewServer(sc, gen.newHandler, log))
		g.addresses = append(g.addresses, l.Address)
	}
	return g, nil
}

func tlsMode(m config.TLSMode) smtpd.TLSMode {
	switch m {
	case config.TLSStartTLS:
		return smtpd.TLSStartTLS
	case config.TLSImplicit:
		return smtpd.TLSImplicit
	}
	return smtpd.TLSNone
}

func authMode(m config.AuthMode) smtpd.AuthMode {
	switch m {
	case config.AuthOptional:
		return smtpd.AuthOptional
	case config.AuthRequired:
		return smtpd.AuthRequired
	}
	return smtpd.AuthOff
}
