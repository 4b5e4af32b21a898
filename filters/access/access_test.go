package access

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"mailgate/filters/relay"
	"mailgate/internal/mailaddr"
	"mailgate/pipeline"
)

func nets(s ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, x := range s {
		ps = append(ps, netip.MustParsePrefix(x))
	}
	return ps
}

func session(listener, ip string) *pipeline.Session {
	return &pipeline.Session{Listener: listener, Client: netip.AddrPortFrom(netip.MustParseAddr(ip), 40000)}
}

func TestAccess(t *testing.T) {
	f, err := New(Config{
		Global: Rules{
			Allow: nets("192.0.2.10/32", "2001:db8:1::/48"),
			Deny:  nets("192.0.2.0/24", "2001:db8::/32", "203.0.113.0/24"),
		},
		Listeners: map[string]Rules{
			"mx":         {Allow: nets("203.0.113.7/32"), Deny: nets("198.51.100.0/25")},
			"submission": {Deny: nets("0.0.0.0/0")},
		},
		Trusted: nets("10.0.0.0/8", "::ffff:172.16.0.0/108"),
	})
	if err != nil {
		t.Fatal(err)
	}
	const deny = "554 5.7.1 Access denied"
	cases := []struct {
		listener, ip string
		action       pipeline.Action
		reason       string
	}{
		{"mx", "198.18.0.1", pipeline.Continue, ""},
		{"mx", "192.0.2.10", pipeline.Accept, "global allow network 192.0.2.10/32"}, // allow wins over the /24 deny
		{"mx", "::ffff:192.0.2.10", pipeline.Accept, "global allow network 192.0.2.10/32"},
		{"mx", "192.0.2.11", pipeline.Reject, "global deny network 192.0.2.0/24"},
		{"mx", "2001:db8:1:2::1", pipeline.Accept, "global allow network 2001:db8:1::/48"},
		{"mx", "2001:db8:2::1", pipeline.Reject, "global deny network 2001:db8::/32"},
		{"mx", "203.0.113.7", pipeline.Accept, "listener mx allow network 203.0.113.7/32"},
		{"submission", "203.0.113.7", pipeline.Reject, "global deny network 203.0.113.0/24"}, // mx's allow is mx's only
		{"mx", "198.51.100.1", pipeline.Reject, "listener mx deny network 198.51.100.0/25"},
		{"mx", "198.51.100.200", pipeline.Continue, ""},
		{"submission", "198.51.100.200", pipeline.Reject, "listener submission deny network 0.0.0.0/0"},
		{"submission", "2001:db9::1", pipeline.Continue, ""}, // 0.0.0.0/0 is IPv4 only
		{"submission", "10.1.2.3", pipeline.Accept, "relay network 10.0.0.0/8"},
		{"submission", "172.16.5.5", pipeline.Accept, "relay network 172.16.0.0/12"}, // written IPv4-mapped
		{"other", "192.0.2.99", pipeline.Reject, "global deny network 192.0.2.0/24"},
	}
	for _, tc := range cases {
		v := f.Connect(context.Background(), session(tc.listener, tc.ip))
		if v.Action != tc.action || !strings.Contains(v.Reason, tc.reason) {
			t.Errorf("%s on %s: %v %q, want %v %q", tc.ip, tc.listener, v.Action, v.Reason, tc.action, tc.reason)
		}
		if v.Action == pipeline.Reject && (v.Reply.String() != deny || !v.Reply.Close) {
			t.Errorf("%s on %s: reply %q close %v", tc.ip, tc.listener, v.Reply.String(), v.Reply.Close)
		}
		if got := f.Allowed(netip.MustParseAddr(tc.ip), tc.listener); got != (tc.action == pipeline.Accept) {
			t.Errorf("Allowed(%s, %s) = %v", tc.ip, tc.listener, got)
		}
	}
}

func TestInvalidNetwork(t *testing.T) {
	_, err := New(Config{Listeners: map[string]Rules{"mx": {Deny: []netip.Prefix{{}}}}})
	if err == nil || !strings.Contains(err.Error(), "listener mx deny") {
		t.Errorf("err = %v", err)
	}
}

// An allowed client skips the antispam filters but never relay control.
func TestAllowedStillRelayControlled(t *testing.T) {
	f, err := New(Config{Global: Rules{Allow: nets("192.0.2.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(
		pipeline.Entry{Filter: f, Mode: pipeline.Enforce},
		pipeline.Entry{Filter: relay.New(relay.Config{Domains: []string{"example.com"}}), Mode: pipeline.Enforce},
	)
	s := session("mx", "192.0.2.1")
	if v := p.Connect(context.Background(), s); v.Action != pipeline.Continue || !s.Whitelisted {
		t.Fatalf("connect: %+v, whitelisted %v", v, s.Whitelisted)
	}
	rcpt, _ := mailaddr.Parse("bob@elsewhere.test")
	if v := p.Rcpt(context.Background(), s, &pipeline.Transaction{}, rcpt); v.Reply.String() != "554 5.7.1 Relay access denied" {
		t.Errorf("allowed client relayed: %+v", v)
	}
}

// randomNets returns n random networks of lengths 8-32 (IPv4) or 16-64.
func randomNets(r *rand.Rand, n int) []netip.Prefix {
	ps := make([]netip.Prefix, n)
	for i := range ps {
		var a netip.Addr
		var bits int
		if r.IntN(2) == 0 {
			a = netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
			bits = 8 + r.IntN(25)
		} else {
			var b [16]byte
			b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, byte(r.IntN(4))
			for j := 4; j < 8; j++ {
				b[j] = byte(r.IntN(256))
			}
			a = netip.AddrFrom16(b)
			bits = 16 + r.IntN(49)
		}
		ps[i] = netip.PrefixFrom(a, bits)
	}
	return ps
}

// The indexed lookup agrees with a plain scan of a long list.
func TestLookupMatchesScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ps := randomNets(r, 10000)
	s, err := newSet(ps)
	if err != nil {
		t.Fatal(err)
	}
	// Probe inside listed networks as well as at random.
	probes := make([]netip.Addr, 0, 4000)
	for _, p := range randomNets(r, 2000) {
		probes = append(probes, p.Addr())
	}
	for _, p := range ps[:2000] {
		probes = append(probes, p.Masked().Addr())
	}
	hits := 0
	for _, ip := range probes {
		_, got := s.lookup(ip)
		want := false
		for _, p := range ps {
			if p.Contains(ip) {
				want = true
				break
			}
		}
		if got != want {
			t.Fatalf("lookup(%s) = %v, scan says %v", ip, got, want)
		}
		if got {
			hits++
		}
	}
	if hits < 2000 {
		t.Errorf("only %d hits: the probes do not exercise matches", hits)
	}
}

func BenchmarkConnect10000(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	f, err := New(Config{Global: Rules{Allow: randomNets(r, 10000), Deny: randomNets(r, 10000)}})
	if err != nil {
		b.Fatal(err)
	}
	sessions := make([]*pipeline.Session, 256)
	for i := range sessions {
		sessions[i] = session("mx", fmt.Sprintf("198.%d.%d.%d", r.IntN(256), r.IntN(256), i))
	}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f.Connect(ctx, sessions[i%len(sessions)])
	}
}
