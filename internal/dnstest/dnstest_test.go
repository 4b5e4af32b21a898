package dnstest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func query(t *testing.T, s *Server, net, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, s.Addr())
	return r, err
}

func TestServer(t *testing.T) {
	s := New(t,
		"2.0.0.127.zen.test. 300 IN A 127.0.0.2",
		`example.org. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		"www.example.org. 300 IN CNAME host.example.org.",
		"host.example.org. 300 IN A 127.0.0.9",
		"4.0.0.127.in-addr.arpa. 300 IN PTR mail.example.org.",
	)

	for _, nw := range []string{"udp", "tcp"} {
		r, err := query(t, s, nw, "2.0.0.127.ZEN.test", dns.TypeA)
		if err != nil || r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
			t.Fatalf("%s A: %v %v", nw, r, err)
		}
	}

	r, err := query(t, s, "udp", "www.example.org", dns.TypeA)
	if err != nil || len(r.Answer) != 2 || r.Answer[1].(*dns.A).A.String() != "127.0.0.9" {
		t.Fatalf("CNAME: %v %v", r, err)
	}

	r, err = query(t, s, "udp", "example.org", dns.TypeMX)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Fatalf("NODATA: %v %v", r, err)
	}
	r, err = query(t, s, "udp", "0.0.127.zen.test", dns.TypeA) // empty non-terminal
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("empty non-terminal: %v %v", r, err)
	}

	r, err = query(t, s, "udp", "3.0.0.127.zen.test", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].(*dns.SOA).Minttl != 60 {
		t.Fatalf("NXDOMAIN: %v %v", r, err)
	}

	s.Remove("2.0.0.127.zen.test", dns.TypeA)
	s.Add("2.0.0.127.zen.test. 300 IN A 127.0.0.4")
	r, _ = query(t, s, "udp", "2.0.0.127.zen.test", dns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.4" {
		t.Fatalf("after Remove/Add: %v", r)
	}
	if n := s.Queries("2.0.0.127.zen.test.", dns.TypeA); n != 3 {
		t.Errorf("Queries = %d, want 3", n)
	}

	s.ServFail("example.org")
	r, err = query(t, s, "udp", "host.example.org", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("ServFail: %v %v", r, err)
	}

	s.Blackhole("zen.test")
	if _, err := query(t, s, "udp", "2.0.0.127.zen.test", dns.TypeA); err == nil {
		t.Fatal("Blackhole: got an answer")
	}
}

func TestTruncation(t *testing.T) {
	var big []string
	for i := range 40 {
		big = append(big, fmt.Sprintf(`big.test. 300 IN TXT "%060d"`, i))
	}
	s := New(t, big...)
	r, err := query(t, s, "udp", "big.test", dns.TypeTXT)
	if err != nil || !r.Truncated {
		t.Fatalf("UDP: want truncated, got %v %v", r, err)
	}
	r, err = query(t, s, "tcp", "big.test", dns.TypeTXT)
	if err != nil || r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("TCP: want 40 records, got %v %v", r, err)
	}
}
