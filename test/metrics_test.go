package test

// Prometheus metrics, /healthz and /readyz (SPEC §7), end to end: the real
// binary with metrics.address on a free loopback port, clients from
// 127.0.8.0/24 (this file's range), a recording upstream, and the
// in-process DNS server for a DNSBL zone. Counters scraped over HTTP must
// match what was sent.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailgate/internal/dnstest"
	"mailgate/internal/recorder"
)

// metricsGet fetches path from the metrics endpoint.
func metricsGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricsValue finds the sample `series` (name{labels} as Prometheus
// writes it, labels sorted) in a scrape; ok is false when it is absent.
func metricsValue(text, series string) (float64, bool) {
	for line := range strings.Lines(text) {
		rest, found := strings.CutPrefix(line, series+" ")
		if !found {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// metricsWant polls /metrics until every series has grown by its value
// since the scrape base (sessions end asynchronously after QUIT), then
// fails listing the differences.
func metricsWant(t *testing.T, addr, base string, want map[string]float64) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, text := metricsGet(t, addr, "/metrics")
		var diffs []string
		for series, v := range want {
			before, _ := metricsValue(base, series)
			got, ok := metricsValue(text, series)
			switch {
			case !ok:
				diffs = append(diffs, fmt.Sprintf("%s: missing, want +%v", series, v))
			case got-before != v:
				diffs = append(diffs, fmt.Sprintf("%s = %v, was %v, want +%v", series, got, before, v))
			}
		}
		if len(diffs) == 0 {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics differ:\n  %s\nscrape:\n%s", strings.Join(diffs, "\n  "), text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMetricsCounters(t *testing.T) {
	dns := dnstest.New(t, "4.8.0.127.bl.metrics.test. 300 IN A 127.0.0.2")
	up := startUpstream(t, recorder.Options{})
	smtpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	extra := fmt.Sprintf(`metrics: {address: %q}
dns: {servers: [%q], timeout: 2s}
state: {store: "memory:"}
filters:
  access: {deny: [127.0.8.9/32]}
  dnsbl: {zones: [{zone: bl.metrics.test}]}
  senders: {deny: [spammer@bad.test]}
`, metricsAddr, dns.Addr())
	g := startGateway(t, baseConfig(smtpAddr, up.Addr(), extra), smtpAddr, metricsAddr)

	if code, body := metricsGet(t, metricsAddr, "/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	// The harness's own connection (waiting for the port) has ended: what
	// this test sends is counted from here.
	g.Log.WaitForClient(t, "session", "127.0.0.1")
	_, base := metricsGet(t, metricsAddr, "/metrics")

	// Three messages delivered, from one client in three sessions.
	for i := range 3 {
		c := client(t, "127.0.8.1", smtpAddr)
		if err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		c.Quit()
	}
	// Two refused by relay control at RCPT.
	for range 2 {
		c := client(t, "127.0.8.2", smtpAddr)
		wantCode(t, "relay", send(c, "alice@example.net", []string{"someone@elsewhere.test"}, testMessage), 554, "5.7.1")
		c.Quit()
	}
	// One refused at MAIL by the sender deny list.
	c := client(t, "127.0.8.3", smtpAddr)
	wantCode(t, "denied sender", send(c, "spammer@bad.test", []string{"bob@example.com"}, testMessage), 550, "5.7.1")
	c.Quit()
	// One listed in the DNSBL: refused at RCPT.
	c = client(t, "127.0.8.4", smtpAddr)
	wantCode(t, "dnsbl", send(c, "carol@example.net", []string{"bob@example.com"}, testMessage), 554, "5.7.1")
	c.Quit()
	// One refused at connect by the access list.
	r := dialRaw(t, "127.0.8.9", smtpAddr)
	r.expect("554 5.7.1 ")

	if n := len(up.Messages()); n != 3 {
		t.Fatalf("upstream received %d messages, want 3", n)
	}
	text := metricsWant(t, metricsAddr, base, map[string]float64{
		`mailgate_connections_total{listener="mx"}`:                             8,
		`mailgate_connections_current`:                                          0,
		`mailgate_connections_refused_total{reason="access"}`:                   1,
		`mailgate_messages_total{outcome="delivered"}`:                          3,
		`mailgate_messages_total{outcome="rejected_rcpt"}`:                      3,
		`mailgate_messages_total{outcome="rejected_mail"}`:                      1,
		`mailgate_messages_total{outcome="rejected_data"}`:                      0,
		`mailgate_messages_total{outcome="tempfailed"}`:                         0,
		`mailgate_rejections_total{code="554",filter="relay",stage="rcpt"}`:     2,
		`mailgate_rejections_total{code="550",filter="senders",stage="mail"}`:   1,
		`mailgate_rejections_total{code="554",filter="dnsbl",stage="rcpt"}`:     1,
		`mailgate_rejections_total{code="554",filter="access",stage="connect"}`: 1,
		// relay ran at RCPT for the 3 delivered and the 2 refused recipients.
		`mailgate_filter_duration_seconds_count{filter="relay",stage="rcpt"}`: 5,
		`mailgate_bytes_received_total`:                                       float64(3 * len(testMessage)),
		// One DNSBL query per connection that got past the access list;
		// the resolver asked the server once per client address.
		`mailgate_dnsbl_zone_queries_total{result="listed",zone="bl.metrics.test"}`:     1,
		`mailgate_dnsbl_zone_queries_total{result="not_listed",zone="bl.metrics.test"}`: 6,
		`mailgate_dnsbl_zone_queries_total{result="error",zone="bl.metrics.test"}`:      0,
		`mailgate_dnsbl_zone_query_duration_seconds_count{zone="bl.metrics.test"}`:      7,
		`mailgate_dns_cache_misses_total`:                                               4,
		`mailgate_dns_cache_hits_total`:                                                 3,
		`mailgate_state_store_errors_total{op="incr"}`:                                  0,
	})
	if v, ok := metricsValue(text, `mailgate_upstream_up{server="`+up.Addr()+`"}`); !ok || v != 1 {
		t.Errorf("upstream_up = %v (present %v), want 1", v, ok)
	}
	if v, ok := metricsValue(text, `mailgate_upstream_latency_seconds_count{server="`+up.Addr()+`"}`); !ok || v < 1 {
		t.Errorf("upstream_latency_seconds_count = %v (present %v), want >= 1", v, ok)
	}
	if _, ok := metricsValue(text, `mailgate_build_info{version="dev"}`); !ok {
		t.Errorf("no build_info")
	}
}

func TestMetricsReadiness(t *testing.T) {
	up := startUpstream(t, recorder.Options{})
	upAddr := up.Addr()
	smtpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	g := startGateway(t, baseConfig(smtpAddr, upAddr, fmt.Sprintf("metrics: {address: %q}\n", metricsAddr)),
		smtpAddr, metricsAddr)

	waitStatus := func(path string, code int, body string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, text := metricsGet(t, metricsAddr, path)
			if got == code && strings.Contains(text, body) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %q, want %d with %q", path, got, text, code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitStatus("/readyz", 200, "ready")

	// The only upstream goes away: not ready, saying why; still healthy.
	up.Close()
	waitStatus("/readyz", 503, "no upstream server reachable: "+upAddr)
	waitStatus("/healthz", 200, "ok")
	_, text := metricsGet(t, metricsAddr, "/metrics")
	if v, ok := metricsValue(text, `mailgate_upstream_up{server="`+upAddr+`"}`); !ok || v != 0 {
		t.Errorf("upstream_up with the upstream down: %v %v", v, ok)
	}

	// It comes back on the same address: ready again.
	startUpstream(t, recorder.Options{Addr: upAddr})
	waitStatus("/readyz", 200, "ready")

	// SIGTERM: not ready while draining (a session is held open so that
	// the drain lasts).
	r := dialRaw(t, "127.0.8.20", smtpAddr)
	r.greet()
	r.openData()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitStatus("/readyz", 503, "draining")
	r.send("Subject: drain\r\n\r\nbye\r\n.\r\n")
	r.expect("250 ")
	select {
	case err := <-g.done:
		g.done <- err // for the harness's cleanup, which waits for it too
		if err != nil {
			t.Fatalf("gateway exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not stop within 10s of SIGTERM")
	}
}

// TestMetricsAfterReload: the pipeline built at a SIGHUP reports into the
// same series, and its new filters are counted.
func TestMetricsAfterReload(t *testing.T) {
	up := startUpstream(t, recorder.Options{})
	smtpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	extra := fmt.Sprintf("metrics: {address: %q}\nstate: {store: \"memory:\"}\n", metricsAddr)
	g := startGateway(t, baseConfig(smtpAddr, up.Addr(), extra), smtpAddr, metricsAddr)
	g.Log.WaitForClient(t, "session", "127.0.0.1")
	_, base := metricsGet(t, metricsAddr, "/metrics")

	deliver := func() {
		t.Helper()
		c := client(t, "127.0.8.25", smtpAddr)
		if err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage); err != nil {
			t.Fatal(err)
		}
		c.Quit()
	}
	deliver()

	cfg := baseConfig(smtpAddr, up.Addr(), extra+"filters:\n  senders: {deny: [spammer@bad.test]}\n")
	if err := os.WriteFile(filepath.Join(g.Dir, "gateway.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	g.Log.WaitFor(t, "config reloaded", 1)

	deliver()
	c := client(t, "127.0.8.25", smtpAddr)
	wantCode(t, "denied sender after reload", send(c, "spammer@bad.test", []string{"bob@example.com"}, testMessage), 550, "5.7.1")
	c.Quit()

	metricsWant(t, metricsAddr, base, map[string]float64{
		`mailgate_connections_total{listener="mx"}`:                           3,
		`mailgate_messages_total{outcome="delivered"}`:                        2,
		`mailgate_messages_total{outcome="rejected_mail"}`:                    1,
		`mailgate_rejections_total{code="550",filter="senders",stage="mail"}`: 1,
		`mailgate_filter_duration_seconds_count{filter="relay",stage="rcpt"}`: 2,
		`mailgate_bytes_received_total`:                                       float64(2 * len(testMessage)),
	})
}
