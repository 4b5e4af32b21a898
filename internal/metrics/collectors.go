package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailgate/internal/dnslist"
	"mailgate/internal/resolver"
)

// ResolverStats is what the DNS collector reads: *resolver.Resolver.
type ResolverStats interface{ Stats() resolver.Stats }

// DNSBLStats is what the DNSBL collector reads: *dnsbl.Filter (and
// *surbl.Filter: every DNS list's zones).
type DNSBLStats interface{ Stats() []dnslist.Stats }

// WatchResolver exports the resolver's cache counters at each scrape.
// current returns the resolver in use (it may change at a configuration
// reload), nil if there is none.
func (m *Metrics) WatchResolver(current func() ResolverStats) {
	m.reg.MustRegister(resolverCollector{current})
}

// WatchDNSBL exports the DNSBL zones' counters at each scrape. current
// returns the DNSBL filter in use, nil if there is none.
func (m *Metrics) WatchDNSBL(current func() DNSBLStats) {
	m.reg.MustRegister(dnsblCollector{current})
}

var (
	descDNSHits = prometheus.NewDesc(namespace+"_dns_cache_hits_total",
		"DNS lookups answered from the resolver's cache.", nil, nil)
	descDNSMisses = prometheus.NewDesc(namespace+"_dns_cache_misses_total",
		"DNS lookups that had to query a server.", nil, nil)
	descDNSErrors = prometheus.NewDesc(namespace+"_dns_errors_total",
		"DNS queries that failed (timeout, SERVFAIL, network error).", nil, nil)
	descZoneQueries = prometheus.NewDesc(namespace+"_dnsbl_zone_queries_total",
		"DNSBL/DNSWL queries by zone and result (listed, not_listed, error).", []string{"zone", "result"}, nil)
	descZoneLatency = prometheus.NewDesc(namespace+"_dnsbl_zone_query_duration_seconds",
		"Time DNSBL/DNSWL queries took, by zone.", []string{"zone"}, nil)
	descUpstreamUp = prometheus.NewDesc(namespace+"_upstream_up",
		"1 if the upstream server answers (probe) and is not marked down after a failure, else 0.", []string{"server"}, nil)
)

type resolverCollector struct{ current func() ResolverStats }

func (c resolverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDNSHits
	ch <- descDNSMisses
	ch <- descDNSErrors
}

func (c resolverCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.current()
	if r == nil {
		return
	}
	st := r.Stats()
	ch <- prometheus.MustNewConstMetric(descDNSHits, prometheus.CounterValue, float64(st.Hits))
	ch <- prometheus.MustNewConstMetric(descDNSMisses, prometheus.CounterValue, float64(st.Misses))
	ch <- prometheus.MustNewConstMetric(descDNSErrors, prometheus.CounterValue, float64(st.Errors))
}

type dnsblCollector struct{ current func() DNSBLStats }

func (c dnsblCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descZoneQueries
	ch <- descZoneLatency
}

func (c dnsblCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.current()
	if f == nil {
		return
	}
	for _, z := range f.Stats() {
		notListed := z.Queries - z.Listed - z.Errors
		if z.Listed+z.Errors > z.Queries {
			notListed = 0
		}
		ch <- prometheus.MustNewConstMetric(descZoneQueries, prometheus.CounterValue, float64(z.Listed), z.Zone, "listed")
		ch <- prometheus.MustNewConstMetric(descZoneQueries, prometheus.CounterValue, float64(notListed), z.Zone, "not_listed")
		ch <- prometheus.MustNewConstMetric(descZoneQueries, prometheus.CounterValue, float64(z.Errors), z.Zone, "error")
		ch <- prometheus.MustNewConstSummary(descZoneLatency, z.Queries, z.LatencySum.Seconds(), nil, z.Zone)
	}
}

// upstreamCollector reports upstream_up from the readiness probe (cached:
// a scrape probes at most once per the probe's TTL).
type upstreamCollector struct{ p *Probe }

func (c upstreamCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descUpstreamUp }

func (c upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.p.timeout()+time.Second)
	defer cancel()
	for _, s := range c.p.Check(ctx) {
		v := 0.0
		if s.Up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descUpstreamUp, prometheus.GaugeValue, v, s.Address)
	}
}
