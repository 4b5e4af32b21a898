// Package dnstest runs a small authoritative DNS server in-process, on
// 127.0.0.1 (UDP and TCP on the same port), for tests of anything that
// looks names up: the resolver, rDNS, DNSBL, SPF, DKIM and DMARC checks.
//
// Records are zone-file lines. The server answers authoritatively, follows
// CNAMEs within its own data, returns NODATA or NXDOMAIN with an SOA so
// negative caching can be tested, and can be told to go silent
// (Blackhole) or fail (ServFail) for a suffix, to test failure policy.
package dnstest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// negTTL is the TTL and MINIMUM of the synthetic SOA sent with negative
// answers.
const negTTL = 60

type key struct {
	name  string
	qtype uint16
}

// Server is a running test DNS server.
type Server struct {
	t    testing.TB
	addr string

	mu        sync.Mutex
	rrs       map[string][]dns.RR // by lower-case FQDN
	blackhole []string
	servfail  []string
	queries   map[key]int
}

// New starts a server; it is stopped by t.Cleanup. records are zone-file RR
// lines, e.g. "2.0.0.127.zen.test. 300 IN A 127.0.0.2". A bad line fails
// the test.
func New(t testing.TB, records ...string) *Server {
	t.Helper()
	s := &Server{t: t, rrs: map[string][]dns.RR{}, queries: map[key]int{}}
	s.Add(records...)

	pc, ln := listen(t)
	s.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: s},
		{Listener: ln, Handler: s},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.ShutdownContext(ctx)
		})
	}
	return s
}

// listen binds UDP on a random port, then TCP on the same one; another
// process may hold that TCP port, so it retries a few times.
func listen(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		lastErr = err
		pc.Close()
	}
	t.Fatalf("dnstest: no free port for UDP and TCP: %v", lastErr)
	return nil, nil
}

// Addr is the server's "127.0.0.1:port", for UDP and TCP alike.
func (s *Server) Addr() string { return s.addr }

// Add adds records (zone-file lines); a bad line fails the test.
func (s *Server) Add(records ...string) {
	s.t.Helper()
	for _, line := range records {
		rr, err := dns.NewRR(line)
		if err != nil || rr == nil {
			s.t.Fatalf("dnstest: bad record %q: %v", line, err)
		}
		name := strings.ToLower(rr.Header().Name)
		s.mu.Lock()
		s.rrs[name] = append(s.rrs[name], rr)
		s.mu.Unlock()
	}
}

// Remove drops the records of that name and type.
func (s *Server) Remove(name string, qtype uint16) {
	name = canon(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	var keep []dns.RR
	for _, rr := range s.rrs[name] {
		if rr.Header().Rrtype != qtype {
			keep = append(keep, rr)
		}
	}
	if len(keep) == 0 {
		delete(s.rrs, name)
	} else {
		s.rrs[name] = keep
	}
}

// Blackhole makes the server ignore queries for suffix and the names under
// it, as a dead server would.
func (s *Server) Blackhole(suffix string) {
	s.mu.Lock()
	s.blackhole = append(s.blackhole, canon(suffix))
	s.mu.Unlock()
}

// ServFail makes the server answer SERVFAIL for suffix and the names under it.
func (s *Server) ServFail(suffix string) {
	s.mu.Lock()
	s.servfail = append(s.servfail, canon(suffix))
	s.mu.Unlock()
}

// Queries reports how many queries for name and qtype the server received.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key{canon(name), qtype}]
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canon(q.Name)

	s.mu.Lock()
	s.queries[key{name, q.Qtype}]++
	silent := under(name, s.blackhole)
	fail := under(name, s.servfail)
	var m *dns.Msg
	if !silent && !fail {
		m = s.answer(req, name, q.Qtype)
	}
	s.mu.Unlock()

	switch {
	case silent:
		return // no reply at all
	case fail:
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
	}
	if w.LocalAddr().Network() == "udp" {
		// As a real server does: what does not fit is sent with TC set,
		// so the client retries over TCP.
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// answer builds the reply; s.mu is held.
func (s *Server) answer(req *dns.Msg, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}

	// Follow CNAMEs within our own data; the bound stops loops.
	for range 16 {
		var cname dns.RR
		found := false
		for _, rr := range s.rrs[name] {
			t := rr.Header().Rrtype
			if t == qtype || qtype == dns.TypeANY {
				m.Answer = append(m.Answer, rr)
				found = true
			} else if t == dns.TypeCNAME {
				cname = rr
			}
		}
		if found {
			return m
		}
		if cname == nil {
			break
		}
		m.Answer = append(m.Answer, cname)
		name = canon(cname.(*dns.CNAME).Target)
	}

	if !s.exists(name) {
		m.Rcode = dns.RcodeNameError
	}
	m.Ns = []dns.RR{s.soa(name)}
	return m
}

// exists reports whether name owns records or has names below it (an
// empty non-terminal, which is NODATA rather than NXDOMAIN).
func (s *Server) exists(name string) bool {
	if len(s.rrs[name]) > 0 {
		return true
	}
	for n := range s.rrs {
		if strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	return false
}

// soa returns the SOA of the closest enclosing zone we hold, or a
// synthetic one for the name's last two labels.
func (s *Server) soa(name string) dns.RR {
	for n := name; ; {
		for _, rr := range s.rrs[n] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return rr
			}
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			break
		}
		n = n[i+1:]
	}
	labels := dns.SplitDomainName(name)
	if len(labels) > 2 {
		labels = labels[len(labels)-2:]
	}
	zone := dns.Fqdn(strings.Join(labels, "."))
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
		Ns:      "ns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  negTTL,
	}
}

func canon(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// under reports whether name equals or lies under one of the suffixes.
func under(name string, suffixes []string) bool {
	for _, sfx := range suffixes {
		if name == sfx || strings.HasSuffix(name, "."+sfx) || sfx == "." {
			return true
		}
	}
	return false
}
