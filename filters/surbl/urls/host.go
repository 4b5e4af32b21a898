package urls

import (
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// Target is one thing a URL list is asked about.
type Target struct {
	// Name is a registrable domain, lower case, in punycode, without
	// a trailing dot ("example.co.uk"), or a dotted IPv4 address.
	Name string
	// IP says Name is an IPv4 address.
	IP bool
}

// Query is the name looked up under a list's zone: the domain itself,
// or the address reversed as SURBL lists them ("192.0.2.1" → "1.2.0.192").
func (t Target) Query() string {
	if !t.IP {
		return t.Name
	}
	p := strings.Split(t.Name, ".")
	for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
		p[i], p[j] = p[j], p[i]
	}
	return strings.Join(p, ".")
}

// maxHost bounds the authority looked at (RFC 1035 allows 253 octets;
// percent-encoding, userinfo and a port make it longer, not this long).
const maxHost = 1024

// Host reduces the authority of a URL ("user@Sub.Example.COM:8080",
// "%65xample.com", "bücher.example", "0x7f.1") to what a URL list
// looks up: the registrable domain or the IPv4 address. ok is false for
// what is no host a browser would go to, or has no registrable domain
// (a bare public suffix, a single label, IPv6).
func Host(authority string) (t Target, ok bool) {
	h, ok := hostName(authority)
	if !ok {
		return Target{}, false
	}
	if ip, isIP, valid := parseIPv4(h); isIP {
		if !valid {
			return Target{}, false
		}
		return Target{Name: ip.String(), IP: true}, true
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(h)
	if err != nil {
		return Target{}, false
	}
	return Target{Name: d}, true
}

// hostName is the host of an authority as a browser would connect to
// it: userinfo and port removed, percent-decoded, mapped by IDNA
// (UTS #46, non-transitional, as browsers do) to lower-case punycode,
// without trailing dots. ok is false for an invalid host.
func hostName(a string) (string, bool) {
	if len(a) > maxHost {
		return "", false
	}
	// The userinfo ends at the last "@": in "http://bank.com@evil.com/"
	// the browser goes to evil.com.
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		a = a[i+1:]
	}
	if strings.HasPrefix(a, "[") {
		return "", false // IPv6 literal: no URL list takes them
	}
	if i := strings.LastIndexByte(a, ':'); i >= 0 {
		if !allDigits(a[i+1:]) {
			return "", false
		}
		a = a[:i]
	}
	a, ok := percentDecode(a)
	if !ok {
		return "", false
	}
	if !isASCII(a) {
		if !utf8.ValidString(a) {
			return "", false // a browser sees U+FFFD, which IDNA refuses
		}
		var err error
		if a, err = lookup.ToASCII(a); err != nil {
			return "", false
		}
	}
	a = strings.TrimRight(strings.ToLower(a), ".")
	if !validName(a) {
		return "", false
	}
	return a, true
}

// lookup is IDNA as browsers apply it to hosts: UTS #46 mapping (case,
// width, the ideographic full stops), non-transitional (ß stays ß), the
// Bidi rule, and "_" allowed (it occurs in real host names).
var lookup = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.BidiRule(), idna.StrictDomainName(false))

// validName: labels of letters, digits, "-" and "_", none empty, none
// longer than 63 octets, 253 in all.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if n == 0 {
				return false
			}
			n = 0
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			if n++; n > 63 {
				return false
			}
		default:
			return false
		}
	}
	return n > 0
}

// percentDecode decodes %XX escapes; a stray "%" makes the host
// invalid, as in a browser.
func percentDecode(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", false
		}
		b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	return string(b), true
}

// parseIPv4 parses a host the way browsers do (WHATWG URL "IPv4
// parser"), which is how spam hides addresses: a host whose last label
// is a number is an address, each of 1 to 4 parts decimal, octal (a
// leading 0) or hex (0x), the last part filling the remaining octets:
// "3232235777", "0xc0.0250.1.1", "0x7f.1". isIP says the host is
// meant as an address; valid says it is one.
func parseIPv4(h string) (ip netip.Addr, isIP, valid bool) {
	parts := strings.Split(h, ".")
	last := parts[len(parts)-1]
	if !allDigits(last) && !(len(last) >= 2 && last[0] == '0' && last[1] == 'x' && allHex(last[2:])) {
		return netip.Addr{}, false, false
	}
	if last == "" || len(parts) > 4 {
		return netip.Addr{}, true, false
	}
	var nums [4]uint64
	for i, p := range parts {
		n, ok := ipNumber(p)
		if !ok || (i < len(parts)-1 && n > 255) {
			return netip.Addr{}, true, false
		}
		nums[i] = n
	}
	k := len(parts) - 1
	if nums[k] >= 1<<(8*(4-k)) {
		return netip.Addr{}, true, false
	}
	v := nums[k]
	for i := range k {
		v += nums[i] << (8 * (3 - i))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true, true
}

// ipNumber parses one part of a numeric host; a value that needs more
// than 32 bits is invalid whatever its part.
func ipNumber(s string) (uint64, bool) {
	base := uint64(10)
	switch {
	case len(s) >= 2 && s[0] == '0' && s[1] == 'x':
		s, base = s[2:], 16
		if s == "" {
			return 0, true
		}
	case len(s) >= 2 && s[0] == '0':
		s, base = s[1:], 8
	case s == "":
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		d := uint64(unhex(s[i]))
		if !isHex(s[i]) || d >= base {
			return 0, false
		}
		if n = n*base + d; n > 1<<32 {
			return 0, false
		}
	}
	return n, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
