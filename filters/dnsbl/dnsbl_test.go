package dnsbl

import (
	"bytes"
	"cmp"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"mailgate/internal/dnslist"
	"mailgate/internal/dnstest"
	"mailgate/internal/mailaddr"
	"mailgate/internal/resolver"
	"mailgate/pipeline"
)

// timeout is the test resolver's: long enough for a loaded machine to
// answer from 127.0.0.1, short enough to keep the blackhole cases quick.
const timeout = 300 * time.Millisecond

// testCase is one file of testdata: the filter's YAML block (SPEC §3
// keys), the DNS data, the client, and the verdicts wanted at connect and
// at RCPT ("pass", "accept", "score N", or the exact reply).
type testCase struct {
	Config struct {
		Zones          []yamlZone `yaml:"zones"`
		AllowZones     []yamlZone `yaml:"allow_zones"`
		Threshold      float64    `yaml:"threshold"`
		AllowThreshold float64    `yaml:"allow_threshold"`
		RejectAt       string     `yaml:"reject_at"`
		Action         string     `yaml:"action"`
	} `yaml:"config"`
	Client    string   `yaml:"client"`
	DNS       []string `yaml:"dns"`
	Blackhole []string `yaml:"blackhole"`
	ServFail  []string `yaml:"servfail"`
	Connect   string   `yaml:"connect"`
	Reason    string   `yaml:"reason"`
	Rcpt      string   `yaml:"rcpt"`
}

type yamlZone struct {
	Zone   string   `yaml:"zone"`
	Weight float64  `yaml:"weight"`
	Codes  []string `yaml:"codes"`
	Mask   uint32   `yaml:"mask"`
}

func zones(ys []yamlZone) []Zone {
	var zs []Zone
	for _, y := range ys {
		zs = append(zs, Zone(y))
	}
	return zs
}

// newResolver is the gateway's real resolver pointed at srv.
func newResolver(t testing.TB, srv *dnstest.Server) *resolver.Resolver {
	t.Helper()
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func session(ip string) *pipeline.Session {
	return &pipeline.Session{ID: "test", Client: netip.AddrPortFrom(netip.MustParseAddr(ip), 40000)}
}

func rcptTo(t testing.TB) pipeline.Address {
	a, err := mailaddr.Parse("bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// show renders a verdict as the testdata files write it.
func show(v pipeline.Verdict) string {
	switch v.Action {
	case pipeline.Continue:
		return "pass"
	case pipeline.Accept:
		return "accept"
	case pipeline.Score:
		return "score " + strconv.FormatFloat(v.Score, 'f', -1, 64)
	}
	return v.Reply.String()
}

// TestCases runs testdata/*.yaml against a real DNS server and the real
// resolver. The clock stands still, so every latency reads 0ms.
func TestCases(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var tc testCase
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			if err := dec.Decode(&tc); err != nil {
				t.Fatal(err)
			}
			srv := dnstest.New(t, tc.DNS...)
			for _, z := range tc.Blackhole {
				srv.Blackhole(z)
			}
			for _, z := range tc.ServFail {
				srv.ServFail(z)
			}
			now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
			f, err := New(Config{
				Zones:          zones(tc.Config.Zones),
				AllowZones:     zones(tc.Config.AllowZones),
				Threshold:      tc.Config.Threshold,
				AllowThreshold: tc.Config.AllowThreshold,
				RejectAt:       tc.Config.RejectAt,
				Action:         tc.Config.Action,
				Resolver:       newResolver(t, srv),
				Now:            func() time.Time { return now },
			})
			if err != nil {
				t.Fatal(err)
			}
			s := session(cmp.Or(tc.Client, "192.0.2.1"))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()

			v := f.Connect(ctx, s)
			if got := show(v); got != tc.Connect {
				t.Errorf("connect: %q (%s)\nwant %q", got, v.Reason, tc.Connect)
			}
			if tc.Reason != "" && v.Reason != tc.Reason {
				t.Errorf("connect reason:\n got %q\nwant %q", v.Reason, tc.Reason)
			}
			if tc.Rcpt != "" {
				rv := f.Rcpt(ctx, s, &pipeline.Transaction{}, rcptTo(t))
				if got := show(rv); got != tc.Rcpt {
					t.Errorf("rcpt: %q (%s)\nwant %q", got, rv.Reason, tc.Rcpt)
				}
			}
		})
	}
}

func TestQueryName(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.1":                   "1.2.0.192.",
		"::ffff:192.0.2.1":            "1.2.0.192.",
		"2001:db8::1":                 "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.",
		"2001:DB8:abcd::ff00:42:8329": "9.2.3.8.2.4.0.0.0.0.f.f.0.0.0.0.0.0.0.0.d.c.b.a.8.b.d.0.1.0.0.2.",
	} {
		got := queryName(netip.MustParseAddr(ip))
		if got != want {
			t.Errorf("%s: %s, want %s", ip, got, want)
		}
		if strings.Contains(ip, "2001") && strings.Count(got, ".") != 32 {
			t.Errorf("%s: %d labels, want 32", ip, strings.Count(got, "."))
		}
	}
}

func TestNewValidates(t *testing.T) {
	srv := dnstest.New(t)
	r := newResolver(t, srv)
	ok := []Zone{{Zone: "zen.test"}}
	cases := []struct {
		name string
		c    Config
	}{
		{"no resolver", Config{Zones: ok}},
		{"no zones", Config{Resolver: r}},
		{"empty zone", Config{Resolver: r, Zones: []Zone{{Zone: ""}}}},
		{"bad zone name", Config{Resolver: r, Zones: []Zone{{Zone: "zen..test"}}}},
		{"space in zone", Config{Resolver: r, Zones: []Zone{{Zone: "zen test"}}}},
		{"zone too long for IPv6", Config{Resolver: r, Zones: []Zone{{Zone: strings.Repeat("a23456789.", 19) + "test"}}}},
		{"twice", Config{Resolver: r, Zones: ok, AllowZones: []Zone{{Zone: "ZEN.test."}}}},
		{"negative block weight", Config{Resolver: r, Zones: []Zone{{Zone: "zen.test", Weight: -1}}}},
		{"code not an address", Config{Resolver: r, Zones: []Zone{{Zone: "zen.test", Codes: []string{"two"}}}}},
		{"code outside 127/8", Config{Resolver: r, Zones: []Zone{{Zone: "zen.test", Codes: []string{"10.0.0.2"}}}}},
		{"range end outside 127/8", Config{Resolver: r, Zones: []Zone{{Zone: "zen.test", Codes: []string{"127.0.0.2-128.0.0.1"}}}}},
		{"range backwards", Config{Resolver: r, Zones: []Zone{{Zone: "zen.test", Codes: []string{"127.0.0.11-127.0.0.2"}}}}},
		{"IPv6 code", Config{Resolver: r, Zones: []Zone{{Zone: "zen.test", Codes: []string{"::1"}}}}},
		{"mask on 127", Config{Resolver: r, Zones: []Zone{{Zone: "zen.test", Mask: 0x7f000000}}}},
		{"negative threshold", Config{Resolver: r, Zones: ok, Threshold: -1}},
		{"positive allow threshold", Config{Resolver: r, Zones: ok, AllowThreshold: 1}},
		{"reject_at", Config{Resolver: r, Zones: ok, RejectAt: "data"}},
		{"action", Config{Resolver: r, Zones: ok, Action: "discard"}},
	}
	for _, tc := range cases {
		if _, err := New(tc.c); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	good := Config{Resolver: r, RejectAt: "connect", Action: "tempfail", Zones: []Zone{
		{Zone: "Zen.Test.", Codes: []string{"127.0.0.2", " 127.0.0.4 - 127.0.0.7 "}, Mask: 0xff},
		{Zone: "multi_list-1.test"},
	}}
	if _, err := New(good); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

// TestDeadZonesInParallel: three lists that never answer cost one
// resolver timeout, not three, and a fourth that answers still counts.
func TestDeadZonesInParallel(t *testing.T) {
	srv := dnstest.New(t, "1.2.0.192.zen.test. 300 IN A 127.0.0.2")
	for _, z := range []string{"a.test", "b.test", "c.test"} {
		srv.Blackhole(z)
	}
	f, err := New(Config{
		Zones:    []Zone{{Zone: "a.test"}, {Zone: "b.test"}, {Zone: "c.test"}, {Zone: "zen.test", Weight: 0.5}},
		Resolver: newResolver(t, srv),
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v := f.Connect(context.Background(), session("192.0.2.1"))
	elapsed := time.Since(start)
	if elapsed < timeout || elapsed > 2*timeout {
		t.Errorf("took %v, want about one timeout (%v)", elapsed, timeout)
	}
	if v.Action != pipeline.Score || v.Score != 0.5 {
		t.Errorf("verdict %+v, want the answering zone's 0.5 points", v)
	}
	if !strings.Contains(v.Reason, "a.test=error: timeout ") {
		t.Errorf("reason %q does not show the dead zone", v.Reason)
	}
}

// TestSessionDeadline: the session's context bounds the lookups too.
func TestSessionDeadline(t *testing.T) {
	srv := dnstest.New(t)
	srv.Blackhole("dead.test")
	f, err := New(Config{Zones: []Zone{{Zone: "dead.test"}}, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	v := f.Connect(ctx, session("192.0.2.1"))
	if d := time.Since(start); d > timeout/2 {
		t.Errorf("took %v past a 50ms session deadline", d)
	}
	if v.Action != pipeline.Continue {
		t.Errorf("dead zone gave %+v", v)
	}
}

// TestDeferredReplyIdentical: refusing at RCPT says exactly what refusing
// at connect would have, to every recipient; a clean client's RCPT passes.
func TestDeferredReplyIdentical(t *testing.T) {
	srv := dnstest.New(t, "1.2.0.192.zen.test. 300 IN A 127.0.0.2", "1.2.0.192.bl.test. 300 IN A 127.0.0.3")
	r := newResolver(t, srv)
	zs := []Zone{{Zone: "zen.test", Weight: 2}, {Zone: "bl.test"}}
	atConnect, _ := New(Config{Zones: zs, Threshold: 2, RejectAt: "connect", Resolver: r})
	atRcpt, err := New(Config{Zones: zs, Threshold: 2, Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := atConnect.Connect(ctx, session("192.0.2.1"))
	if want.Reply.String() != "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.test, bl.test" {
		t.Fatalf("connect refusal %q", want.Reply.String())
	}
	if v := atConnect.Rcpt(ctx, session("192.0.2.1"), &pipeline.Transaction{}, rcptTo(t)); v.Action != pipeline.Continue {
		t.Errorf("reject_at connect also refused at RCPT: %+v", v)
	}

	s := session("192.0.2.1")
	if v := atRcpt.Connect(ctx, s); v.Action != pipeline.Continue || !strings.Contains(v.Reason, "deferred to RCPT") {
		t.Fatalf("deferred connect verdict %+v", v)
	}
	for range 2 {
		got := atRcpt.Rcpt(ctx, s, &pipeline.Transaction{}, rcptTo(t))
		if got.Action != want.Action || got.Reply != want.Reply {
			t.Errorf("RCPT %+v, want the connect refusal %+v", got, want)
		}
		if !strings.HasPrefix(got.Reason, "blocked using zen.test, bl.test (score 3 >= 2): zen.test=127.0.0.2 (2) ") {
			t.Errorf("RCPT reason %q", got.Reason)
		}
	}
	clean := session("192.0.2.9")
	atRcpt.Connect(ctx, clean)
	if v := atRcpt.Rcpt(ctx, clean, &pipeline.Transaction{}, rcptTo(t)); v.Action != pipeline.Continue {
		t.Errorf("clean client refused at RCPT: %+v", v)
	}
}

// TestWhitelistedSkipsDeferredRefusal: through the pipeline, a session
// whitelisted after connect (an authenticated user on a listed dial-up
// address) is not refused at RCPT: the point of deferring.
func TestWhitelistedSkipsDeferredRefusal(t *testing.T) {
	srv := dnstest.New(t, "1.2.0.192.zen.test. 300 IN A 127.0.0.11")
	f, err := New(Config{Zones: []Zone{{Zone: "zen.test"}}, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(pipeline.Entry{Filter: f, Mode: pipeline.Enforce})
	ctx := context.Background()
	s := session("192.0.2.1")
	if v := p.Connect(ctx, s); v.Action != pipeline.Continue {
		t.Fatalf("connect %+v", v)
	}
	if v := p.Rcpt(ctx, s, &pipeline.Transaction{}, rcptTo(t)); v.Action != pipeline.Reject {
		t.Fatalf("listed client not refused at RCPT: %+v", v)
	}
	s.Whitelisted = true // AUTH succeeded
	if v := p.Rcpt(ctx, s, &pipeline.Transaction{}, rcptTo(t)); v.Action != pipeline.Continue {
		t.Errorf("whitelisted session refused: %+v", v)
	}
}

func TestStats(t *testing.T) {
	srv := dnstest.New(t,
		"1.2.0.192.zen.test. 300 IN A 127.0.0.2",
		"2.2.0.192.zen.test. 300 IN A 127.255.255.254",
		"1.2.0.192.wl.test. 300 IN A 127.0.10.1",
	)
	srv.Blackhole("dead.test")
	f, err := New(Config{
		Zones:      []Zone{{Zone: "zen.test"}, {Zone: "dead.test"}},
		AllowZones: []Zone{{Zone: "wl.test"}},
		Threshold:  5,
		Resolver:   newResolver(t, srv),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.1"} {
		f.Connect(ctx, session(ip))
	}
	st := f.Stats()
	if len(st) != 3 {
		t.Fatalf("stats %+v", st)
	}
	want := []dnslist.Stats{
		{Zone: "zen.test", Queries: 4, Listed: 2, Errors: 1, LastError: "resolver blocked by the list operator (127.255.255.254)"},
		{Zone: "dead.test", Queries: 4, Errors: 4, LastError: "timeout"},
		{Zone: "wl.test", Queries: 4, Listed: 2},
	}
	for i, w := range want {
		got := st[i]
		got.LatencySum = 0
		if got != w {
			t.Errorf("stats[%d] = %+v\nwant %+v", i, got, w)
		}
	}
	// The dead zone costs a timeout for each of the three addresses; the
	// resolver caches the failure briefly, so the repeated one is quick.
	if st[1].LatencySum < 3*timeout || st[1].LatencySum >= 4*timeout {
		t.Errorf("dead zone latency %v", st[1].LatencySum)
	}
	if st[0].LatencySum <= 0 {
		t.Errorf("zen latency %v", st[0].LatencySum)
	}
}

// BenchmarkConnect: three zones answered from the resolver's cache, the
// steady state for a busy gateway.
func BenchmarkConnect(b *testing.B) {
	srv := dnstest.New(b,
		"1.2.0.192.zen.test. 300 IN A 127.0.0.2",
		"1.2.0.192.wl.test. 300 IN A 127.0.10.2",
	)
	f, err := New(Config{
		Zones:      []Zone{{Zone: "zen.test", Weight: 3}, {Zone: "bl.test"}},
		AllowZones: []Zone{{Zone: "wl.test"}},
		Threshold:  5,
		Resolver:   newResolver(b, srv),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	f.Connect(ctx, session("192.0.2.1")) // warm the cache
	b.ReportAllocs()
	for b.Loop() {
		if v := f.Connect(ctx, session("192.0.2.1")); v.Action != pipeline.Score {
			b.Fatalf("%+v", v)
		}
	}
}
