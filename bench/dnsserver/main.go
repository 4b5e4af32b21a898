// Command dnsserver is a small authoritative DNS server for the benchmarks:
// it serves the zones of one master file on a loopback address over UDP
// and TCP, so the gateway and its peers resolve the bench's rDNS, DNSBL
// and SPF names without touching the real DNS.
//
//	dnsserver -zone bench.zone -addr 127.0.0.1:5353 [-log]
//
// Every SOA record in the file starts a zone. Names outside all zones get
// REFUSED; a missing name NXDOMAIN and a missing type NODATA, both with
// the zone's SOA (whose minimum sets the negative TTL); there are no
// CNAMEs or wildcards. On SIGUSR1 it prints "queries N" (answered so far) to
// stdout; on SIGTERM or SIGINT it prints the same and exits. -log prints
// one line per query to stdout ("QTYPE name RCODE").
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/miekg/dns"
)

// zoneData is the whole file: records by owner name, and the zone apexes.
type zoneData struct {
	rrs  map[string][]dns.RR // owner (lower-case FQDN) -> records
	soas map[string]*dns.SOA // apex -> its SOA
}

func load(r io.Reader, file string) (*zoneData, error) {
	z := &zoneData{rrs: map[string][]dns.RR{}, soas: map[string]*dns.SOA{}}
	zp := dns.NewZoneParser(r, ".", file)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := strings.ToLower(rr.Header().Name)
		rr.Header().Name = name
		z.rrs[name] = append(z.rrs[name], rr)
		if soa, isSOA := rr.(*dns.SOA); isSOA {
			z.soas[name] = soa
		}
	}
	if err := zp.Err(); err != nil {
		return nil, err
	}
	if len(z.soas) == 0 {
		return nil, errors.New("no SOA record: the file defines no zone")
	}
	return z, nil
}

// apex returns the SOA of the closest zone holding name, or nil.
func (z *zoneData) apex(name string) *dns.SOA {
	for n := name; ; {
		if soa := z.soas[n]; soa != nil {
			return soa
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return nil
		}
		n = n[i+1:]
	}
}

// exists reports whether name owns records or has a descendant that does
// (an empty non-terminal answers NODATA, not NXDOMAIN).
func (z *zoneData) exists(name string) bool {
	if len(z.rrs[name]) > 0 {
		return true
	}
	for owner := range z.rrs {
		if strings.HasSuffix(owner, "."+name) {
			return true
		}
	}
	return false
}

// answer fills the reply to one question.
func (z *zoneData) answer(m *dns.Msg, q dns.Question) {
	name := strings.ToLower(q.Name)
	soa := z.apex(name)
	if soa == nil {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true
	for _, rr := range z.rrs[name] {
		if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, rr)
		}
	}
	if len(m.Answer) > 0 {
		return
	}
	if !z.exists(name) {
		m.Rcode = dns.RcodeNameError
	}
	m.Ns = append(m.Ns, soa)
}

type server struct {
	zone    *zoneData
	queries atomic.Int64
	logMu   sync.Mutex
	log     bool
}

func (s *server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(r)
	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeFormatError
	} else {
		s.zone.answer(m, r.Question[0])
	}
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
		m.SetEdns0(opt.UDPSize(), false)
	}
	if w.LocalAddr().Network() == "udp" {
		m.Truncate(size) // sets TC: the client retries over TCP
	}
	if s.log && len(r.Question) == 1 {
		q := r.Question[0]
		s.logMu.Lock()
		fmt.Printf("%s %s %s\n", dns.TypeToString[q.Qtype], q.Name, dns.RcodeToString[m.Rcode])
		s.logMu.Unlock()
	}
	_ = w.WriteMsg(m)
}

func main() {
	zoneFile := flag.String("zone", "", "master file with the zones to serve (required)")
	addr := flag.String("addr", "127.0.0.1:5353", "address to listen on, UDP and TCP")
	logQueries := flag.Bool("log", false, "print one line per query")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("dnsserver: ")
	if *zoneFile == "" {
		log.Fatal("-zone is required")
	}
	f, err := os.Open(*zoneFile)
	if err != nil {
		log.Fatal(err)
	}
	z, err := load(f, *zoneFile)
	f.Close()
	if err != nil {
		log.Fatalf("%s: %v", *zoneFile, err)
	}
	s := &server{zone: z, log: *logQueries}

	servers := []*dns.Server{
		{Addr: *addr, Net: "udp", Handler: s},
		{Addr: *addr, Net: "tcp", Handler: s},
	}
	var ready sync.WaitGroup
	failed := make(chan error, len(servers))
	for _, srv := range servers {
		ready.Add(1)
		srv.NotifyStartedFunc = ready.Done
		go func() {
			if err := srv.ListenAndServe(); err != nil {
				failed <- fmt.Errorf("%s %s: %w", srv.Net, srv.Addr, err)
			}
		}()
	}
	started := make(chan struct{})
	go func() { ready.Wait(); close(started) }()
	select {
	case err := <-failed:
		log.Fatal(err)
	case <-started:
	}
	log.Printf("serving %d zones on %s (udp, tcp)", len(z.soas), *addr)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-failed:
			log.Fatal(err)
		case v := <-sig:
			fmt.Printf("queries %d\n", s.queries.Load())
			if v != syscall.SIGUSR1 {
				for _, srv := range servers {
					_ = srv.Shutdown()
				}
				return
			}
		}
	}
}
