package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailgate/config"
	"mailgate/filters/dnsbl"
	"mailgate/internal/dnstest"
	"mailgate/internal/recorder"
	"mailgate/internal/resolver"
	"mailgate/internal/state"
	"mailgate/pipeline"
	"mailgate/upstream"
)

// connectFilter and rcptFilter stand for filters of those stages; the
// metrics only look at names, stages and modes.
type connectFilter struct{ name string }

func (f connectFilter) Name() string      { return f.name }
func (connectFilter) Kind() pipeline.Kind { return pipeline.Antispam }
func (connectFilter) Connect(context.Context, *pipeline.Session) pipeline.Verdict {
	return pipeline.Pass()
}

type rcptFilter struct{ name string }

func (f rcptFilter) Name() string      { return f.name }
func (rcptFilter) Kind() pipeline.Kind { return pipeline.Policy }
func (rcptFilter) Rcpt(context.Context, *pipeline.Session, *pipeline.Transaction, pipeline.Address) pipeline.Verdict {
	return pipeline.Pass()
}

func newTest() *Metrics {
	return New(Options{Version: "test", Listeners: []string{"mx", "submission"},
		Filters: []pipeline.Entry{
			{Filter: connectFilter{"dnsbl"}, Mode: pipeline.Enforce},
			{Filter: rcptFilter{"relay"}, Mode: pipeline.Enforce},
			{Filter: rcptFilter{"greylist"}, Mode: pipeline.Shadow},
		},
		Upstreams: []string{"10.0.0.5:25"}})
}

// scrape returns the /metrics text.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func wantLines(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, "\n"+l+"\n") {
			t.Errorf("no line %q in:\n%s", l, text)
		}
	}
}

func TestDecisions(t *testing.T) {
	m := newTest()
	refuse := pipeline.Refuse(554, [3]int{5, 7, 1}, "Relay access denied", "not local")
	m.Observe(pipeline.Decision{Filter: "relay", Stage: pipeline.StageRcpt, Verdict: refuse, Duration: 2 * time.Millisecond})
	m.Observe(pipeline.Decision{Filter: "relay", Stage: pipeline.StageRcpt, Verdict: refuse, Duration: time.Millisecond})
	m.Observe(pipeline.Decision{Filter: "relay", Stage: pipeline.StageRcpt, Verdict: pipeline.Pass(), Duration: time.Millisecond})
	m.Observe(pipeline.Decision{Filter: "dnsbl", Stage: pipeline.StageConnect,
		Verdict: pipeline.Defer(450, [3]int{4, 7, 1}, "listed", ""), Duration: 30 * time.Millisecond})
	// Shadow: counted apart, never as a refusal.
	m.Observe(pipeline.Decision{Filter: "greylist", Stage: pipeline.StageRcpt, Shadow: true,
		Verdict: pipeline.Defer(451, [3]int{4, 7, 1}, "Greylisted", "new triplet")})
	// Skipped (whitelisted): nothing at all.
	m.Observe(pipeline.Decision{Filter: "greylist", Stage: pipeline.StageRcpt, Skipped: true})
	// A filter the metrics were not told about still counts.
	m.Observe(pipeline.Decision{Filter: "late", Stage: pipeline.StageData,
		Verdict: pipeline.Refuse(550, [3]int{5, 6, 0}, "x", "")})

	text := scrape(t, m)
	wantLines(t, text,
		`mailgate_rejections_total{code="554",filter="relay",stage="rcpt"} 2`,
		`mailgate_rejections_total{code="450",filter="dnsbl",stage="connect"} 1`,
		`mailgate_rejections_total{code="550",filter="late",stage="data"} 1`,
		`mailgate_connections_refused_total{reason="dnsbl"} 1`,
		`mailgate_shadow_decisions_total{action="tempfail",filter="greylist"} 1`,
		`mailgate_shadow_decisions_total{action="reject",filter="greylist"} 0`,
		`mailgate_filter_duration_seconds_count{filter="relay",stage="rcpt"} 3`,
		`mailgate_filter_duration_seconds_count{filter="dnsbl",stage="connect"} 1`,
		`mailgate_filter_duration_seconds_count{filter="greylist",stage="rcpt"} 1`,
		`mailgate_build_info{version="test"} 1`,
	)
	if strings.Contains(text, `rejections_total{code="451",filter="greylist"`) {
		t.Errorf("a shadow decision counted as a refusal:\n%s", text)
	}
}

func TestMessagesAndConnections(t *testing.T) {
	m := newTest()
	for _, o := range []string{"delivered", "delivered", "rejected at rcpt", "rejected at mail", "rejected at data",
		"tempfailed", "upstream refused", "aborted", "something new"} {
		size := int64(0)
		if o == "delivered" || o == "rejected at data" {
			size = 1000
		}
		m.Message(o, size)
	}
	m.ConnOpened("mx")
	m.ConnOpened("mx")
	m.ConnOpened("other")
	m.ConnClosed()
	m.UpstreamOpened("10.0.0.5:25", 20*time.Millisecond, nil)
	m.UpstreamOpened("10.0.0.5:25", time.Second, errors.New("refused"))

	text := scrape(t, m)
	wantLines(t, text,
		`mailgate_messages_total{outcome="delivered"} 2`,
		`mailgate_messages_total{outcome="rejected_rcpt"} 1`,
		`mailgate_messages_total{outcome="rejected_mail"} 1`,
		`mailgate_messages_total{outcome="rejected_data"} 1`,
		`mailgate_messages_total{outcome="tempfailed"} 1`,
		`mailgate_messages_total{outcome="upstream_refused"} 1`,
		`mailgate_messages_total{outcome="aborted"} 1`,
		`mailgate_messages_total{outcome="other"} 1`,
		`mailgate_bytes_received_total 3000`,
		`mailgate_connections_total{listener="mx"} 2`,
		`mailgate_connections_total{listener="submission"} 0`,
		`mailgate_connections_total{listener="other"} 1`,
		`mailgate_connections_current 2`,
		`mailgate_upstream_latency_seconds_count{server="10.0.0.5:25"} 1`,
		`mailgate_upstream_failures_total{server="10.0.0.5:25"} 1`,
	)
}

// TestAddFiltersKeepsCounts: a reload brings new filters; the old ones
// keep counting into the same series.
func TestAddFiltersKeepsCounts(t *testing.T) {
	m := newTest()
	refuse := pipeline.Refuse(554, [3]int{5, 7, 1}, "no", "")
	m.Observe(pipeline.Decision{Filter: "relay", Stage: pipeline.StageRcpt, Verdict: refuse})
	m.AddFilters([]pipeline.Entry{{Filter: rcptFilter{"relay"}}, {Filter: connectFilter{"rdns"}}})
	m.Observe(pipeline.Decision{Filter: "relay", Stage: pipeline.StageRcpt, Verdict: refuse})
	m.Observe(pipeline.Decision{Filter: "rdns", Stage: pipeline.StageConnect, Verdict: refuse})
	wantLines(t, scrape(t, m),
		`mailgate_rejections_total{code="554",filter="relay",stage="rcpt"} 2`,
		`mailgate_connections_refused_total{reason="rdns"} 1`)
}

func TestStoreErrors(t *testing.T) {
	m := newTest()
	ctx := context.Background()

	mem := m.WrapStore(state.NewMemory())
	if _, err := mem.Incr(ctx, "k", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, _, _ = mem.Get(canceled, "k") // the caller gave up: not the store's fault
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	_, _, _ = mem.Get(expired, "k") // too slow: counts

	// A file store that is closed fails every call, as a real failure.
	fs, err := state.OpenFile(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	fs.Close()
	file := m.WrapStore(fs)
	if err := file.Set(ctx, "k", []byte("v"), time.Minute); !errors.Is(err, state.ErrUnavailable) {
		t.Fatalf("Set on a closed store: %v", err)
	}
	_, _, _ = file.Add(ctx, "k", []byte("v"), time.Minute)
	_ = file.Delete(ctx, "k")

	wantLines(t, scrape(t, m),
		`mailgate_state_store_errors_total{op="get"} 1`,
		`mailgate_state_store_errors_total{op="set"} 1`,
		`mailgate_state_store_errors_total{op="add"} 1`,
		`mailgate_state_store_errors_total{op="delete"} 1`,
		`mailgate_state_store_errors_total{op="incr"} 0`)
}

// TestDNSCollectors reads a real resolver's cache counters and a real
// DNSBL filter's zone counters, against the in-process DNS server.
func TestDNSCollectors(t *testing.T) {
	srv := dnstest.New(t, "2.0.0.127.bl.test. 300 IN A 127.0.0.2")
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f, err := dnsbl.New(dnsbl.Config{Zones: []dnsbl.Zone{{Zone: "bl.test"}}, Resolver: r, RejectAt: "connect"})
	if err != nil {
		t.Fatal(err)
	}
	m := newTest()
	m.WatchResolver(func() ResolverStats { return r })
	m.WatchDNSBL(func() DNSBLStats { return f })

	ctx := context.Background()
	for _, ip := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		s := &pipeline.Session{Client: netip.AddrPortFrom(netip.MustParseAddr(ip), 25)}
		f.Connect(ctx, s)
	}
	text := scrape(t, m)
	wantLines(t, text,
		`mailgate_dns_cache_hits_total 1`,
		`mailgate_dns_cache_misses_total 2`,
		`mailgate_dns_errors_total 0`,
		`mailgate_dnsbl_zone_queries_total{result="listed",zone="bl.test"} 2`,
		`mailgate_dnsbl_zone_queries_total{result="not_listed",zone="bl.test"} 1`,
		`mailgate_dnsbl_zone_queries_total{result="error",zone="bl.test"} 0`,
		`mailgate_dnsbl_zone_query_duration_seconds_count{zone="bl.test"} 3`,
	)

	// No resolver (no DNS filter configured): the families are absent.
	m2 := newTest()
	m2.WatchResolver(func() ResolverStats { return nil })
	m2.WatchDNSBL(func() DNSBLStats { return nil })
	if text := scrape(t, m2); strings.Contains(text, "mailgate_dns_cache_hits_total") {
		t.Errorf("DNS metrics without a resolver:\n%s", text)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// TestReadiness probes a real SMTP server (the recording upstream).
func TestReadiness(t *testing.T) {
	up, err := recorder.Start(recorder.Options{Hostname: "internal.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	relay, err := upstream.New(config.Upstream{Servers: []config.UpstreamServer{{Address: up.Addr(), TLS: config.TLSNone}}},
		"mx.gateway.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	m := newTest()
	p := &Probe{Status: relay.Status, TTL: time.Millisecond, Timeout: time.Second}
	m.WatchUpstream(p)
	h := m.Handler()

	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != 200 {
		t.Errorf("/readyz with the upstream up: %d %q", code, body)
	}
	wantLines(t, scrape(t, m), `mailgate_upstream_up{server="`+up.Addr()+`"} 1`)

	// A server that greets with 421 cannot take mail.
	up.SetFault(recorder.FaultRefuseBanner)
	time.Sleep(5 * time.Millisecond)
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "421") {
		t.Errorf("/readyz with a 421 greeting: %d %q", code, body)
	}
	up.SetFault(recorder.FaultNone)

	addr := up.Addr()
	up.Close()
	time.Sleep(5 * time.Millisecond)
	code, body := get(t, h, "/readyz")
	if code != 503 || !strings.Contains(body, "no upstream server reachable") || !strings.Contains(body, addr) {
		t.Errorf("/readyz with the upstream down: %d %q", code, body)
	}
	wantLines(t, scrape(t, m), `mailgate_upstream_up{server="`+addr+`"} 0`)
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Errorf("/healthz must not depend on the upstream: %d", code)
	}

	// Back up on the same address.
	up2, err := recorder.Start(recorder.Options{Addr: addr, Hostname: "internal.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer up2.Close()
	time.Sleep(5 * time.Millisecond)
	if code, body := get(t, h, "/readyz"); code != 200 {
		t.Errorf("/readyz with the upstream back: %d %q", code, body)
	}

	m.SetDraining()
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Errorf("/readyz while draining: %d %q", code, body)
	}
}

// TestProbeCaches: within the TTL the upstream is not asked again.
func TestProbeCaches(t *testing.T) {
	up, err := recorder.Start(recorder.Options{Hostname: "internal.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	p := &Probe{Status: func() []upstream.ServerStatus {
		return []upstream.ServerStatus{{Address: up.Addr(), TLS: config.TLSNone, Up: true}}
	}, TTL: time.Hour}
	for range 5 {
		if h := p.Check(context.Background()); !h[0].Up {
			t.Fatalf("down: %s", h[0].Reason)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := up.Sessions(); n != 1 {
		t.Errorf("%d probe sessions within the TTL, want 1", n)
	}
}

// BenchmarkObserve is the cost of one decision on the hot path.
func BenchmarkObserve(b *testing.B) {
	m := newTest()
	d := pipeline.Decision{Filter: "relay", Stage: pipeline.StageRcpt, Verdict: pipeline.Pass(), Duration: time.Microsecond}
	b.ReportAllocs()
	for b.Loop() {
		m.Observe(d)
	}
}

// BenchmarkMessage is the cost of one message outcome.
func BenchmarkMessage(b *testing.B) {
	m := newTest()
	b.ReportAllocs()
	for b.Loop() {
		m.Message("delivered", 4096)
	}
}
