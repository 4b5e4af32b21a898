package main

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// serve starts the bench zone's server on a free 127.0.0.1 port (UDP and
// TCP) and returns its address.
func serve(t *testing.T) (*server, string) {
	t.Helper()
	f, err := os.Open("bench.zone")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := load(f, "bench.zone")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{zone: z}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: l, Handler: s}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return s, pc.LocalAddr().String()
}

func ask(t *testing.T, netw, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: netw, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", dns.TypeToString[qtype], name, netw, err)
	}
	return r
}

func TestAnswers(t *testing.T) {
	s, addr := serve(t)
	for _, tc := range []struct {
		name   string
		qtype  uint16
		rcode  int
		answer string // in the first answer record; "" for none
		soa    string // zone of the SOA in the authority section; "" for none
	}{
		{"1.0.0.127.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, "source.example.net.", ""},
		{"source.example.net", dns.TypeA, dns.RcodeSuccess, "127.0.0.1", ""},
		{"source.example.net", dns.TypeAAAA, dns.RcodeSuccess, "", "example.net."}, // NODATA
		{"example.net", dns.TypeTXT, dns.RcodeSuccess, "v=spf1 ip4:127.0.0.0/8 -all", ""},
		{"1.0.0.127.bl1.bench.test", dns.TypeA, dns.RcodeNameError, "", "bl1.bench.test."}, // not listed
		{"2.0.0.127.bl2.bench.test", dns.TypeA, dns.RcodeSuccess, "127.0.0.2", ""},
		{"0.127.bl2.bench.test", dns.TypeA, dns.RcodeSuccess, "", "bl2.bench.test."}, // empty non-terminal
		{"3.0.0.127.in-addr.arpa", dns.TypePTR, dns.RcodeNameError, "", "127.in-addr.arpa."},
		{"Source.Example.NET", dns.TypeA, dns.RcodeSuccess, "127.0.0.1", ""},
		{"example.com", dns.TypeA, dns.RcodeRefused, "", ""}, // not ours
	} {
		for _, netw := range []string{"udp", "tcp"} {
			r := ask(t, netw, addr, tc.name, tc.qtype)
			if r.Rcode != tc.rcode {
				t.Errorf("%s %s/%s: rcode %s, want %s", netw, tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			got := ""
			if len(r.Answer) > 0 {
				got = r.Answer[0].String()
			}
			if tc.answer == "" && got != "" || !strings.Contains(got, tc.answer) {
				t.Errorf("%s %s/%s: answer %q, want %q", netw, tc.name, dns.TypeToString[tc.qtype], got, tc.answer)
			}
			soa := ""
			if len(r.Ns) == 1 {
				if rr, ok := r.Ns[0].(*dns.SOA); ok {
					soa = rr.Hdr.Name
				}
			}
			if soa != tc.soa {
				t.Errorf("%s %s/%s: SOA of %q in authority, want %q", netw, tc.name, dns.TypeToString[tc.qtype], soa, tc.soa)
			}
			if tc.rcode != dns.RcodeRefused && !r.Authoritative {
				t.Errorf("%s %s: answer not authoritative", netw, tc.name)
			}
		}
	}
	if n := s.queries.Load(); n != 20 {
		t.Errorf("counted %d queries, want 20", n)
	}
}

func TestLoadNeedsSOA(t *testing.T) {
	if _, err := load(strings.NewReader("a.example. 300 IN A 127.0.0.1\n"), "x"); err == nil {
		t.Error("a file without SOA loaded")
	}
	if _, err := load(strings.NewReader("a.example. 300 IN A 999.0.0.1\n"), "x"); err == nil {
		t.Error("a broken record loaded")
	}
}
