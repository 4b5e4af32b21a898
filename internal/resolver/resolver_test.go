package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/miekg/dns"

	"mailgate/internal/dnstest"
)

var zone = []string{
	"2.0.0.127.zen.test. 300 IN A 127.0.0.2",
	"example.org. 300 IN MX 20 mx2.example.org.",
	"example.org. 300 IN MX 10 MX1.example.org.",
	`example.org. 300 IN TXT "v=spf1 mx a:host.example.org -all"`,
	`example.org. 300 IN TXT "part one " "part two"`,
	"mx1.example.org. 300 IN A 127.0.0.11",
	"mx2.example.org. 300 IN A 127.0.0.12",
	"host.example.org. 300 IN A 127.0.0.9",
	"host.example.org. 300 IN AAAA ::1",
	"v4only.example.org. 300 IN A 127.0.0.10",
	"www.example.org. 30 IN CNAME alias.example.org.",
	"alias.example.org. 300 IN CNAME host.example.org.",
	"4.0.0.127.in-addr.arpa. 300 IN PTR Mail.Example.org.",
}

// clock is a settable time source for the cache.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newResolver(t testing.TB, c Config, records ...string) (*Resolver, *dnstest.Server, *clock) {
	t.Helper()
	srv := dnstest.New(t, records...)
	if c.Servers == nil {
		c.Servers = []string{srv.Addr()}
	}
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	r.now = clk.now
	return r, srv, clk
}

func dnsErr(t *testing.T, err error) *net.DNSError {
	t.Helper()
	de, ok := err.(*net.DNSError)
	if !ok {
		t.Fatalf("error %v (%T) is not a *net.DNSError", err, err)
	}
	return de
}

func TestAnswers(t *testing.T) {
	r, _, _ := newResolver(t, Config{}, zone...)
	ctx := context.Background()

	if ips, err := r.LookupA(ctx, "2.0.0.127.ZEN.test"); err != nil || !slices.Equal(ips, []netip.Addr{netip.MustParseAddr("127.0.0.2")}) {
		t.Errorf("LookupA = %v, %v", ips, err)
	}
	if ips, err := r.LookupIP(ctx, "host.example.org."); err != nil || len(ips) != 2 ||
		ips[0] != netip.MustParseAddr("127.0.0.9") || ips[1] != netip.MustParseAddr("::1") {
		t.Errorf("LookupIP = %v, %v", ips, err)
	}
	if ips, err := r.LookupIP(ctx, "v4only.example.org"); err != nil || len(ips) != 1 {
		t.Errorf("LookupIP v4only = %v, %v", ips, err)
	}
	if ips, err := r.LookupIPAddr(ctx, "www.example.org"); err != nil || len(ips) != 2 || !ips[0].IP.Equal(net.IPv4(127, 0, 0, 9)) {
		t.Errorf("LookupIPAddr via CNAME chain = %v, %v", ips, err)
	}
	if names, err := r.LookupPTR(ctx, netip.MustParseAddr("127.0.0.4")); err != nil || !slices.Equal(names, []string{"mail.example.org"}) {
		t.Errorf("LookupPTR = %v, %v", names, err)
	}
	if names, err := r.LookupAddr(ctx, "::ffff:127.0.0.4"); err != nil || !slices.Equal(names, []string{"mail.example.org."}) {
		t.Errorf("LookupAddr = %v, %v", names, err)
	}
	txts, err := r.LookupTXT(ctx, "example.org")
	slices.Sort(txts)
	if err != nil || !slices.Equal(txts, []string{"part one part two", "v=spf1 mx a:host.example.org -all"}) {
		t.Errorf("LookupTXT = %q, %v", txts, err)
	}
	mxs, err := r.LookupMX(ctx, "example.org")
	if err != nil || len(mxs) != 2 || *mxs[0] != (net.MX{Host: "mx1.example.org.", Pref: 10}) || mxs[1].Host != "mx2.example.org." {
		t.Errorf("LookupMX = %v, %v", mxs, err)
	}
}

func TestNotFound(t *testing.T) {
	r, _, _ := newResolver(t, Config{}, zone...)
	ctx := context.Background()
	for _, tc := range []struct{ name, what string }{
		{"3.0.0.127.zen.test", "NXDOMAIN"},
		{"v4only.example.org", "NODATA"}, // has A, asked for AAAA below
	} {
		var err error
		if tc.what == "NODATA" {
			_, err = r.lookup(ctx, tc.name, dns.TypeAAAA)
		} else {
			_, err = r.LookupA(ctx, tc.name)
		}
		de := dnsErr(t, err)
		if !de.IsNotFound || de.IsTemporary || de.IsTimeout || de.Name != tc.name || de.Err != "no such host" {
			t.Errorf("%s: %+v", tc.what, de)
		}
	}
	if _, err := r.LookupIP(ctx, "nowhere.example.org"); !dnsErr(t, err).IsNotFound {
		t.Errorf("LookupIP nowhere: %v", err)
	}
	if _, err := r.LookupMX(ctx, "host.example.org"); !dnsErr(t, err).IsNotFound {
		t.Errorf("LookupMX NODATA: %v", err)
	}

	// Invalid names are refused without asking.
	before := r.Stats()
	for _, name := range []string{"", "a..b", fmt.Sprintf("%0250d.test", 0), "-bad\\ name"} {
		if _, err := r.LookupA(ctx, name); !dnsErr(t, err).IsNotFound {
			t.Errorf("invalid %q: %v", name, err)
		}
	}
	if r.Stats() != before {
		t.Errorf("invalid names reached the cache/network: %+v → %+v", before, r.Stats())
	}
	if _, err := r.LookupAddr(ctx, "not-an-ip"); err == nil {
		t.Error("LookupAddr accepted a non-IP")
	}
}

func TestCache(t *testing.T) {
	r, srv, clk := newResolver(t, Config{MaxTTL: 200 * time.Second}, zone...)
	ctx := context.Background()
	lookup := func(name string) {
		t.Helper()
		if _, err := r.LookupA(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	const name = "2.0.0.127.zen.test."
	lookup(name)
	lookup("2.0.0.127.Zen.Test")
	if n := srv.Queries(name, dns.TypeA); n != 1 {
		t.Errorf("after two lookups: %d queries, want 1", n)
	}
	if s := r.Stats(); s.Hits != 1 || s.Misses != 1 {
		t.Errorf("Stats = %+v", s)
	}

	// TTL 300, capped by MaxTTL at 200s.
	clk.add(199 * time.Second)
	lookup(name)
	clk.add(2 * time.Second)
	lookup(name)
	if n := srv.Queries(name, dns.TypeA); n != 2 {
		t.Errorf("after MaxTTL: %d queries, want 2", n)
	}

	// A CNAME chain lives as long as its shortest link (30s).
	lookup("www.example.org")
	clk.add(31 * time.Second)
	lookup("www.example.org")
	if n := srv.Queries("www.example.org", dns.TypeA); n != 2 {
		t.Errorf("CNAME chain: %d queries, want 2", n)
	}

	// A changed record is seen once the old one expires.
	srv.Remove(name, dns.TypeA)
	srv.Add(name + " 300 IN A 127.0.0.4")
	clk.add(201 * time.Second)
	if ips, _ := r.LookupA(ctx, name); len(ips) != 1 || ips[0] != netip.MustParseAddr("127.0.0.4") {
		t.Errorf("after expiry: %v", ips)
	}
}

func TestNegativeCache(t *testing.T) {
	r, srv, clk := newResolver(t, Config{}, zone...)
	ctx := context.Background()
	const name = "3.0.0.127.zen.test."
	for range 3 {
		if _, err := r.LookupA(ctx, name); !dnsErr(t, err).IsNotFound {
			t.Fatal(err)
		}
	}
	if n := srv.Queries(name, dns.TypeA); n != 1 {
		t.Errorf("%d queries, want 1", n)
	}
	// dnstest's SOA has TTL and MINIMUM 60.
	srv.Add(name + " 300 IN A 127.0.0.3")
	clk.add(59 * time.Second)
	if _, err := r.LookupA(ctx, name); err == nil {
		t.Error("negative answer expired early")
	}
	clk.add(2 * time.Second)
	if ips, err := r.LookupA(ctx, name); err != nil || len(ips) != 1 {
		t.Errorf("after negative TTL: %v, %v", ips, err)
	}
}

func TestSingleflight(t *testing.T) {
	r, srv, _ := newResolver(t, Config{Timeout: 300 * time.Millisecond}, zone...)
	srv.Blackhole("slow.test") // keeps the first query in flight while the rest arrive
	const n = 50
	var wg sync.WaitGroup
	var timeouts atomic.Int32
	for range n {
		wg.Go(func() {
			_, err := r.LookupA(context.Background(), "x.slow.test")
			if de, ok := err.(*net.DNSError); ok && de.IsTimeout {
				timeouts.Add(1)
			}
		})
	}
	wg.Wait()
	if q := srv.Queries("x.slow.test", dns.TypeA); q != 1 {
		t.Errorf("%d queries at the server, want 1", q)
	}
	if timeouts.Load() != n {
		t.Errorf("%d of %d callers got a timeout", timeouts.Load(), n)
	}

	// And for an answered name: every caller gets the answer, one query.
	start := make(chan struct{})
	var ok atomic.Int32
	for range n {
		wg.Go(func() {
			<-start
			if ips, err := r.LookupA(context.Background(), "host.example.org"); err == nil && len(ips) == 1 {
				ok.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if q := srv.Queries("host.example.org", dns.TypeA); q != 1 || ok.Load() != n {
		t.Errorf("%d queries, %d answers", q, ok.Load())
	}
}

func TestFailures(t *testing.T) {
	r, srv, clk := newResolver(t, Config{Timeout: 300 * time.Millisecond}, zone...)
	srv.Blackhole("dead.test")
	srv.ServFail("broken.test")
	ctx := context.Background()

	// A dead zone costs one timeout, then a cached error for 5s.
	start := time.Now()
	_, err := r.LookupA(ctx, "2.0.0.127.dead.test")
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("blackholed lookup took %v", d)
	}
	if de := dnsErr(t, err); !de.IsTimeout || !de.IsTemporary || de.IsNotFound {
		t.Errorf("blackholed: %+v", de)
	}
	start = time.Now()
	if _, err := r.LookupA(ctx, "2.0.0.127.dead.test"); !dnsErr(t, err).IsTimeout || time.Since(start) > 50*time.Millisecond {
		t.Errorf("cached timeout: %v after %v", err, time.Since(start))
	}
	clk.add(6 * time.Second)
	r.LookupA(ctx, "2.0.0.127.dead.test")
	if q := srv.Queries("2.0.0.127.dead.test", dns.TypeA); q != 2 {
		t.Errorf("dead zone: %d queries, want 2 (error cached 5s)", q)
	}

	_, err = r.LookupTXT(ctx, "broken.test")
	if de := dnsErr(t, err); !de.IsTemporary || de.IsTimeout || de.IsNotFound {
		t.Errorf("SERVFAIL: %+v", de)
	}
	if s := r.Stats(); s.Errors != 3 {
		t.Errorf("Stats.Errors = %d, want 3", s.Errors)
	}
}

func TestCallerDeadline(t *testing.T) {
	r, srv, _ := newResolver(t, Config{Timeout: 2 * time.Second}, zone...)
	srv.Blackhole("dead.test")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.LookupA(ctx, "x.dead.test")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("returned after %v, caller's deadline was 100ms", d)
	}
	if de := dnsErr(t, err); !de.IsTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error: %+v", de)
	}
}

func TestServerFallbackAndTCP(t *testing.T) {
	var big []string
	for i := range 40 {
		big = append(big, fmt.Sprintf(`big.test. 300 IN TXT "%060d"`, i))
	}
	srv := dnstest.New(t, big...)
	// Nothing listens on the first server: the next one is asked.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	r, err := New(Config{Servers: []string{dead, srv.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Too big for UDP: truncated, then asked again over TCP.
	txts, err := r.LookupTXT(context.Background(), "big.test")
	if err != nil || len(txts) != 40 {
		t.Fatalf("LookupTXT = %d records, %v", len(txts), err)
	}
}

func TestSPF(t *testing.T) {
	r, _, _ := newResolver(t, Config{}, zone...)
	for _, tc := range []struct {
		ip   string
		want spf.Result
	}{
		{"127.0.0.11", spf.Pass}, // mx
		{"127.0.0.9", spf.Pass},  // a:host.example.org
		{"127.0.0.99", spf.Fail}, // -all
	} {
		res, err := spf.CheckHostWithSender(net.ParseIP(tc.ip), "mail.example.org", "user@example.org",
			spf.WithResolver(r), spf.WithContext(context.Background()))
		if res != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.ip, res, err, tc.want)
		}
	}
	// No SPF record: none.
	if res, err := spf.CheckHostWithSender(net.ParseIP("127.0.0.9"), "x", "user@nospf.example.org", spf.WithResolver(r)); res != spf.None {
		t.Errorf("no record: %v (%v)", res, err)
	}
}

func BenchmarkCachedLookup(b *testing.B) {
	r, _, _ := newResolver(b, Config{}, zone...)
	ctx := context.Background()
	if _, err := r.LookupA(ctx, "2.0.0.127.zen.test."); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupA(ctx, "2.0.0.127.zen.test."); err != nil {
			b.Fatal(err)
		}
	}
}
