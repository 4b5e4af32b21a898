package main

// Metrics wiring (SPEC §7): /metrics, /healthz and /readyz on
// metrics.address, fed by hooks on what every generation (reload.go)
// builds — the pipeline's decisions, the message outcomes, the upstream
// relay's session attempts — by a wrapper around the state store, and by
// the listening sockets (connections). Nothing here runs when
// metrics.address is empty: a nil *gatewayMetrics does nothing.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"mailgate/config"
	"mailgate/filters/dnsbl"
	"mailgate/filters/surbl"
	"mailgate/internal/dnslist"
	"mailgate/internal/metrics"
	"mailgate/internal/state"
	"mailgate/upstream"
)

// gatewayMetrics is the gateway's metrics and their HTTP endpoint.
type gatewayMetrics struct {
	m       *metrics.Metrics
	address string
	log     *slog.Logger
	cur     atomic.Pointer[generation] // the generation new sessions get

	ln  net.Listener
	srv *http.Server
}

// newGatewayMetrics returns the metrics of config c, nil if
// metrics.address is empty.
func newGatewayMetrics(c *config.Config, log *slog.Logger) *gatewayMetrics {
	if c.Metrics.Address == "" {
		return nil
	}
	names := make([]string, len(c.Listeners))
	for i, l := range c.Listeners {
		names[i] = l.Name
	}
	gm := &gatewayMetrics{
		m:       metrics.New(metrics.Options{Version: version, Listeners: names}),
		address: c.Metrics.Address,
		log:     log,
	}
	gm.m.WatchResolver(func() metrics.ResolverStats {
		if gen := gm.cur.Load(); gen != nil && gen.resolver != nil {
			return gen.resolver
		}
		return nil
	})
	gm.m.WatchDNSBL(func() metrics.DNSBLStats {
		gen := gm.cur.Load()
		if gen == nil {
			return nil
		}
		var lists dnsLists
		for _, e := range gen.gw.Pipeline.Filters() {
			switch f := e.Filter.(type) {
			case *dnsbl.Filter:
				lists.dnsbl = f
			case *surbl.Filter:
				lists.surbl = f
			}
		}
		if lists.dnsbl == nil && lists.surbl == nil {
			return nil
		}
		return lists
	})
	gm.m.WatchUpstream(&metrics.Probe{Status: func() []upstream.ServerStatus {
		if gen := gm.cur.Load(); gen != nil {
			return gen.relay.Status()
		}
		return nil
	}})
	return gm
}

// wrapStore counts the state store's failures.
func (gm *gatewayMetrics) wrapStore(s state.Store) state.Store {
	if gm == nil {
		return s
	}
	return gm.m.WrapStore(s)
}

// attach hooks the metrics to a generation before it serves sessions:
// at start, and at every configuration reload.
func (gm *gatewayMetrics) attach(gen *generation) {
	if gm == nil {
		return
	}
	p := gen.gw.Pipeline
	gm.m.AddFilters(p.Filters())
	p.Observe = gm.m.Observe
	gen.gw.OnMessage = gm.m.Message
	var servers []string
	for _, s := range gen.relay.Status() {
		servers = append(servers, s.Address)
	}
	gm.m.AddUpstreams(servers)
	gen.relay.OnOpen = gm.m.UpstreamOpened
	gm.cur.Store(gen)
}

// listener counts the connections accepted on l.
func (gm *gatewayMetrics) listener(l net.Listener, name string) net.Listener {
	if gm == nil {
		return l
	}
	return &countingListener{Listener: l, name: name, m: gm.m}
}

// listen binds the HTTP endpoint (before privileges are dropped, like the
// SMTP sockets).
func (gm *gatewayMetrics) listen() error {
	if gm == nil {
		return nil
	}
	ln, err := net.Listen("tcp", gm.address)
	if err != nil {
		return err
	}
	gm.ln = ln
	return nil
}

// serve answers HTTP on the bound endpoint until stop.
func (gm *gatewayMetrics) serve() {
	if gm == nil || gm.ln == nil {
		return
	}
	gm.srv = &http.Server{
		Handler:           gm.m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(gm.log.Handler(), slog.LevelWarn),
	}
	srv, ln := gm.srv, gm.ln
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			gm.log.Error("metrics endpoint stopped", "address", gm.address, "err", err)
		}
	}()
	gm.log.Info("listening", "listener", "metrics", "address", ln.Addr().String())
}

// draining makes /readyz answer 503 from now on.
func (gm *gatewayMetrics) draining() {
	if gm != nil {
		gm.m.SetDraining()
	}
}

// stop closes the HTTP endpoint.
func (gm *gatewayMetrics) stop() {
	if gm == nil {
		return
	}
	if gm.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = gm.srv.Shutdown(ctx)
		return
	}
	if gm.ln != nil {
		_ = gm.ln.Close()
	}
}

// countingListener counts accepted connections and the open ones.
type countingListener struct {
	net.Listener
	name string
	m    *metrics.Metrics
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.m.ConnOpened(l.name)
	return &countedConn{Conn: c, m: l.m}, nil
}

// countedConn is an accepted connection; closing it (the first time)
// counts it as ended.
type countedConn struct {
	net.Conn
	m      *metrics.Metrics
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.m.ConnClosed()
	}
	return c.Conn.Close()
}

// dnsLists reports the zone health of the client DNS lists and the URI
// lists (SURBL) together: both are DNS lists whose zones can stop
// answering.
type dnsLists struct {
	dnsbl *dnsbl.Filter
	surbl *surbl.Filter
}

func (l dnsLists) Stats() []dnslist.Stats {
	var out []dnslist.Stats
	if l.dnsbl != nil {
		out = append(out, l.dnsbl.Stats()...)
	}
	if l.surbl != nil {
		out = append(out, l.surbl.Stats()...)
	}
	return out
}
