package main

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"

	"mailgate/filters/dnsbl"
	"mailgate/filters/surbl"
	"mailgate/internal/dnstest"
	"mailgate/internal/mimeparse"
	"mailgate/internal/resolver"
	"mailgate/pipeline"
)

// TestDNSListsStats: the zone-health metric covers the client DNS lists
// and the URI lists.
func TestDNSListsStats(t *testing.T) {
	dns := dnstest.New(t, "2.0.0.127.bl.test. 300 IN A 127.0.0.2", "listed.example.uribl.test. 300 IN A 127.0.0.2")
	r, err := resolver.New(resolver.Config{Servers: []string{dns.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	bl, err := dnsbl.New(dnsbl.Config{Zones: []dnsbl.Zone{{Zone: "bl.test", Weight: 1}}, Threshold: 1, Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	ul, err := surbl.New(surbl.Config{Zones: []surbl.Zone{{Zone: "uribl.test"}}, Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bl.Connect(ctx, &pipeline.Session{Client: netip.MustParseAddrPort("127.0.0.2:4000")})
	msg := &mimeparse.Message{Parts: []mimeparse.Part{{ContentType: "text/plain", Text: true,
		Content: []byte("see http://www.listed.example/x")}}}
	if v := ul.Check(ctx, msg, func() io.Reader { return strings.NewReader("") }); v.Action != pipeline.Reject {
		t.Fatalf("surbl did not list: %+v", v)
	}
	got := map[string]uint64{}
	for _, z := range (dnsLists{dnsbl: bl, surbl: ul}).Stats() {
		got[z.Zone] = z.Listed
	}
	if got["bl.test"] != 1 || got["uribl.test"] != 1 {
		t.Errorf("zone stats = %v, want one listing in bl.test and in uribl.test", got)
	}
}
