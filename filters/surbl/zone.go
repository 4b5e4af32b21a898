package surbl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// The answer validation below is filters/dnsbl's (RFC 5782): the same
// rules for what a list's answer means, kept in step by hand until the
// two share a package.

// zone is one list and its counters.
type zone struct {
	name  string
	codes []codeRange
	mask  uint32

	mu    sync.Mutex
	stats ZoneStats
}

// codeRange is an inclusive range of return codes, as uint32.
type codeRange struct{ lo, hi uint32 }

func newZone(c Zone) (*zone, error) {
	z := &zone{name: strings.ToLower(strings.TrimSuffix(c.Zone, ".")), mask: c.Mask}
	z.stats.Zone = z.name
	if !validZone(z.name) {
		return nil, errors.New("not a valid DNS name")
	}
	if c.Mask&0xff000000 != 0 {
		return nil, fmt.Errorf("mask %#x covers the first octet (127)", c.Mask)
	}
	for _, s := range c.Codes {
		r, err := parseCodes(s)
		if err != nil {
			return nil, err
		}
		z.codes = append(z.codes, r)
	}
	return z, nil
}

// parseCodes parses "127.0.0.2" or "127.0.0.2-127.0.0.11".
func parseCodes(s string) (codeRange, error) {
	loS, hiS, isRange := strings.Cut(s, "-")
	if !isRange {
		hiS = loS
	}
	var r codeRange
	for i, p := range []string{loS, hiS} {
		a, err := netip.ParseAddr(strings.TrimSpace(p))
		if err != nil || !a.Is4() || !codeNet.Contains(a) {
			return r, fmt.Errorf("code %q: want 127.0.0.0/8 addresses, or a range of them", s)
		}
		if i == 0 {
			r.lo = u32(a)
		} else {
			r.hi = u32(a)
		}
	}
	if r.lo > r.hi {
		return r, fmt.Errorf("code range %q runs backwards", s)
	}
	return r, nil
}

// validZone reports whether zone is a DNS name under which most
// registrable domains still fit in 253 octets.
func validZone(zone string) bool {
	if zone == "" || len(zone) > 253-64 {
		return false
	}
	for label := range strings.SplitSeq(zone, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

var (
	codeNet    = netip.MustParsePrefix("127.0.0.0/8")
	refusedNet = netip.MustParsePrefix("127.255.255.0/24")
)

// answer is one zone's answer about one target.
type answer struct {
	listed bool
	codes  []netip.Addr // the codes that count (listed)
	err    string
}

// judge validates an answer and applies the zone's code filters.
func (z *zone) judge(addrs []netip.Addr, err error) answer {
	var r answer
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return r
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
		r.err = "timeout"
		return r
	case errors.As(err, &dnsErr):
		r.err = dnsErr.Err
		return r
	case err != nil:
		r.err = err.Error()
		return r
	}
	// One bad address spoils the answer: a list that says something other
	// than 127.0.0.0/8 is broken (or its domain expired and now points
	// everything somewhere); 127.0.0.1 is no listing code (RFC 5782 §5)
	// and the 127.255.255.x codes are the operator refusing our resolver
	// (SURBL answers 127.0.0.1 to the public resolvers it blocks).
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.Is4() || !codeNet.Contains(a):
			r.err = "invalid answer " + a.String()
			return r
		case refusedNet.Contains(a), a == netip.AddrFrom4([4]byte{127, 0, 0, 1}):
			r.err = "resolver blocked by the list operator (" + a.String() + ")"
			return r
		}
	}
	for _, a := range addrs {
		if z.counts(u32(a.Unmap())) {
			r.codes = append(r.codes, a.Unmap())
		}
	}
	r.listed = len(r.codes) > 0
	return r
}

// counts applies the Codes and Mask filters.
func (z *zone) counts(code uint32) bool {
	if z.mask != 0 && code&z.mask == 0 {
		return false
	}
	if len(z.codes) == 0 {
		return true
	}
	for _, r := range z.codes {
		if r.lo <= code && code <= r.hi {
			return true
		}
	}
	return false
}

func (z *zone) record(r answer, latency time.Duration) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.stats.Queries++
	z.stats.LatencySum += latency
	switch {
	case r.err != "":
		z.stats.Errors++
		z.stats.LastError = r.err
	case r.listed:
		z.stats.Listed++
	}
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
