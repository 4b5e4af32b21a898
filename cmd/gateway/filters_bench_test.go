package main

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"mailgate/config"
	"mailgate/internal/dnstest"
	"mailgate/internal/mailaddr"
	"mailgate/internal/resolver"
	"mailgate/internal/state"
	"mailgate/pipeline"
)

// BenchmarkEnvelopeFilters is bench/envelope.sh's gateway-filters
// scenario in-process and without SMTP: rdns (PTR + FCrDNS), dnsbl (3
// zones), spf and greylisting (client already passed) on a warm resolver
// cache, for one session and message. Run with -cpuprofile to see where a
// message's filter time goes.
func BenchmarkEnvelopeFilters(b *testing.B) {
	dns := dnstest.New(b,
		"1.0.0.127.in-addr.arpa. 300 IN PTR source.example.net.",
		"source.example.net. 300 IN A 127.0.0.1",
		`example.net. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
	)
	c := &config.Config{}
	c.Hostname = "mx.bench.test"
	c.Domains = []string{"example.com"}
	c.Filters.RDNS = &config.RDNS{RequireFCRDNS: true}
	c.Filters.DNSBL = &config.DNSBL{Zones: []config.DNSBLZone{{Zone: "bl1.bench.test"}, {Zone: "bl2.bench.test"}, {Zone: "bl3.bench.test"}}}
	c.Filters.SPF = &config.SPF{}
	c.Filters.Greylist = &config.Greylist{}
	c.Listeners = []config.Listener{{Name: "mx", Address: "127.0.0.1:25"}}
	c.Upstream.Servers = []config.UpstreamServer{{Address: "127.0.0.1:26"}}
	c.Limits.ConnectionRatePerIP = config.Rate{N: 1 << 30, Per: config.Duration(time.Minute)} // as bench/lib.sh lifts it
	c.ApplyDefaults()
	r, err := resolver.New(resolver.Config{Servers: []string{dns.Addr()}, Timeout: 2 * time.Second, CacheSize: 1000})
	if err != nil {
		b.Fatal(err)
	}
	store := state.NewMemory()
	// The client passed greylisting before.
	_ = store.Set(context.Background(), "greypass:127.0.0.0/24", []byte("1"), time.Hour)
	p, err := buildPipeline(c, deps{resolver: r, store: store, log: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	from, _ := mailaddr.Parse("sender@example.net")
	to, _ := mailaddr.Parse("user@example.com")
	ctx := context.Background()
	run := func() {
		s := &pipeline.Session{ID: "s", Listener: "mx", Client: netip.MustParseAddrPort("127.0.0.1:40000")}
		if v := p.Connect(ctx, s); v.Action != pipeline.Continue {
			b.Fatalf("connect: %+v", v)
		}
		s.Helo = "source.example.net"
		p.Helo(ctx, s)
		t := &pipeline.Transaction{From: from}
		if v := p.Mail(ctx, s, t); v.Action == pipeline.Reject || v.Action == pipeline.Tempfail {
			b.Fatalf("mail: %+v", v)
		}
		if v := p.Rcpt(ctx, s, t, to); v.Action == pipeline.Reject || v.Action == pipeline.Tempfail {
			b.Fatalf("rcpt: %+v", v)
		}
		p.Disconnect(s)
	}
	run() // warm the caches
	b.ReportAllocs()
	for b.Loop() {
		run()
	}
}
