package connlimit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"mailgate/filters/access"
	"mailgate/internal/redistest"
	"mailgate/internal/state"
	"mailgate/pipeline"
)

const (
	tooManyTotal = "421 4.7.0 Too many connections, try again later"
	tooManyIP    = "421 4.7.0 Too many connections from your address, try again later"
	tooFast      = "421 4.7.0 Connection rate limit exceeded, try again later"
)

func session(ip string) *pipeline.Session {
	return &pipeline.Session{Listener: "mx", Client: netip.AddrPortFrom(netip.MustParseAddr(ip), 40000)}
}

func mustNew(t testing.TB, c Config) *Filter {
	t.Helper()
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// connect runs Connect and checks the reply: "" for a pass.
func connect(t *testing.T, f *Filter, s *pipeline.Session, want string) {
	t.Helper()
	v := f.Connect(context.Background(), s)
	switch {
	case want == "" && v.Action != pipeline.Continue:
		t.Errorf("%s refused: %s (%s)", s.Client.Addr(), v.Reply.String(), v.Reason)
	case want != "" && (v.Reply.String() != want || v.Action != pipeline.Tempfail || !v.Reply.Close):
		t.Errorf("%s: %v %q close %v (%s), want %q", s.Client.Addr(), v.Action, v.Reply.String(), v.Reply.Close, v.Reason, want)
	}
}

// idle checks that every count is back to zero.
func idle(t *testing.T, f *Filter) {
	t.Helper()
	f.n.mu.Lock()
	left := len(f.n.perIP)
	f.n.mu.Unlock()
	if f.Current() != 0 || left != 0 {
		t.Errorf("after every disconnect: total %d, %d clients counted", f.Current(), left)
	}
}

func exemptNets(t *testing.T, trusted ...string) func(netip.Addr, string) bool {
	var ps []netip.Prefix
	for _, n := range trusted {
		ps = append(ps, netip.MustParsePrefix(n))
	}
	a, err := access.New(access.Config{Trusted: ps})
	if err != nil {
		t.Fatal(err)
	}
	return a.Allowed
}

func TestTotalLimit(t *testing.T) {
	f := mustNew(t, Config{MaxConnections: 2, Exempt: exemptNets(t, "10.0.0.0/8")})
	a, b, c := session("192.0.2.1"), session("10.0.0.1"), session("10.0.0.2")
	connect(t, f, a, "")
	connect(t, f, b, "")
	connect(t, f, c, tooManyTotal) // exempt clients too: it protects the process
	if f.Current() != 3 {
		t.Errorf("Current = %d, want 3 (the refused one is open until it disconnects)", f.Current())
	}
	f.Disconnect(c)
	f.Disconnect(a)
	connect(t, f, c, "")
	f.Disconnect(b)
	f.Disconnect(c)
	idle(t, f)
}

func TestPerIPLimit(t *testing.T) {
	f := mustNew(t, Config{MaxPerIP: 2, Exempt: exemptNets(t, "10.0.0.0/8")})
	var ss []*pipeline.Session
	for range 2 {
		s := session("192.0.2.1")
		connect(t, f, s, "")
		ss = append(ss, s)
	}
	refused := session("::ffff:192.0.2.1") // the same client, IPv4-mapped
	connect(t, f, refused, tooManyIP)
	connect(t, f, session("192.0.2.2"), "") // another client
	for range 5 {
		connect(t, f, session("10.0.0.1"), "") // exempt
	}
	f.Disconnect(refused)
	f.Disconnect(ss[0])
	again := session("192.0.2.1")
	connect(t, f, again, "")
	f.Disconnect(again)
	f.Disconnect(ss[1])
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if _, ok := f.n.perIP[netip.MustParsePrefix("192.0.2.1/32")]; ok {
		t.Errorf("client still counted after all its sessions ended: %v", f.n.perIP)
	}
}

// Rotating addresses inside one /64 is one client.
func TestIPv6Per64(t *testing.T) {
	clock := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	store := state.NewMemory()
	store.Now = func() time.Time { return clock }
	f := mustNew(t, Config{MaxPerIP: 2, Rate: 3, RateWindow: time.Minute, Store: store})
	connect(t, f, session("2001:db8::1"), "")
	connect(t, f, session("2001:db8::ffff:1"), "")
	connect(t, f, session("2001:db8::2"), tooManyIP)
	connect(t, f, session("2001:db8:0:1::1"), "") // another /64
	if n, _ := store.Incr(context.Background(), "conn:2001:db8::/64", 0, time.Minute); n != 2 {
		t.Errorf("rate counter conn:2001:db8::/64 = %d, want 2", n)
	}
}

func TestRateWindow(t *testing.T) {
	clock := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	store := state.NewMemory()
	store.Now = func() time.Time { return clock }
	f := mustNew(t, Config{Rate: 3, RateWindow: time.Minute, Store: store, Exempt: exemptNets(t, "10.0.0.0/8")})
	for range 3 {
		s := session("192.0.2.1")
		connect(t, f, s, "")
		f.Disconnect(s) // short sessions still count: it is a rate
	}
	connect(t, f, session("192.0.2.1"), tooFast)
	connect(t, f, session("192.0.2.2"), "")
	for range 10 {
		connect(t, f, session("10.0.0.1"), "")
	}
	if _, ok, _ := store.Get(context.Background(), "conn:10.0.0.1"); ok {
		t.Errorf("an exempt client was counted in the store")
	}
	clock = clock.Add(61 * time.Second)
	connect(t, f, session("192.0.2.1"), "")
	if n, _ := store.Incr(context.Background(), "conn:192.0.2.1", 0, time.Minute); n != 1 {
		t.Errorf("rate counter conn:192.0.2.1 = %d after the window, want 1", n)
	}
}

// A store that cannot be reached lets the client in (fails open) and says
// so in the log.
func TestRateStoreDown(t *testing.T) {
	store, err := state.OpenRedis("redis://127.0.0.1:1/0") // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var log bytes.Buffer
	f := mustNew(t, Config{MaxPerIP: 1, Rate: 1, RateWindow: time.Minute, Store: store,
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	s := session("192.0.2.1")
	for i := range 2 {
		v := f.Connect(context.Background(), s)
		if v.Action != pipeline.Continue || !strings.HasPrefix(v.Reason, "rate store unavailable: ") {
			t.Errorf("connection %d with the store down: %v %q", i, v.Action, v.Reason)
		}
		f.Disconnect(s)
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "client=192.0.2.1/32") {
		t.Errorf("log: %q", log.String())
	}
	// The in-process limits still hold.
	connect(t, f, s, "")
	connect(t, f, session("192.0.2.1"), tooManyIP)
}

// Sessions refused by this or a later filter are counted until their
// Disconnect, then not at all; Disconnect never goes below zero.
func TestDisconnectSymmetry(t *testing.T) {
	f := mustNew(t, Config{MaxConnections: 3, MaxPerIP: 2})
	deny, err := access.New(access.Config{Global: access.Rules{Deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}})
	if err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(pipeline.Entry{Filter: f, Mode: pipeline.Enforce}, pipeline.Entry{Filter: deny, Mode: pipeline.Enforce})
	ctx := context.Background()
	for range 100 {
		var ss []*pipeline.Session
		for _, ip := range []string{"198.51.100.1", "198.51.100.1", "198.51.100.1", "192.0.2.1", "192.0.2.2"} {
			s := session(ip)
			p.Connect(ctx, s) // refused by access, per-IP or total limit
			ss = append(ss, s)
		}
		for _, s := range ss {
			p.Disconnect(s)
			p.Disconnect(s) // a second end changes nothing
		}
	}
	p.Disconnect(session("192.0.2.1")) // never connected
	idle(t, f)
	for _, ip := range []string{"198.51.100.9", "192.0.2.1", "192.0.2.1"} {
		if v := f.Connect(ctx, session(ip)); v.Action != pipeline.Continue {
			t.Errorf("%s after the refused sessions ended: %s (%s)", ip, v.Reply.String(), v.Reason)
		}
	}
}

// 1000 clients connect at once, then all leave at once: the limits hold
// under contention and every count returns to zero.
func TestConcurrent(t *testing.T) {
	f := mustNew(t, Config{MaxConnections: 500, MaxPerIP: 20, Rate: 1000000, RateWindow: time.Minute, Store: state.NewMemory()})
	ss := make([]*pipeline.Session, 1000)
	passed := make([]bool, len(ss))
	var wg sync.WaitGroup
	for i := range ss {
		ss[i] = session(fmt.Sprintf("192.0.2.%d", i%8))
		wg.Go(func() { passed[i] = f.Connect(context.Background(), ss[i]).Action == pipeline.Continue })
	}
	wg.Wait()
	accepted := 0
	for _, ok := range passed {
		if ok {
			accepted++
		}
	}
	if f.Current() != 1000 || accepted == 0 || accepted > 8*20 {
		t.Errorf("all connected: Current %d, %d accepted (limit 8 clients × 20)", f.Current(), accepted)
	}
	for _, s := range ss {
		wg.Go(func() { f.Disconnect(s) })
	}
	wg.Wait()
	idle(t, f)
}

// Two gateways sharing a Redis share each client's rate budget.
func TestRateSharedThroughRedis(t *testing.T) {
	url := "redis://" + redistest.Start(t) + "/0"
	var gw [2]*Filter
	for i := range gw {
		store, err := state.OpenRedis(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		gw[i] = mustNew(t, Config{Rate: 3, RateWindow: time.Minute, Store: store})
	}
	connect(t, gw[0], session("192.0.2.1"), "")
	connect(t, gw[1], session("192.0.2.1"), "")
	connect(t, gw[0], session("192.0.2.1"), "")
	connect(t, gw[1], session("192.0.2.1"), tooFast)
	connect(t, gw[0], session("192.0.2.1"), tooFast)
	connect(t, gw[1], session("192.0.2.2"), "")
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{MaxPerIP: -1},
		{Rate: 5, Store: state.NewMemory()},
		{Rate: 5, RateWindow: time.Minute},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func BenchmarkConnectDisconnect(b *testing.B) {
	for _, bc := range []struct {
		name string
		c    Config
	}{
		{"concurrency", Config{MaxConnections: 2000, MaxPerIP: 1000}},
		{"with-rate", Config{MaxConnections: 2000, MaxPerIP: 1000, Rate: 1 << 30, RateWindow: time.Hour, Store: state.NewMemory()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := mustNew(b, bc.c)
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				s := session("192.0.2.1")
				for pb.Next() {
					if v := f.Connect(ctx, s); v.Action != pipeline.Continue {
						b.Fatal(v.Reason)
					}
					f.Disconnect(s)
				}
			})
		})
	}
}

// TestSharedCounters: the filter of a new configuration (after a reload)
// sees the connections the old one counted, and an old session's end is
// taken back from the same counts.
func TestSharedCounters(t *testing.T) {
	n := NewCounters()
	old, err := New(Config{MaxPerIP: 2, Counters: n})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sess := func() *pipeline.Session {
		return &pipeline.Session{Client: netip.MustParseAddrPort("192.0.2.1:4000")}
	}
	a, b := sess(), sess()
	for _, s := range []*pipeline.Session{a, b} {
		if v := old.Connect(ctx, s); v.Action != pipeline.Continue {
			t.Fatalf("connection refused under the limit: %+v", v)
		}
	}
	reloaded, err := New(Config{MaxPerIP: 2, Counters: n})
	if err != nil {
		t.Fatal(err)
	}
	c := sess()
	if v := reloaded.Connect(ctx, c); v.Action != pipeline.Tempfail {
		t.Fatalf("a third connection after a reload was let in: %+v", v)
	}
	reloaded.Disconnect(c)
	old.Disconnect(a)
	d := sess()
	if v := reloaded.Connect(ctx, d); v.Action != pipeline.Continue {
		t.Fatalf("an old session's end was not counted: %+v", v)
	}
	if got := reloaded.Current(); got != 2 {
		t.Errorf("Current = %d, want 2", got)
	}
}
