// Package dnslist is one zone of a DNS list (RFC 5782), as the client
// lists (filters/dnsbl) and the URI lists (filters/surbl) both ask them:
// which return codes count, what an answer means, and the zone's health.
//
// An answer is validated before it is read: only 127.0.0.0/8 codes mean
// anything. Any other address is a broken list (or one whose domain
// expired and now points everywhere); 127.0.0.1 is never a listing code
// (RFC 5782 §5; SURBL and URIBL answer it to resolvers they refuse); the
// 127.255.255.0/24 codes are the operator refusing our resolver
// (Spamhaus). Each of these makes the whole answer an error of the zone,
// never a listing: a list that cannot be trusted must not block mail.
//
// Which filter asks what, and what a listing weighs, stays with the
// filters.
package dnslist

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Zone is one list: its name, the codes that count, and its counters.
// It is safe for concurrent use.
type Zone struct {
	name  string
	codes []codeRange // empty: any code
	mask  uint32      // 0: unused

	mu    sync.Mutex
	stats Stats
}

// Stats is one zone's health, for monitoring.
type Stats struct {
	Zone                    string
	Queries, Listed, Errors uint64
	LastError               string
	LatencySum              time.Duration
}

// Answer is what one answer of a zone means.
type Answer struct {
	Listed bool
	// Codes are the return codes that count; set only when Listed.
	Codes []netip.Addr
	// Ignored are valid codes the zone's Codes and Mask filtered out.
	Ignored []netip.Addr
	// Err says why the answer could not be used ("timeout",
	// "invalid answer 10.0.0.1", ...); "" if it could.
	Err string
}

// codeRange is an inclusive range of return codes, as uint32.
type codeRange struct{ lo, hi uint32 }

var (
	codeNet    = netip.MustParsePrefix("127.0.0.0/8")
	refusedNet = netip.MustParsePrefix("127.255.255.0/24")
	noListing  = netip.AddrFrom4([4]byte{127, 0, 0, 1})
)

// NewZone validates a zone's configuration. name is a DNS name (case and
// a trailing dot do not matter); codes are the return codes that count,
// "127.0.0.2" or ranges "127.0.0.2-127.0.0.11" (none: any code); mask, if
// not 0, is a bitmask a code must match (multi lists such as
// multi.surbl.org: each bit of the last octet is one list).
func NewZone(name string, codes []string, mask uint32) (*Zone, error) {
	z := &Zone{name: strings.ToLower(strings.TrimSuffix(name, ".")), mask: mask}
	z.stats.Zone = z.name
	if !ValidName(z.name) {
		return nil, errors.New("not a valid DNS name")
	}
	if mask&0xff000000 != 0 {
		return nil, fmt.Errorf("mask %#x covers the first octet (127)", mask)
	}
	for _, s := range codes {
		r, err := parseCodes(s)
		if err != nil {
			return nil, err
		}
		z.codes = append(z.codes, r)
	}
	return z, nil
}

// Name is the zone's name, lower case, without the trailing dot.
func (z *Zone) Name() string { return z.name }

// ValidName reports whether zone (lower case, no trailing dot) is a DNS
// name that leaves room for a query in front of it: the 64 octets of an
// IPv6 address's 32 nibble labels (RFC 5782 §2.4), within 253 in all.
func ValidName(zone string) bool {
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

// Judge says what the answer to one query of the zone means: addrs and
// err as the resolver's LookupA returned them. A name that does not
// exist is "not listed", not an error.
func (z *Zone) Judge(addrs []netip.Addr, err error) Answer {
	var r Answer
	// The resolver returns *net.DNSError itself: a type assertion
	// spares errors.As's reflection on every unlisted client.
	dnsErr, isDNS := err.(*net.DNSError)
	if err != nil && !isDNS {
		isDNS = errors.As(err, &dnsErr)
	}
	switch {
	case err == nil:
	case isDNS && dnsErr.IsNotFound:
		return r
	case isDNS && dnsErr.IsTimeout:
		r.Err = "timeout"
		return r
	case isDNS:
		r.Err = dnsErr.Err
		return r
	default:
		r.Err = err.Error()
		return r
	}
	// One bad address spoils the answer (see the package comment).
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.Is4() || !codeNet.Contains(a):
			r.Err = "invalid answer " + a.String()
			return r
		case refusedNet.Contains(a), a == noListing:
			r.Err = "resolver blocked by the list operator (" + a.String() + ")"
			return r
		}
	}
	for _, a := range addrs {
		a = a.Unmap()
		if z.counts(u32(a)) {
			r.Codes = append(r.Codes, a)
		} else {
			r.Ignored = append(r.Ignored, a)
		}
	}
	r.Listed = len(r.Codes) > 0
	return r
}

// counts applies the Codes and Mask filters.
func (z *Zone) counts(code uint32) bool {
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

// Record counts one query of the zone: its answer and how long it took.
func (z *Zone) Record(a Answer, latency time.Duration) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.stats.Queries++
	z.stats.LatencySum += latency
	switch {
	case a.Err != "":
		z.stats.Errors++
		z.stats.LastError = a.Err
	case a.Listed:
		z.stats.Listed++
	}
}

// Stats returns the zone's counters so far.
func (z *Zone) Stats() Stats {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.stats
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
