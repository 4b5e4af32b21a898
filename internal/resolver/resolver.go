// Package resolver is the gateway's caching DNS resolver, shared by every
// filter that looks anything up (rDNS, DNSBL, SPF, DKIM, DMARC, SURBL).
//
// It asks the configured servers with miekg/dns, caches answers by their
// TTL (negative answers too, by the SOA minimum), collapses concurrent
// identical queries into one, and bounds every query by the caller's
// context and its own timeout, so a DNS server that never answers never
// hangs a session.
//
// Errors are *net.DNSError, as the standard library's resolver returns
// them, so blitiri.com.ar/go/spf and go-msgauth understand them:
// IsNotFound for NXDOMAIN and NODATA, IsTimeout for timeouts, IsTemporary
// for timeouts and SERVFAIL/REFUSED.
package resolver

import (
	"cmp"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

const (
	// errTTL is how long a failure (timeout, SERVFAIL) is cached: long
	// enough that a dead DNSBL zone does not cost a full timeout on every
	// connection, short enough to notice its recovery soon.
	errTTL = 5 * time.Second
	// ednsSize is the DNS flag day 2020 buffer size, which avoids IP
	// fragmentation; larger answers come over TCP.
	ednsSize = 1232
	// maxCNAME bounds CNAME chains, so a loop cannot spin.
	maxCNAME = 8
)

// Config configures a Resolver. Zero fields take the defaults.
type Config struct {
	// Servers are "host:port" (":53" is added when the port is missing).
	// Empty: the nameservers of /etc/resolv.conf, else 127.0.0.1:53.
	Servers []string
	// Timeout bounds one lookup over all servers (default 2s).
	Timeout time.Duration
	// CacheSize is the number of cached answers (default 100000).
	CacheSize int
	// MaxTTL caps cached TTLs (default 1h).
	MaxTTL time.Duration
	// NegativeTTL is used for a negative answer without an SOA (default 60s).
	NegativeTTL time.Duration
}

// Stats are the resolver's counters, for monitoring.
type Stats struct {
	Hits, Misses, Errors uint64
}

// Resolver is a caching DNS stub resolver, safe for concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration
	maxTTL  time.Duration
	negTTL  time.Duration
	udp     *dns.Client
	tcp     *dns.Client
	cache   *lru.Cache[key, *entry]
	group   singleflight.Group
	now     func() time.Time // replaced in tests

	hits, misses, errs atomic.Uint64
}

type key struct {
	name  string // lower-case FQDN
	qtype uint16
}

// outcome is what a query came to.
type outcome uint8

const (
	found     outcome = iota
	notFound          // NXDOMAIN or NODATA
	temporary         // SERVFAIL, REFUSED, network error
	timeout
)

// entry is a cached answer: the records of the wanted type (CNAMEs
// already followed), or why there are none.
type entry struct {
	rrs     []dns.RR
	outcome outcome
	msg     string // error text when outcome != found
	expires time.Time
}

// New returns a Resolver for c.
func New(c Config) (*Resolver, error) {
	r := &Resolver{
		timeout: cmp.Or(c.Timeout, 2*time.Second),
		maxTTL:  cmp.Or(c.MaxTTL, time.Hour),
		negTTL:  cmp.Or(c.NegativeTTL, 60*time.Second),
		now:     time.Now,
	}
	for _, s := range c.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, "53")
		}
		r.servers = append(r.servers, s)
	}
	if len(r.servers) == 0 {
		r.servers = []string{"127.0.0.1:53"}
		if conf, err := dns.ClientConfigFromFile("/etc/resolv.conf"); err == nil && len(conf.Servers) > 0 {
			r.servers = r.servers[:0]
			for _, s := range conf.Servers {
				r.servers = append(r.servers, net.JoinHostPort(s, conf.Port))
			}
		}
	}
	// The context's deadline is the real bound; the clients' own timeouts
	// must not be shorter.
	r.udp = &dns.Client{Net: "udp", Timeout: r.timeout}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	var err error
	if r.cache, err = lru.New[key, *entry](cmp.Or(c.CacheSize, 100000)); err != nil {
		return nil, err
	}
	return r, nil
}

// Stats returns the counters: cache hits, misses, and failed queries.
func (r *Resolver) Stats() Stats {
	return Stats{Hits: r.hits.Load(), Misses: r.misses.Load(), Errors: r.errs.Load()}
}

// LookupA returns the IPv4 addresses of name (as DNSBL queries want).
func (r *Resolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	return addrs(nil, rrs), nil
}

// LookupIP returns the IPv4 and IPv6 addresses of name, asking for both in
// parallel. It fails only if neither lookup found anything.
func (r *Resolver) LookupIP(ctx context.Context, name string) ([]netip.Addr, error) {
	var aaaa []dns.RR
	var aaaaErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		aaaa, aaaaErr = r.lookup(ctx, name, dns.TypeAAAA)
	}()
	a, aErr := r.lookup(ctx, name, dns.TypeA)
	<-done
	ips := addrs(addrs(nil, a), aaaa)
	if len(ips) > 0 {
		return ips, nil
	}
	// Prefer reporting a failure over "not found": the name may exist.
	if aErr != nil && !aErr.(*net.DNSError).IsNotFound {
		return nil, aErr
	}
	if aaaaErr != nil {
		return nil, aaaaErr
	}
	if aErr != nil {
		return nil, aErr
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// LookupIPAddr is LookupIP in net.Resolver's form.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := r.LookupIP(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		out[i] = net.IPAddr{IP: ip.AsSlice()}
	}
	return out, nil
}

// LookupPTR returns the names of ip, lower-case, without the trailing dot.
func (r *Resolver) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	names, err := r.lookupPTR(ctx, ip)
	for i, n := range names {
		names[i] = strings.TrimSuffix(n, ".")
	}
	return names, err
}

// LookupAddr is LookupPTR in net.Resolver's form: names keep the trailing dot.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	return r.lookupPTR(ctx, ip)
}

func (r *Resolver) lookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	arpa, err := dns.ReverseAddr(ip.Unmap().String())
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: ip.String()}
	}
	rrs, lerr := r.lookup(ctx, arpa, dns.TypePTR)
	if lerr != nil {
		return nil, lerr
	}
	names := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		names = append(names, strings.ToLower(rr.(*dns.PTR).Ptr))
	}
	return names, nil
}

// LookupTXT returns name's TXT records, each one's strings joined as RFC
// 7208 §3.3 and RFC 6376 §3.6.2.2 want.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	txts := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		txts = append(txts, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return txts, nil
}

// LookupMX returns name's MX records sorted by preference, hosts with the
// trailing dot as net.Resolver returns them.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	mxs := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		mxs = append(mxs, &net.MX{Host: strings.ToLower(mx.Mx), Pref: mx.Preference})
	}
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return cmp.Compare(a.Pref, b.Pref) })
	return mxs, nil
}

func addrs(ips []netip.Addr, rrs []dns.RR) []netip.Addr {
	for _, rr := range rrs {
		var ip netip.Addr
		switch rr := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(rr.A.To4())
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(rr.AAAA)
		}
		if ip.IsValid() {
			ips = append(ips, ip)
		}
	}
	return ips
}

// lookup answers from the cache, or asks the servers once however many
// callers want the same answer. The returned error is a *net.DNSError
// (returned as error only when non-nil).
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn := strings.ToLower(dns.Fqdn(name))
	if !valid(fqdn) {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	k := key{fqdn, qtype}
	if e, ok := r.cache.Get(k); ok && r.now().Before(e.expires) {
		r.hits.Add(1)
		return e.result(name)
	}
	r.misses.Add(1)

	// The shared query has its own deadline, so one caller giving up does
	// not fail the others.
	ch := r.group.DoChan(fqdn+"/"+strconv.Itoa(int(qtype)), func() (any, error) {
		e := r.query(fqdn, qtype)
		r.cache.Add(k, e)
		return e, nil
	})
	select {
	case res := <-ch:
		return res.Val.(*entry).result(name)
	case <-ctx.Done():
		msg := "i/o timeout"
		if errors.Is(ctx.Err(), context.Canceled) {
			msg = "operation was canceled"
		}
		return nil, &net.DNSError{Err: msg, Name: name, IsTimeout: true, IsTemporary: true, UnwrapErr: ctx.Err()}
	}
}

// valid reports whether fqdn can be asked: at most 253 octets, no empty
// labels, and none of the zone-file escapes or control bytes that names
// from a hostile HELO or MAIL FROM could smuggle in.
func valid(fqdn string) bool {
	if fqdn == "." || len(fqdn) > 254 || strings.ContainsRune(fqdn, '\\') {
		return false
	}
	for i := 0; i < len(fqdn); i++ {
		if fqdn[i] <= ' ' || fqdn[i] >= 0x7f {
			return false
		}
	}
	_, ok := dns.IsDomainName(fqdn)
	return ok
}

func (e *entry) result(name string) ([]dns.RR, error) {
	if e.outcome == found {
		return e.rrs, nil
	}
	return nil, &net.DNSError{
		Err:         e.msg,
		Name:        name,
		IsNotFound:  e.outcome == notFound,
		IsTimeout:   e.outcome == timeout,
		IsTemporary: e.outcome == temporary || e.outcome == timeout,
	}
}

// query asks the servers in order, moving on after a network error or
// timeout; each gets a fair share of the time left.
func (r *Resolver) query(fqdn string, qtype uint16) *entry {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	var err error
	for i, srv := range r.servers {
		deadline, _ := ctx.Deadline()
		share := time.Until(deadline) / time.Duration(len(r.servers)-i)
		actx, acancel := context.WithTimeout(ctx, share)
		var resp *dns.Msg
		resp, err = r.exchange(actx, m, srv)
		acancel()
		if err == nil {
			return r.parse(fqdn, qtype, resp)
		}
	}
	r.errs.Add(1)
	e := &entry{outcome: temporary, msg: err.Error(), expires: r.now().Add(errTTL)}
	if ne, ok := err.(net.Error); ok && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		e.outcome, e.msg = timeout, "i/o timeout"
	}
	return e
}

// exchange asks one server over UDP, and again over TCP if the answer
// was truncated.
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, srv string) (*dns.Msg, error) {
	resp, _, err := r.udp.ExchangeContext(ctx, m, srv)
	if err == nil && resp.Truncated {
		resp, _, err = r.tcp.ExchangeContext(ctx, m, srv)
	}
	if err != nil {
		return nil, err
	}
	q := m.Question[0]
	if len(resp.Question) != 1 || resp.Question[0].Qtype != q.Qtype || !strings.EqualFold(resp.Question[0].Name, q.Name) {
		return nil, errors.New("reply to a different question")
	}
	return resp, nil
}

// parse turns a reply into a cache entry.
func (r *Resolver) parse(fqdn string, qtype uint16, resp *dns.Msg) *entry {
	now := r.now()
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return &entry{outcome: notFound, msg: "no such host", expires: now.Add(r.negativeTTL(resp))}
	default:
		r.errs.Add(1)
		return &entry{outcome: temporary, msg: "server misbehaving: " + dns.RcodeToString[resp.Rcode], expires: now.Add(errTTL)}
	}

	// Follow the CNAME chain: the wanted records are those owned by its
	// end. The answer lives as long as its shortest-lived link.
	e := &entry{outcome: found}
	ttl := r.maxTTL
	target := fqdn
	for range maxCNAME {
		var next string
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, target) {
				continue
			}
			switch h.Rrtype {
			case qtype:
				e.rrs = append(e.rrs, rr)
				ttl = min(ttl, time.Duration(h.Ttl)*time.Second)
			case dns.TypeCNAME:
				next = rr.(*dns.CNAME).Target
				ttl = min(ttl, time.Duration(h.Ttl)*time.Second)
			}
		}
		if len(e.rrs) > 0 || next == "" {
			break
		}
		target = next
	}
	if len(e.rrs) == 0 { // NODATA
		return &entry{outcome: notFound, msg: "no such host", expires: now.Add(r.negativeTTL(resp))}
	}
	e.expires = now.Add(ttl)
	return e
}

// negativeTTL is how long a negative answer is cached (RFC 2308 §5): the
// SOA's TTL capped by its MINIMUM field.
func (r *Resolver) negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, r.maxTTL)
		}
	}
	return min(r.negTTL, r.maxTTL)
}
