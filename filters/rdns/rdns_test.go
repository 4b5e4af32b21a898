package rdns

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailgate/internal/dnstest"
	"mailgate/internal/resolver"
	"mailgate/pipeline"
)

const timeout = 300 * time.Millisecond

// zone is the test DNS data:
//
//	127.0.0.2  PTR mail.good.test, which resolves back to it
//	127.0.0.3  no PTR
//	127.0.0.4  PTR dynamic.bad.test, which resolves elsewhere
//	127.0.0.5  PTR two names: one unresolvable, one confirmed
//	127.0.0.6  PTR in a blackholed zone
//	127.0.0.7  PTR name in a blackholed forward zone
//	127.0.0.8  PTR "bad!name.test", which resolves back but is no hostname
//	2001:db8::25 PTR mail6.good.test, which resolves back to it (AAAA)
func zone(t *testing.T) *dnstest.Server {
	arpa6, err := dns.ReverseAddr("2001:db8::25")
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.New(t,
		"2.0.0.127.in-addr.arpa. 300 IN PTR mail.good.test.",
		"mail.good.test. 300 IN A 127.0.0.2",
		"4.0.0.127.in-addr.arpa. 300 IN PTR dynamic.bad.test.",
		"dynamic.bad.test. 300 IN A 127.0.0.99",
		"5.0.0.127.in-addr.arpa. 300 IN PTR nowhere.bad.test.",
		"5.0.0.127.in-addr.arpa. 300 IN PTR MX2.Good.Test.",
		"mx2.good.test. 300 IN A 127.0.0.5",
		"6.0.0.127.in-addr.arpa. 300 IN PTR mail.good.test.",
		"7.0.0.127.in-addr.arpa. 300 IN PTR mail.slow.test.",
		"8.0.0.127.in-addr.arpa. 300 IN PTR bad!name.test.",
		"bad!name.test. 300 IN A 127.0.0.8",
		arpa6+" 300 IN PTR mail6.good.test.",
		"mail6.good.test. 300 IN AAAA 2001:db8::25",
	)
	srv.Blackhole("6.0.0.127.in-addr.arpa")
	srv.Blackhole("slow.test")
	return srv
}

func newResolver(t *testing.T, srv *dnstest.Server) *resolver.Resolver {
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestConnect(t *testing.T) {
	srv := zone(t)
	const (
		missing  = "550 5.7.25 Client host rejected: cannot find your hostname"
		tmissing = "450 4.7.25 Client host rejected: cannot find your hostname"
		mismatch = "550 5.7.25 Client host rejected: reverse DNS does not match"
		dnsErr   = "451 4.7.25 Client host rejected: cannot verify your hostname, try again later"
	)
	ptr := Config{RequirePTR: true}
	fc := Config{RequirePTR: true, RequireFCRDNS: true}
	cases := []struct {
		name   string
		c      Config
		client string
		action pipeline.Action
		reply  string // for reject and tempfail
		tag    string // for score
		host   string // ClientHostname afterwards
	}{
		{"confirmed", fc, "127.0.0.2", pipeline.Continue, "", "", "mail.good.test"},
		{"confirmed, nothing required", Config{}, "127.0.0.2", pipeline.Continue, "", "", "mail.good.test"},
		{"ipv4-mapped client", fc, "::ffff:127.0.0.2", pipeline.Continue, "", "", "mail.good.test"},
		{"ipv6 confirmed", fc, "2001:db8::25", pipeline.Continue, "", "", "mail6.good.test"},
		{"second name confirmed", fc, "127.0.0.5", pipeline.Continue, "", "", "mx2.good.test"},

		{"no PTR, reject", ptr, "127.0.0.3", pipeline.Reject, missing, "", ""},
		{"no PTR, tempfail", Config{RequirePTR: true, Action: "tempfail"}, "127.0.0.3", pipeline.Tempfail, tmissing, "", ""},
		{"no PTR, score", Config{RequirePTR: true, Action: "score", Score: 2.5}, "127.0.0.3", pipeline.Score, "", "rdns-missing", ""},
		{"no PTR, fcrdns implies PTR", Config{RequireFCRDNS: true}, "127.0.0.3", pipeline.Reject, missing, "", ""},
		{"no PTR, not required", Config{}, "127.0.0.3", pipeline.Continue, "", "", ""},
		{"no PTR ipv6", ptr, "2001:db8::26", pipeline.Reject, missing, "", ""},

		{"mismatch, only PTR required", ptr, "127.0.0.4", pipeline.Continue, "", "", ""},
		{"mismatch, reject", fc, "127.0.0.4", pipeline.Reject, mismatch, "", ""},
		{"mismatch, score", Config{RequireFCRDNS: true, Action: "score"}, "127.0.0.4", pipeline.Score, "", "rdns-mismatch", ""},
		{"confirmed but not a hostname", fc, "127.0.0.8", pipeline.Reject, mismatch, "", ""},

		{"PTR timeout, tempfail", ptr, "127.0.0.6", pipeline.Tempfail, dnsErr, "", ""},
		{"PTR timeout, skip", Config{RequirePTR: true, OnDNSError: "skip"}, "127.0.0.6", pipeline.Continue, "", "", ""},
		{"PTR timeout, not required", Config{}, "127.0.0.6", pipeline.Continue, "", "", ""},
		{"forward timeout, tempfail", fc, "127.0.0.7", pipeline.Tempfail, dnsErr, "", ""},
		{"forward timeout, skip", Config{RequireFCRDNS: true, OnDNSError: "skip"}, "127.0.0.7", pipeline.Continue, "", "", ""},
		{"forward timeout, only PTR required", ptr, "127.0.0.7", pipeline.Continue, "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Resolver = newResolver(t, srv) // fresh cache: each case does its own lookups
			f, err := New(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			s := &pipeline.Session{Client: netip.AddrPortFrom(netip.MustParseAddr(tc.client), 40000)}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			v := f.Connect(ctx, s)
			// Worst case is the PTR lookup plus one parallel round of
			// forward lookups, each bounded by the resolver's timeout.
			if d := time.Since(start); d > 2*timeout+200*time.Millisecond {
				t.Errorf("took %v", d)
			}
			if v.Action != tc.action {
				t.Fatalf("%v (%s), want %v", v.Action, v.Reason, tc.action)
			}
			if v.Reason == "" {
				t.Error("no reason")
			}
			switch v.Action {
			case pipeline.Reject, pipeline.Tempfail:
				if got := v.Reply.String(); got != tc.reply {
					t.Errorf("reply %q, want %q", got, tc.reply)
				}
			case pipeline.Score:
				if v.Tag != tc.tag || v.Score != max(tc.c.Score, 1) {
					t.Errorf("score %v %q, want %v %q", v.Score, v.Tag, max(tc.c.Score, 1), tc.tag)
				}
			}
			if s.ClientHostname != tc.host {
				t.Errorf("ClientHostname %q, want %q", s.ClientHostname, tc.host)
			}
		})
	}
}

// A dead PTR zone costs one resolver timeout, not more.
func TestBlackholeWithinTimeout(t *testing.T) {
	srv := zone(t)
	f, err := New(Config{RequirePTR: true, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	s := &pipeline.Session{Client: netip.MustParseAddrPort("127.0.0.6:40000")}
	start := time.Now()
	v := f.Connect(context.Background(), s)
	if d := time.Since(start); d > timeout+250*time.Millisecond {
		t.Errorf("took %v, resolver timeout %v", d, timeout)
	}
	if v.Action != pipeline.Tempfail {
		t.Errorf("%v (%s), want tempfail", v.Action, v.Reason)
	}
}

// A confirmation is one round of lookups: each PTR name once.
func TestLookupsOnce(t *testing.T) {
	srv := zone(t)
	f, err := New(Config{RequireFCRDNS: true, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	s := &pipeline.Session{Client: netip.MustParseAddrPort("127.0.0.5:40000")}
	if v := f.Connect(context.Background(), s); v.Action != pipeline.Continue {
		t.Fatalf("%v (%s)", v.Action, v.Reason)
	}
	if n := srv.Queries("5.0.0.127.in-addr.arpa.", dns.TypePTR); n != 1 {
		t.Errorf("%d PTR queries", n)
	}
	if n := srv.Queries("mx2.good.test.", dns.TypeA); n != 1 {
		t.Errorf("%d A queries for mx2.good.test", n)
	}
}

// The caller's deadline bounds the filter even if the resolver's is longer.
func TestContextDeadline(t *testing.T) {
	srv := zone(t)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{RequirePTR: true, Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	v := f.Connect(ctx, &pipeline.Session{Client: netip.MustParseAddrPort("127.0.0.6:40000")})
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	if v.Action != pipeline.Tempfail {
		t.Errorf("%v (%s), want tempfail", v.Action, v.Reason)
	}
}

func TestServFail(t *testing.T) {
	srv := zone(t)
	srv.ServFail("3.0.0.127.in-addr.arpa")
	f, err := New(Config{RequirePTR: true, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	v := f.Connect(context.Background(), &pipeline.Session{Client: netip.MustParseAddrPort("127.0.0.3:40000")})
	if v.Action != pipeline.Tempfail || v.Reply.Code != 451 {
		t.Errorf("%v %v (%s), want 451", v.Action, v.Reply, v.Reason)
	}
}

func TestNewValidates(t *testing.T) {
	r := newResolver(t, dnstest.New(t))
	for _, c := range []Config{
		{Action: "drop", Resolver: r},
		{OnDNSError: "accept", Resolver: r},
		{RequirePTR: true},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v): no error", c)
		}
	}
}
