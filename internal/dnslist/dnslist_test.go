package dnslist

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func mustZone(t testing.TB, codes []string, mask uint32) *Zone {
	t.Helper()
	z, err := NewZone("multi.test", codes, mask)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// TestJudge: what an answer means, RFC 5782 and the zone's filters.
func TestJudge(t *testing.T) {
	notFound := &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}
	timeout := &net.DNSError{Err: "i/o timeout", Name: "x", IsTimeout: true}
	servfail := &net.DNSError{Err: "server misbehaving", Name: "x"}
	for _, tc := range []struct {
		name    string
		codes   []string
		mask    uint32
		addrs   []netip.Addr
		err     error
		listed  bool
		got     string // the codes that count, joined
		ignored string
		fail    string
	}{
		{name: "NXDOMAIN is not listed", err: notFound},
		{name: "wrapped NXDOMAIN", err: fmt.Errorf("lookup: %w", notFound)},
		{name: "no addresses", addrs: nil},
		{name: "timeout", err: timeout, fail: "timeout"},
		{name: "SERVFAIL", err: servfail, fail: "server misbehaving"},
		{name: "other error", err: errors.New("no servers"), fail: "no servers"},
		{name: "any code", addrs: addrs("127.0.0.2"), listed: true, got: "127.0.0.2"},
		{name: "two codes", addrs: addrs("127.0.0.2", "127.0.0.4"), listed: true, got: "127.0.0.2,127.0.0.4"},
		{name: "mapped code unmapped", addrs: addrs("::ffff:127.0.0.2"), listed: true, got: "127.0.0.2"},
		{name: "outside 127/8", addrs: addrs("127.0.0.2", "10.0.0.1"), fail: "invalid answer 10.0.0.1"},
		{name: "IPv6", addrs: addrs("::1"), fail: "invalid answer ::1"},
		{name: "operator refuses resolver", addrs: addrs("127.255.255.254"), fail: "resolver blocked by the list operator (127.255.255.254)"},
		{name: "refusal beside a code", addrs: addrs("127.0.0.2", "127.255.255.252"), fail: "resolver blocked by the list operator (127.255.255.252)"},
		{name: "127.0.0.1 never a listing", addrs: addrs("127.0.0.1"), fail: "resolver blocked by the list operator (127.0.0.1)"},
		{name: "127.0.0.1 beside a code", addrs: addrs("127.0.0.2", "127.0.0.1"), fail: "resolver blocked by the list operator (127.0.0.1)"},
		{name: "127.0.0.1 even if configured", codes: []string{"127.0.0.1-127.0.0.3"}, addrs: addrs("127.0.0.1"), fail: "resolver blocked by the list operator (127.0.0.1)"},
		{name: "127.254.255.255 is a code", addrs: addrs("127.254.255.255"), listed: true, got: "127.254.255.255"},
		{name: "code filtered out", codes: []string{"127.0.0.2-127.0.0.4", "127.0.0.9"}, addrs: addrs("127.0.0.10", "127.0.0.11"), ignored: "127.0.0.10,127.0.0.11"},
		{name: "code range hit", codes: []string{"127.0.0.2-127.0.0.4", "127.0.0.9"}, addrs: addrs("127.0.0.10", "127.0.0.4"), listed: true, got: "127.0.0.4", ignored: "127.0.0.10"},
		{name: "single code hit", codes: []string{"127.0.0.2-127.0.0.4", "127.0.0.9"}, addrs: addrs("127.0.0.9"), listed: true, got: "127.0.0.9"},
		{name: "mask miss", mask: 8, addrs: addrs("127.0.0.4"), ignored: "127.0.0.4"},
		{name: "mask hit", mask: 8 | 16, addrs: addrs("127.0.0.12"), listed: true, got: "127.0.0.12"},
		{name: "mask and codes", codes: []string{"127.0.0.8-127.0.0.15"}, mask: 2, addrs: addrs("127.0.0.10", "127.0.0.8", "127.0.0.2"), listed: true, got: "127.0.0.10", ignored: "127.0.0.8,127.0.0.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustZone(t, tc.codes, tc.mask).Judge(tc.addrs, tc.err)
			if a.Listed != tc.listed || join(a.Codes) != tc.got || join(a.Ignored) != tc.ignored || a.Err != tc.fail {
				t.Errorf("got listed %v codes %q ignored %q err %q\nwant listed %v codes %q ignored %q err %q",
					a.Listed, join(a.Codes), join(a.Ignored), a.Err, tc.listed, tc.got, tc.ignored, tc.fail)
			}
			if a.Err != "" && (a.Listed || a.Codes != nil || a.Ignored != nil) {
				t.Errorf("an error that also says something: %+v", a)
			}
		})
	}
}

func join(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func TestNewZone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		zone  string
		codes []string
		mask  uint32
		err   string // "" : valid
	}{
		{name: "plain", zone: "zen.test"},
		{name: "case and dot", zone: "Zen.Test."},
		{name: "underscore and hyphen", zone: "multi_list-1.test"},
		{name: "codes", zone: "zen.test", codes: []string{"127.0.0.2", " 127.0.0.4 - 127.0.0.7 ", "127.0.0.9-127.0.0.9"}, mask: 0xff},
		{name: "mask on the last three octets", zone: "zen.test", mask: 0x00ffffff},
		{name: "empty", zone: "", err: "not a valid DNS name"},
		{name: "only a dot", zone: ".", err: "not a valid DNS name"},
		{name: "empty label", zone: "zen..test", err: "not a valid DNS name"},
		{name: "space", zone: "zen test", err: "not a valid DNS name"},
		{name: "leading hyphen", zone: "-zen.test", err: "not a valid DNS name"},
		{name: "trailing hyphen", zone: "zen-.test", err: "not a valid DNS name"},
		{name: "long label", zone: strings.Repeat("a", 64) + ".test", err: "not a valid DNS name"},
		{name: "no room for IPv6", zone: strings.Repeat("a23456789.", 19) + "test", err: "not a valid DNS name"},
		{name: "mask on 127", zone: "zen.test", mask: 0x7f000000, err: "mask 0x7f000000 covers the first octet (127)"},
		{name: "code not an address", zone: "zen.test", codes: []string{"two"}, err: `code "two": want 127.0.0.0/8 addresses, or a range of them`},
		{name: "code outside 127/8", zone: "zen.test", codes: []string{"10.0.0.2"}, err: `code "10.0.0.2": want 127.0.0.0/8 addresses, or a range of them`},
		{name: "range end outside", zone: "zen.test", codes: []string{"127.0.0.2-128.0.0.1"}, err: `code "127.0.0.2-128.0.0.1": want 127.0.0.0/8 addresses, or a range of them`},
		{name: "IPv6 code", zone: "zen.test", codes: []string{"::1"}, err: `code "::1": want 127.0.0.0/8 addresses, or a range of them`},
		{name: "mapped code", zone: "zen.test", codes: []string{"::ffff:127.0.0.2"}, err: `code "::ffff:127.0.0.2": want 127.0.0.0/8 addresses, or a range of them`},
		{name: "open range", zone: "zen.test", codes: []string{"127.0.0.2-"}, err: `code "127.0.0.2-": want 127.0.0.0/8 addresses, or a range of them`},
		{name: "three ends", zone: "zen.test", codes: []string{"127.0.0.2-127.0.0.3-127.0.0.4"}, err: `code "127.0.0.2-127.0.0.3-127.0.0.4": want 127.0.0.0/8 addresses, or a range of them`},
		{name: "backwards", zone: "zen.test", codes: []string{"127.0.0.11-127.0.0.2"}, err: `code range "127.0.0.11-127.0.0.2" runs backwards`},
	} {
		z, err := NewZone(tc.zone, tc.codes, tc.mask)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.err != "" && err == nil:
			t.Errorf("%s: accepted", tc.name)
		case tc.err != "" && err.Error() != tc.err:
			t.Errorf("%s: error %q, want %q", tc.name, err, tc.err)
		case tc.err == "" && (z.Name() != strings.ToLower(strings.TrimSuffix(tc.zone, ".")) || z.Stats().Zone != z.Name()):
			t.Errorf("%s: name %q, stats %+v", tc.name, z.Name(), z.Stats())
		}
	}
}

// TestValidName: the longest zone still leaves room for an IPv6 query.
func TestValidName(t *testing.T) {
	longest := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 61) // 189 octets
	if !ValidName(longest) || ValidName(longest+"c") {
		t.Errorf("the longest valid zone is not %d octets", len(longest))
	}
	if q := strings.Repeat("f.", 32) + longest; len(q) != 253 {
		t.Errorf("an IPv6 query under the longest zone is %d octets", len(q))
	}
	if ValidName("Zen.test") || ValidName("zen.test.") {
		t.Error("ValidName takes names as NewZone leaves them: lower case, no trailing dot")
	}
}

// TestRecord: the counters, also when many queries finish at once.
func TestRecord(t *testing.T) {
	z := mustZone(t, nil, 0)
	listed := z.Judge(addrs("127.0.0.2"), nil)
	clean := z.Judge(nil, &net.DNSError{IsNotFound: true})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			z.Record(listed, time.Millisecond)
			z.Record(clean, time.Millisecond)
			z.Record(Answer{Err: fmt.Sprint("error ", i%2)}, 2*time.Millisecond)
			_ = z.Stats()
		})
	}
	wg.Wait()
	z.Record(Answer{Err: "timeout"}, 0)
	want := Stats{Zone: "multi.test", Queries: 151, Listed: 50, Errors: 51, LastError: "timeout", LatencySum: 200 * time.Millisecond}
	if got := z.Stats(); got != want {
		t.Errorf("stats %+v\nwant  %+v", got, want)
	}
}

// FuzzParseCodes: whatever a configuration says, the parser does not
// panic, and what it accepts is a range of 127.0.0.0/8 that a zone with
// only that range counts exactly.
func FuzzParseCodes(f *testing.F) {
	for _, s := range []string{"127.0.0.2", "127.0.0.2-127.0.0.11", " 127.0.0.4 - 127.0.0.7 ", "127.0.0.11-127.0.0.2",
		"10.0.0.2", "::1", "::ffff:127.0.0.2", "127.0.0.2-", "-", "", "127.0.0.0-127.255.255.255", "127.0.0.2-127.0.0.3-127.0.0.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseCodes(s)
		if err != nil {
			if _, zerr := NewZone("zen.test", []string{s}, 0); zerr == nil || zerr.Error() != err.Error() {
				t.Fatalf("NewZone(%q): %v, parseCodes: %v", s, zerr, err)
			}
			return
		}
		if r.lo>>24 != 127 || r.hi>>24 != 127 || r.lo > r.hi {
			t.Fatalf("%q: accepted %#x-%#x", s, r.lo, r.hi)
		}
		lo, hi := addr(r.lo), addr(r.hi)
		if again, err := parseCodes(lo.String() + "-" + hi.String()); err != nil || again != r {
			t.Fatalf("%q: %v-%v reads back as %#x-%#x, %v", s, lo, hi, again.lo, again.hi, err)
		}
		z, err := NewZone("zen.test", []string{s}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []uint32{r.lo, r.hi, r.lo + (r.hi-r.lo)/2} {
			if !z.counts(c) {
				t.Fatalf("%q: %v not counted", s, addr(c))
			}
		}
		for _, c := range []uint32{r.lo - 1, r.hi + 1} {
			if c>>24 == 127 && z.counts(c) {
				t.Fatalf("%q: %v counted", s, addr(c))
			}
		}
		// Judge agrees, apart from the codes that are never listings.
		a := z.Judge([]netip.Addr{lo, hi}, nil)
		if never := slices.ContainsFunc([]netip.Addr{lo, hi}, func(a netip.Addr) bool { return a == noListing || refusedNet.Contains(a) }); never {
			if a.Err == "" || a.Listed {
				t.Fatalf("%q: %+v", s, a)
			}
		} else if !a.Listed || len(a.Codes) != 2 || a.Ignored != nil {
			t.Fatalf("%q: %+v", s, a)
		}
	})
}

func addr(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}
