// Package metrics is the gateway's Prometheus instrumentation (SPEC §7):
// connections, messages by outcome, refusals by filter, filter latencies,
// DNS cache and DNSBL zone health, upstream health and state store errors,
// served with /healthz and /readyz on metrics.address.
//
// The hot paths only touch label children created up front (a filter's
// histograms per stage, one counter per message outcome, per listener):
// a message costs a few atomic adds, no label formatting. What other
// packages already count (the resolver's cache, the DNSBL zones, the
// upstream servers' health) is read by collectors at scrape time.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"mailgate/pipeline"
)

const namespace = "mailgate"

// Message outcomes: the label values of messages_total, one for each
// outcome the message log line names (pipeline/session.go).
var outcomes = [...]struct{ log, label string }{
	{"delivered", "delivered"},
	{"rejected at mail", "rejected_mail"},
	{"rejected at rcpt", "rejected_rcpt"},
	{"rejected at data", "rejected_data"},
	{"tempfailed", "tempfailed"},
	{"upstream refused", "upstream_refused"},
	{"aborted", "aborted"},
}

// otherOutcome counts an outcome this package does not know yet.
const otherOutcome = len(outcomes)

const nStages = int(pipeline.StageData) + 1

// filterDurationBuckets span a cached lookup (100 µs) to a slow DNS
// answer or scan (10 s).
var filterDurationBuckets = []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 2.5, 5, 10}

// Options describe what the metrics are about, so that label children
// can be created up front.
type Options struct {
	// Version goes into mailgate_build_info.
	Version string
	// Listeners are the listener names.
	Listeners []string
	// Filters are the pipeline's filters, in order.
	Filters []pipeline.Entry
	// Upstreams are the upstream server addresses.
	Upstreams []string
}

// Metrics holds the gateway's metrics. Its methods are safe for
// concurrent use; a nil *Metrics is not.
type Metrics struct {
	reg *prometheus.Registry

	connsCurrent prometheus.Gauge
	connsTotal   *prometheus.CounterVec
	connsRefused *prometheus.CounterVec
	messages     *prometheus.CounterVec
	rejections   *prometheus.CounterVec
	shadow       *prometheus.CounterVec
	filterDur    *prometheus.HistogramVec
	bytes        prometheus.Counter
	storeErrors  *prometheus.CounterVec
	upLatency    *prometheus.HistogramVec
	upFailures   *prometheus.CounterVec

	// Children created up front. The maps are copied on write (AddFilters,
	// AddUpstreams: at start and at a configuration reload) so that the
	// hot paths read them without a lock.
	listeners map[string]prometheus.Counter
	outcome   [otherOutcome + 1]prometheus.Counter
	filters   atomic.Pointer[map[string]*filterMetrics]
	upstreams atomic.Pointer[map[string]*upstreamMetrics]
	addMu     sync.Mutex // serialises the copies

	probe    atomic.Pointer[Probe]
	draining atomic.Bool
}

type filterMetrics struct {
	name     string
	duration [nStages]prometheus.Observer // nil for stages the filter does not implement
	refused  prometheus.Counter           // connections refused (connect-stage filters)

	mu         sync.Mutex
	rejections map[rejectionKey]prometheus.Counter
}

type rejectionKey struct {
	stage pipeline.Stage
	code  int
}

type upstreamMetrics struct {
	latency  prometheus.Observer
	failures prometheus.Counter
}

// New creates the metrics and registers them, with Go runtime and
// process metrics, in a registry of their own.
func New(o Options) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connsCurrent: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "connections_current", Help: "SMTP connections open now."}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "connections_total", Help: "SMTP connections accepted, by listener."}, []string{"listener"}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "connections_refused_total", Help: "SMTP connections refused before or instead of the banner, by the filter that refused them."},
			[]string{"reason"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "messages_total", Help: "Transactions (MAIL FROM ... end), by outcome."}, []string{"outcome"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "rejections_total", Help: "Refusals applied (reject or tempfail), by filter, stage and SMTP code."},
			[]string{"filter", "stage", "code"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "shadow_decisions_total", Help: "Decisions of filters in shadow mode that were not applied, by filter and the action they would have taken."},
			[]string{"filter", "action"}),
		filterDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
			Name: "filter_duration_seconds", Help: "Time each filter took, by filter and stage.", Buckets: filterDurationBuckets},
			[]string{"filter", "stage"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "bytes_received_total", Help: "Message bytes received from clients in DATA."}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "state_store_errors_total", Help: "Failed state store calls, by operation."}, []string{"op"}),
		upLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
			Name: "upstream_latency_seconds", Help: "Time to open an upstream session (connect, greeting, EHLO, TLS), by server.",
			Buckets: prometheus.DefBuckets}, []string{"server"}),
		upFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "upstream_failures_total", Help: "Failed attempts to open an upstream session, by server."}, []string{"server"}),
		listeners: map[string]prometheus.Counter{},
	}
	m.filters.Store(&map[string]*filterMetrics{})
	m.upstreams.Store(&map[string]*upstreamMetrics{})
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help: "Always 1; the version label is the gateway's version.", ConstLabels: prometheus.Labels{"version": o.Version}})
	buildInfo.Set(1)
	m.reg.MustRegister(m.connsCurrent, m.connsTotal, m.connsRefused, m.messages, m.rejections, m.shadow,
		m.filterDur, m.bytes, m.storeErrors, m.upLatency, m.upFailures, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	for _, l := range o.Listeners {
		m.listeners[l] = m.connsTotal.WithLabelValues(l)
	}
	for i, oc := range outcomes {
		m.outcome[i] = m.messages.WithLabelValues(oc.label)
	}
	m.outcome[otherOutcome] = m.messages.WithLabelValues("other")
	m.AddFilters(o.Filters)
	for _, op := range storeOps {
		m.storeErrors.WithLabelValues(op)
	}
	m.AddUpstreams(o.Upstreams)
	return m
}

// AddFilters creates the label children of filters (a pipeline built at
// a configuration reload). Filters already known keep theirs.
func (m *Metrics) AddFilters(entries []pipeline.Entry) {
	m.addMu.Lock()
	defer m.addMu.Unlock()
	old := *m.filters.Load()
	next := make(map[string]*filterMetrics, len(old)+len(entries))
	for k, v := range old {
		next[k] = v
	}
	for _, e := range entries {
		name := e.Filter.Name()
		prev := next[name]
		fm := &filterMetrics{name: name, rejections: map[rejectionKey]prometheus.Counter{}}
		if prev != nil {
			// A copy, not the one hot paths read: never write to
			// what may be in use without the lock.
			prev.mu.Lock()
			fm.duration, fm.refused = prev.duration, prev.refused
			for k, c := range prev.rejections {
				fm.rejections[k] = c
			}
			prev.mu.Unlock()
		}
		for st := range pipeline.Stage(nStages) {
			if implements(e.Filter, st) && fm.duration[st] == nil {
				fm.duration[st] = m.filterDur.WithLabelValues(name, st.String())
			}
		}
		if implements(e.Filter, pipeline.StageConnect) && fm.refused == nil {
			fm.refused = m.connsRefused.WithLabelValues(name)
		}
		if e.Mode == pipeline.Shadow {
			m.shadow.WithLabelValues(name, pipeline.Reject.String())
			m.shadow.WithLabelValues(name, pipeline.Tempfail.String())
		}
		next[name] = fm
	}
	m.filters.Store(&next)
}

// AddUpstreams creates the label children of upstream servers.
func (m *Metrics) AddUpstreams(servers []string) {
	m.addMu.Lock()
	defer m.addMu.Unlock()
	old := *m.upstreams.Load()
	next := make(map[string]*upstreamMetrics, len(old)+len(servers))
	for k, v := range old {
		next[k] = v
	}
	for _, s := range servers {
		if next[s] == nil {
			next[s] = &upstreamMetrics{latency: m.upLatency.WithLabelValues(s), failures: m.upFailures.WithLabelValues(s)}
		}
	}
	m.upstreams.Store(&next)
}

// implements reports whether f runs at stage (pregreet belongs to the
// connect stage).
func implements(f pipeline.Filter, stage pipeline.Stage) bool {
	var ok bool
	switch stage {
	case pipeline.StageConnect:
		_, ok = f.(pipeline.ConnectFilter)
		if !ok {
			_, ok = f.(pipeline.PregreetFilter)
		}
	case pipeline.StageHelo:
		_, ok = f.(pipeline.HeloFilter)
	case pipeline.StageAuth:
		_, ok = f.(pipeline.AuthFilter)
	case pipeline.StageMail:
		_, ok = f.(pipeline.MailFilter)
	case pipeline.StageRcpt:
		_, ok = f.(pipeline.RcptFilter)
	case pipeline.StageData:
		_, ok = f.(pipeline.DataFilter)
	}
	return ok
}

// Registry is where the metrics are registered (for /metrics, and for
// tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Observe records one filter decision; it is the pipeline's Observe hook.
// Skipped decisions (whitelisted sessions) cost nothing; a decision of a
// filter in shadow mode counts as a shadow decision, never as a refusal.
func (m *Metrics) Observe(d pipeline.Decision) {
	if d.Skipped {
		return
	}
	fm := (*m.filters.Load())[d.Filter]
	if fm != nil && int(d.Stage) < nStages && fm.duration[d.Stage] != nil {
		fm.duration[d.Stage].Observe(d.Duration.Seconds())
	} else {
		m.filterDur.WithLabelValues(d.Filter, d.Stage.String()).Observe(d.Duration.Seconds())
	}
	a := d.Verdict.Action
	if d.Shadow {
		if a != pipeline.Continue {
			m.shadow.WithLabelValues(d.Filter, a.String()).Inc()
		}
		return
	}
	if a != pipeline.Reject && a != pipeline.Tempfail {
		return
	}
	if fm == nil {
		m.rejections.WithLabelValues(d.Filter, d.Stage.String(), strconv.Itoa(d.Verdict.Reply.Code)).Inc()
		if d.Stage == pipeline.StageConnect {
			m.connsRefused.WithLabelValues(d.Filter).Inc()
		}
		return
	}
	fm.rejection(m, d.Stage, d.Verdict.Reply.Code).Inc()
	if d.Stage == pipeline.StageConnect {
		if fm.refused == nil {
			m.connsRefused.WithLabelValues(d.Filter).Inc()
		} else {
			fm.refused.Inc()
		}
	}
}

func (fm *filterMetrics) rejection(m *Metrics, stage pipeline.Stage, code int) prometheus.Counter {
	k := rejectionKey{stage, code}
	fm.mu.Lock()
	defer fm.mu.Unlock()
	c := fm.rejections[k]
	if c == nil {
		c = m.rejections.WithLabelValues(fm.name, stage.String(), strconv.Itoa(code))
		fm.rejections[k] = c
	}
	return c
}

// Message records how a transaction ended, named as in the message log
// line ("delivered", "rejected at rcpt", ...), and the size of its
// message if DATA was received: the pipeline's OnMessage hook.
func (m *Metrics) Message(outcome string, size int64) {
	if size > 0 {
		m.bytes.Add(float64(size))
	}
	for i := range outcomes {
		if outcomes[i].log == outcome {
			m.outcome[i].Inc()
			return
		}
	}
	m.outcome[otherOutcome].Inc()
}

// ConnOpened records a new connection on a listener.
func (m *Metrics) ConnOpened(listener string) {
	m.connsCurrent.Inc()
	if c := m.listeners[listener]; c != nil {
		c.Inc()
		return
	}
	m.connsTotal.WithLabelValues(listener).Inc()
}

// ConnClosed records the end of a connection.
func (m *Metrics) ConnClosed() { m.connsCurrent.Dec() }

// UpstreamOpened records an attempt to open an upstream session: its
// latency when it succeeded, a failure otherwise. It is the upstream
// relay's OnOpen hook.
func (m *Metrics) UpstreamOpened(server string, latency time.Duration, err error) {
	um := (*m.upstreams.Load())[server]
	if um == nil {
		um = &upstreamMetrics{latency: m.upLatency.WithLabelValues(server), failures: m.upFailures.WithLabelValues(server)}
	}
	if err != nil {
		um.failures.Inc()
		return
	}
	um.latency.Observe(latency.Seconds())
}

// SetDraining makes /readyz answer 503: the gateway is shutting down and
// takes no new connections.
func (m *Metrics) SetDraining() { m.draining.Store(true) }
