package main

// Configuration reload (SIGHUP, SPEC §6).
//
// Everything a session uses — filters, lists, limits, the upstream relay,
// the TLS and AUTH settings — belongs to a generation. A reload builds a
// new generation from the re-read file and hands it to every listener
// (smtpd.Server.Update): connections accepted from then on use it, while
// sessions already open finish on the generation they started with. When
// the last of them ends, the old generation's idle upstream sessions are
// closed. Nothing is dropped, and a file that does not load changes
// nothing.
//
// What cannot change in a running process is kept as it was, with a
// warning that a restart is needed: the listening sockets (a listener's
// name, address, proxy_protocol, trusted_proxies, or listeners added or
// removed), the state store, the metrics address, logging and the user
// the gateway runs as.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailgate/config"
	"mailgate/internal/resolver"
	"mailgate/pipeline"
	"mailgate/smtpd"
	"mailgate/upstream"
)

// generation is one applied configuration and what its sessions share.
type generation struct {
	n        int
	gw       *pipeline.Gateway
	relay    *upstream.Relay
	resolver *resolver.Resolver // nil when no filter uses DNS
	tls      *tls.Config        // nil without tls.cert
	auth     smtpd.Authenticator
	log      *slog.Logger

	mu       sync.Mutex
	sessions int  // open sessions started on this generation
	retired  bool // a newer generation has replaced it
}

// newHandler is the smtpd handler factory of the generation: it counts the
// session so the generation knows when its last one ends.
func (gen *generation) newHandler(info smtpd.ConnInfo) smtpd.Handler {
	h := gen.gw.NewHandler(info)
	gen.mu.Lock()
	gen.sessions++
	gen.mu.Unlock()
	return &countedHandler{Handler: h, gen: gen}
}

func (gen *generation) sessionEnded() {
	gen.mu.Lock()
	gen.sessions--
	last := gen.retired && gen.sessions == 0
	gen.mu.Unlock()
	if last {
		gen.release()
	}
}

// retire marks the generation replaced; its resources go when its last
// session ends (now, if it has none).
func (gen *generation) retire() {
	gen.mu.Lock()
	gen.retired = true
	last := gen.sessions == 0
	gen.mu.Unlock()
	if last {
		gen.release()
	}
}

// release closes what no session of this generation will use again: the
// relay's idle upstream sessions, and any filter holding connections of
// its own (one that implements io.Closer).
func (gen *generation) release() {
	gen.relay.CloseIdle()
	for _, e := range gen.gw.Pipeline.Filters() {
		if c, ok := e.Filter.(io.Closer); ok {
			if err := c.Close(); err != nil {
				gen.log.Warn("closing a filter", "filter", e.Filter.Name(), "err", err)
			}
		}
	}
	gen.log.Debug("configuration released: its last session ended", "generation", gen.n)
}

// countedHandler is a session's handler that tells its generation when
// the session ends. It passes the optional interfaces smtpd looks for
// (Pregreeter) through.
type countedHandler struct {
	smtpd.Handler
	gen *generation
}

func (h *countedHandler) Close(stats smtpd.Stats) {
	defer h.gen.sessionEnded()
	h.Handler.Close(stats)
}

func (h *countedHandler) PregreetWait() time.Duration {
	if p, ok := h.Handler.(smtpd.Pregreeter); ok {
		return p.PregreetWait()
	}
	return 0
}

func (h *countedHandler) Pregreet(ctx context.Context) *smtpd.Reply {
	if p, ok := h.Handler.(smtpd.Pregreeter); ok {
		return p.Pregreet(ctx)
	}
	return nil
}

// certSource serves the current certificate to every TLS handshake,
// including those of sessions accepted before a reload: a renewed
// certificate is used at once.
type certSource struct {
	cert atomic.Pointer[tls.Certificate]
}

func (s *certSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no certificate configured")
}

// newGeneration builds what the sessions of config c share. prev and
// prevCfg (nil at start) are the running generation and its config: the
// DNS resolver and its cache are kept when dns is unchanged. Every file the
// config names (certificate, key, CA files, users file) is read anew. The
// certificate is returned, not installed: the caller installs it only if
// the whole reload succeeds.
func (g *gateway) newGeneration(c *config.Config, prev *generation, prevCfg *config.Config) (*generation, *tls.Certificate, error) {
	relayClient, err := upstream.New(c.Upstream, c.Hostname, g.log)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: %w", err)
	}
	gen := &generation{relay: relayClient, log: g.log}
	if prev != nil {
		gen.n = prev.n + 1
	}
	if g.counts == nil {
		g.counts = newCounts()
	}
	d := deps{store: g.store, log: g.log, counts: g.counts}
	if usesDNS(c) {
		if prev != nil && prev.resolver != nil && reflect.DeepEqual(prevCfg.DNS, c.DNS) {
			d.resolver = prev.resolver
		} else if d.resolver, err = resolver.New(resolver.Config{Servers: c.DNS.Servers, Timeout: c.DNS.Timeout.D(),
			CacheSize: c.DNS.CacheSize}); err != nil {
			return nil, nil, fmt.Errorf("dns: %w", err)
		}
	}
	gen.resolver = d.resolver
	p, err := buildPipeline(c, d)
	if err != nil {
		return nil, nil, err
	}
	gen.gw = &pipeline.Gateway{
		Hostname:              c.Hostname,
		Pipeline:              p,
		Upstream:              relayClient,
		Log:                   g.log,
		RejectBareLineEndings: c.Limits.BareLineEndings == "reject",
	}
	if pg := c.Filters.Pregreet; pg != nil {
		gen.gw.PregreetWait = pg.Wait.D()
	}

	var cert *tls.Certificate
	if c.TLS.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("tls: %w", err)
		}
		cert = &pair
		gen.tls = &tls.Config{GetCertificate: g.cert.get, MinVersion: c.TLS.MinVersionValue()}
	}
	if c.Auth.Users != nil { // loaded and checked by validation
		gen.auth = c.Auth.Users
	}
	return gen, cert, nil
}

// listenerConfig is the smtpd configuration of listener l under gen.
func (gen *generation) listenerConfig(c *config.Config, l config.Listener) smtpd.Config {
	return smtpd.Config{
		Name:            l.Name,
		Hostname:        c.Hostname,
		TLSMode:         tlsMode(l.TLS),
		TLSConfig:       gen.tls,
		AuthMode:        authMode(l.Auth),
		AuthMechanisms:  c.Auth.Mechanisms,
		Authenticator:   gen.auth,
		MaxAuthFailures: c.Auth.MaxFailures,
		MaxLineLength:   c.Limits.MaxLineLength,
		MaxCommands:     c.Limits.MaxCommands,
		MaxErrors:       c.Limits.MaxErrors,
		MaxMessageSize:  int64(c.Limits.MaxMessageSize),
		SpoolThreshold:  int64(c.Limits.SpoolThreshold),
		GreetingTimeout: c.Limits.Timeouts.Greeting.D(),
		CommandTimeout:  c.Limits.Timeouts.Command.D(),
		DataTimeout:     c.Limits.Timeouts.Data.D(),
	}
}

// reload re-reads the configuration file and applies it (SIGHUP). A file
// that does not load, or a config that cannot be built, is refused with
// an ERROR naming every problem, and the running configuration stays.
func (g *gateway) reload() {
	g.mu.Lock()
	defer g.mu.Unlock()
	path := g.cfg.Path
	if path == "" {
		g.log.Warn("SIGHUP received: this gateway runs on the embedded configuration, there is no file to reload")
		return
	}
	g.log.Info("SIGHUP received: reloading the configuration", "file", path)
	c, warnings, err := config.Load(path)
	for _, w := range warnings {
		g.log.Warn("config: " + w)
	}
	if err != nil {
		g.refuse(path, err)
		return
	}
	restart := keepRunning(g.cfg, c)
	if len(restart) > 0 {
		// What is kept may not fit the rest of the new file (a kept TLS
		// listener needs tls.cert): check the combination again.
		if _, err := c.Validate(); err != nil {
			g.refuse(path, fmt.Errorf("%w\n(with the settings that need a restart kept as they run: %s)", err,
				strings.Join(restart, ", ")))
			return
		}
	}
	gen, cert, err := g.newGeneration(c, g.gen, g.cfg)
	if err != nil {
		g.refuse(path, err)
		return
	}

	if cert != nil {
		g.cert.cert.Store(cert)
	}
	g.metrics.attach(gen) // before any session uses it
	for i, srv := range g.servers {
		srv.Update(gen.listenerConfig(c, c.Listeners[i]), gen.newHandler)
	}
	old := g.gen
	g.gen, g.cfg = gen, c
	old.retire()

	for _, key := range restart {
		g.log.Warn("config reload: "+key+" changed, which needs a restart to apply; running with the previous value",
			"key", key)
	}
	g.log.Info("config reloaded", summary(c, gen, cert, restart)...)
}

// refuse logs a reload that is not applied.
func (g *gateway) refuse(path string, err error) {
	g.log.Error("config reload refused: the running configuration is kept", "file", path,
		"errors", strings.Split(err.Error(), "\n"))
}

// keepRunning puts back into c what a running process cannot change and
// returns the config keys that differed (they need a restart).
func keepRunning(running, c *config.Config) []string {
	var keys []string
	if !sameSockets(running.Listeners, c.Listeners) {
		// The listening sockets stay as they are, and with them the
		// whole listeners section, so that what runs is one consistent
		// config.
		keys = append(keys, "listeners")
		c.Listeners = slices.Clone(running.Listeners)
	}
	if running.State.Store != c.State.Store {
		keys = append(keys, "state.store")
		c.State = running.State
	}
	if !reflect.DeepEqual(running.Metrics, c.Metrics) {
		keys = append(keys, "metrics")
		c.Metrics = running.Metrics
	}
	if running.Log != c.Log {
		keys = append(keys, "log")
		c.Log = running.Log
	}
	if running.User != c.User {
		keys = append(keys, "user")
		c.User = running.User
	}
	return keys
}

// sameSockets reports whether two listener lists open the same sockets
// the same way: same names, addresses and PROXY protocol settings, in the
// same order. Their TLS, AUTH and access settings may differ: those are
// applied live.
func sameSockets(a, b []config.Listener) bool {
	return slices.EqualFunc(a, b, func(x, y config.Listener) bool {
		return x.Name == y.Name && x.Address == y.Address && x.ProxyProtocol == y.ProxyProtocol &&
			slices.Equal(x.TrustedProxies, y.TrustedProxies)
	})
}

// summary is the "config reloaded" log line's attributes.
func summary(c *config.Config, gen *generation, cert *tls.Certificate, restart []string) []any {
	var filters []string
	for _, e := range gen.gw.Pipeline.Filters() {
		name := e.Filter.Name()
		if e.Mode == pipeline.Shadow {
			name += " (shadow)"
		}
		filters = append(filters, name)
	}
	var servers []string
	for _, s := range c.Upstream.Servers {
		servers = append(servers, s.Address)
	}
	attrs := []any{"file", c.Path, "generation", gen.n, "filters", filters, "upstream", servers,
		"domains", c.Domains}
	if cert != nil {
		leaf := cert.Leaf
		if leaf == nil && len(cert.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		if leaf != nil {
			attrs = append(attrs, "tls_cert_serial", leaf.SerialNumber.Text(16),
				"tls_cert_expires", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if len(restart) > 0 {
		attrs = append(attrs, "restart_needed", restart)
	}
	return attrs
}
