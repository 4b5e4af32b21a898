package greylist

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"mailgate/internal/mailaddr"
	"mailgate/internal/redistest"
	"mailgate/internal/state"
	"mailgate/pipeline"
)

const (
	wantGrey = "451 4.7.1 Greylisted, please try again later"
	wantTemp = "451 4.3.0 Temporary local problem, try again later"
)

// attempt is one RCPT TO from a client; the clock is advanced first.
type attempt struct {
	after    time.Duration
	ip       string
	from     string // "" is the null sender <>
	rcpt     string
	spf      string // domain SPF passed for; "" none
	authUser string
	want     string // the reply, "" for no refusal
	reason   string // a substring of the verdict's reason, optional
}

func addr(t *testing.T, s string) pipeline.Address {
	t.Helper()
	a, err := mailaddr.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return a
}

// run makes the attempt and checks its verdict.
func run(t *testing.T, ctx context.Context, f *Filter, i int, a attempt) {
	t.Helper()
	s := &pipeline.Session{ID: "s1", Client: netip.AddrPortFrom(netip.MustParseAddr(a.ip), 40000), AuthUser: a.authUser}
	tr := &pipeline.Transaction{From: addr(t, a.from)}
	if a.spf != "" {
		tr.AuthResults = []pipeline.AuthResult{{Method: "spf", Result: "pass", Domain: a.spf}}
	}
	v := f.Rcpt(ctx, s, tr, addr(t, a.rcpt))
	got := ""
	if v.Action != pipeline.Continue {
		got = v.Reply.String()
	}
	if got != a.want {
		t.Errorf("attempt %d (%s %s → %s): got %q (%s), want %q", i, a.ip, a.from, a.rcpt, got, v.Reason, a.want)
	}
	if !strings.Contains(v.Reason, a.reason) {
		t.Errorf("attempt %d: reason %q does not mention %q", i, v.Reason, a.reason)
	}
}

func TestGreylist(t *testing.T) {
	const (
		alice = "alice@example.org"
		bob   = "bob@example.com"
		carol = "carol@example.com"
	)
	tests := []struct {
		name     string
		spfKey   bool
		attempts []attempt
	}{
		{"first attempt, early retry, retry after the delay", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, "new triplet"},
			{time.Minute, "192.0.2.1", alice, bob, "", "", wantGrey, "retry too early: 1m0s of 5m0s"},
			{5 * time.Minute, "192.0.2.1", alice, bob, "", "", "", "greylisting passed after 6m0s"},
		}},
		{"a passed network is remembered for pass_ttl", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, ""},
			{6 * time.Minute, "192.0.2.1", alice, bob, "", "", "", "passed after"},
			{time.Hour, "192.0.2.77", "dave@example.net", carol, "", "", "", "passed greylisting before"},
			{30 * 24 * time.Hour, "192.0.2.1", "", carol, "", "", "", "passed greylisting before"},
			// The mail on day 30 renewed the pass: 35 days later still known.
			{35 * 24 * time.Hour, "192.0.2.1", "frank@example.net", carol, "", "", "", "passed greylisting before"},
			// Silent for longer than pass_ttl: forgotten.
			{37 * 24 * time.Hour, "192.0.2.1", "erin@example.net", carol, "", "", wantGrey, "new triplet"},
		}},
		{"another /24 is greylisted", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, ""},
			{6 * time.Minute, "192.0.2.1", alice, bob, "", "", "", ""},
			{0, "192.0.3.1", alice, bob, "", "", wantGrey, "192.0.3.0/24"},
		}},
		{"a retry from the same /24 passes", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, ""},
			{6 * time.Minute, "192.0.2.200", alice, bob, "", "", "", ""},
		}},
		{"IPv6 clients are grouped per /64", false, []attempt{
			{0, "2001:db8::1", alice, bob, "", "", wantGrey, "2001:db8::/64"},
			{6 * time.Minute, "2001:db8::ffff:1", alice, bob, "", "", "", "passed after"},
			{0, "2001:db8:0:1::1", alice, bob, "", "", wantGrey, "new triplet"},
		}},
		{"IPv4-mapped addresses are IPv4", false, []attempt{
			{0, "::ffff:192.0.2.1", alice, bob, "", "", wantGrey, "192.0.2.0/24"},
			{6 * time.Minute, "192.0.2.9", alice, bob, "", "", "", ""},
		}},
		{"addresses are compared without case", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, ""},
			{6 * time.Minute, "192.0.2.1", "ALICE@Example.ORG", "Bob@EXAMPLE.com", "", "", "", "passed after"},
		}},
		{"the triplet is sender and recipient", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, ""},
			{6 * time.Minute, "192.0.2.1", alice, carol, "", "", wantGrey, "new triplet"},
			{0, "192.0.2.1", "", bob, "", "", wantGrey, "new triplet"},
		}},
		{"a triplet not retried within expire starts over", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, "new triplet"},
			{4*time.Hour + time.Minute, "192.0.2.1", alice, bob, "", "", wantGrey, "new triplet"},
			{6 * time.Minute, "192.0.2.1", alice, bob, "", "", "", "passed after"},
		}},
		{"a retry late but within expire passes", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, ""},
			{4*time.Hour - time.Minute, "192.0.2.1", alice, bob, "", "", "", "passed after"},
		}},
		{"SPF-domain keying: a retry from another network passes", true, []attempt{
			{0, "192.0.2.1", alice, bob, "example.org", "", wantGrey, "spf:example.org"},
			{6 * time.Minute, "203.0.113.9", alice, bob, "example.org", "", "", "passed after"},
			{time.Hour, "198.51.100.1", "news@example.org", carol, "example.org", "", "", "passed greylisting before (spf:example.org)"},
			// Without SPF pass the network is the key.
			{0, "198.51.100.1", "news@example.org", carol, "", "", wantGrey, "198.51.100.0/24"},
		}},
		{"without SPF-domain keying the network counts", false, []attempt{
			{0, "192.0.2.1", alice, bob, "example.org", "", wantGrey, "192.0.2.0/24"},
			{6 * time.Minute, "203.0.113.9", alice, bob, "example.org", "", wantGrey, "new triplet"},
		}},
		{"authenticated clients are never greylisted", false, []attempt{
			{0, "192.0.2.1", alice, bob, "", "alice", "", "authenticated"},
			{0, "192.0.2.1", alice, bob, "", "", wantGrey, "new triplet"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
			clock := func() time.Time { return now }
			store := state.NewMemory()
			store.Now = clock
			f, err := New(Config{Store: store, Now: clock, KeyOnSPFDomain: tc.spfKey})
			if err != nil {
				t.Fatal(err)
			}
			for i, a := range tc.attempts {
				now = now.Add(a.after)
				run(t, context.Background(), f, i, a)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	store := state.NewMemory()
	bad := []Config{
		{},
		{Store: store, Delay: time.Hour, Expire: time.Minute},
		{Store: store, NetmaskV4: 33},
		{Store: store, NetmaskV6: 129},
		{Store: store, OnError: "ignore"},
	}
	for _, c := range bad {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	f, err := New(Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	c := f.c
	if c.Delay != 5*time.Minute || c.Expire != 4*time.Hour || c.PassTTL != 36*24*time.Hour ||
		c.NetmaskV4 != 24 || c.NetmaskV6 != 64 || c.OnError != "tempfail" {
		t.Errorf("defaults: %+v", c)
	}
}

// TestStoreDown stops a real Redis under the filter: SPEC §5's "Redis down
// → tempfail greylist decisions or fall back as configured".
func TestStoreDown(t *testing.T) {
	r := redistest.StartProcess(t)
	store, err := state.OpenRedis(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tempfail, err := New(Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	accept, err := New(Config{Store: store, OnError: "accept"})
	if err != nil {
		t.Fatal(err)
	}
	a := attempt{ip: "192.0.2.1", from: "alice@example.org", rcpt: "bob@example.com"}
	// Up: greylisting works.
	a.want, a.reason = wantGrey, "new triplet"
	run(t, ctx, tempfail, 0, a)

	r.Stop()
	a.want, a.reason = wantTemp, "state store unavailable"
	run(t, ctx, tempfail, 1, a)
	a.want, a.reason = "", "state store unavailable, greylisting skipped"
	run(t, ctx, accept, 2, a)

	// Back (empty): greylisting resumes.
	r.Start()
	a.want, a.reason = wantGrey, "new triplet"
	run(t, ctx, tempfail, 3, a)
}

// TestTwoGateways: two gateways behind two MX records share one Redis; a
// client wantGrey by one is accepted on retry by the other.
func TestTwoGateways(t *testing.T) {
	url := "redis://" + redistest.Start(t) + "/0"
	now := time.Now()
	clock := func() time.Time { return now }
	gateway := func() *Filter {
		store, err := state.OpenRedis(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		f, err := New(Config{Store: store, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	a, b := gateway(), gateway()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	try := attempt{ip: "192.0.2.1", from: "alice@example.org", rcpt: "bob@example.com"}
	try.want = wantGrey
	run(t, ctx, a, 0, try)
	now = now.Add(time.Minute)
	try.reason = "retry too early"
	run(t, ctx, b, 1, try)
	now = now.Add(5 * time.Minute)
	try.ip, try.want, try.reason = "192.0.2.2", "", "passed after 6m0s"
	run(t, ctx, b, 2, try)
	// Gateway A now knows the client too.
	try.from, try.reason = "other@example.org", "passed greylisting before"
	run(t, ctx, a, 3, try)
}

// countingStore counts the store calls and can be switched off.
type countingStore struct {
	state.Store
	calls int
	down  bool
}

func (c *countingStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	c.calls++
	if c.down {
		return nil, false, state.ErrUnavailable
	}
	return c.Store.Get(ctx, key)
}

// TestPassCache: a client known to have passed costs no store call per
// message for passCacheTTL, then the store is asked again.
func TestPassCache(t *testing.T) {
	store := &countingStore{Store: state.NewMemory()}
	now := time.Now()
	f, err := New(Config{Store: store, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := attempt{ip: "192.0.2.1", from: "alice@example.org", rcpt: "bob@example.com", want: wantGrey}
	run(t, ctx, f, 0, a)
	now = now.Add(6 * time.Minute)
	a.want, a.reason = "", "passed after"
	run(t, ctx, f, 1, a)

	calls := store.calls
	store.down = true
	a.from, a.reason = "carol@example.org", "passed greylisting before"
	for i := 2; i < 12; i++ {
		run(t, ctx, f, i, a)
	}
	if store.calls != calls {
		t.Errorf("a cached pass asked the store %d times", store.calls-calls)
	}
	now = now.Add(passCacheTTL + time.Second)
	a.want, a.reason = wantTemp, "state store unavailable"
	run(t, ctx, f, 12, a)
}

// TestPassRenewed: pass_ttl counts from the client's last mail: a client
// that keeps sending is never greylisted again.
func TestPassRenewed(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	store := state.NewMemory()
	store.Now = clock
	f, err := New(Config{Store: store, PassTTL: 3 * 24 * time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := attempt{ip: "192.0.2.1", from: "alice@example.org", rcpt: "bob@example.com", want: wantGrey}
	run(t, ctx, f, 0, a)
	now = now.Add(6 * time.Minute)
	a.want = ""
	run(t, ctx, f, 1, a)
	// Mail every two days for ten days: each one renews the pass.
	for i := 2; i < 7; i++ {
		now = now.Add(48 * time.Hour)
		a.reason = "passed greylisting before"
		run(t, ctx, f, i, a)
	}
	// Silent for longer than pass_ttl: greylisted again.
	now = now.Add(4 * 24 * time.Hour)
	a.want, a.reason = wantGrey, "new triplet"
	run(t, ctx, f, 7, a)
}
