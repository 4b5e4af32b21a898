package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Size is a number of bytes, written in YAML as a plain number of bytes
// (1048576) or with a binary unit: 512KB, 25MB, 1GB (also K, M, G, KiB, MiB,
// GiB, B; case-insensitive). Units are multiples of 1024.
type Size int64

// Size units.
const (
	KB Size = 1 << 10
	MB Size = 1 << 20
	GB Size = 1 << 30
)

var sizeUnits = map[string]Size{
	"": 1, "b": 1,
	"k": KB, "kb": KB, "kib": KB,
	"m": MB, "mb": MB, "mib": MB,
	"g": GB, "gb": GB, "gib": GB,
}

// ParseSize parses a size such as "25MB", "512KB" or "1048576".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	if i < len(t) && (t[i] == '-' || t[i] == '+') {
		i++
	}
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if !ok || num == "" || num == "-" || num == "+" {
		return 0, fmt.Errorf("want a size like 25MB, 512KB or a number of bytes, got %q", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/int64(mult) || n < math.MinInt64/int64(mult) {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return Size(n) * mult, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size like 25MB, got %s", describe(n))
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// String gives the size with the largest unit that divides it exactly:
// "25MB", "512KB", "1GB", or "1000B". It parses back with ParseSize.
func (s Size) String() string {
	switch {
	case s != 0 && s%GB == 0:
		return strconv.FormatInt(int64(s/GB), 10) + "GB"
	case s != 0 && s%MB == 0:
		return strconv.FormatInt(int64(s/MB), 10) + "MB"
	case s != 0 && s%KB == 0:
		return strconv.FormatInt(int64(s/KB), 10) + "KB"
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// ParseDuration parses a Go duration ("30s", "5m", "1h30m") extended with a
// leading number of days ("36d", "1d12h").
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	bad := fmt.Errorf("want a duration like 30s, 5m, 4h or 36d, got %q", s)
	var days int64
	if i := strings.IndexByte(t, 'd'); i >= 0 {
		neg := strings.HasPrefix(t, "-")
		num := strings.TrimPrefix(strings.TrimPrefix(t[:i], "-"), "+")
		if num == "" || strings.TrimLeft(num, "0123456789") != "" {
			return 0, bad
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > int64(math.MaxInt64/(24*time.Hour)) {
			return 0, fmt.Errorf("duration %q is out of range", s)
		}
		days = n
		if neg {
			days = -n
		}
		t = t[i+1:]
		if t == "" {
			return Duration(time.Duration(days) * 24 * time.Hour), nil
		}
		if t[0] == '-' || t[0] == '+' {
			return 0, bad
		}
		if neg {
			t = "-" + t
		}
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, bad
	}
	total := time.Duration(days) * 24 * time.Hour
	if (d > 0 && total > math.MaxInt64-d) || (d < 0 && total < math.MinInt64-d) {
		return 0, fmt.Errorf("duration %q is out of range", s)
	}
	return Duration(total + d), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration like 30s, 5m or 36d, got %s", describe(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String gives the duration in the form it is usually written: "36d",
// "5m", "1h30m", "10s", "1.5s". It parses back with ParseDuration.
func (d Duration) String() string {
	td := time.Duration(d)
	if td == 0 {
		return "0s"
	}
	if td%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(td/(24*time.Hour)), 10) + "d"
	}
	s := td.String()
	// "5m0s" → "5m", "1h0m0s" → "1h".
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Prefix is an IP network written as a CIDR ("10.0.0.0/8",
// "2001:db8::/32") or a bare address ("192.0.2.1" means /32, "2001:db8::1"
// means /128). The stored prefix is always masked (host bits cleared), and
// IPv4-mapped IPv6 prefixes (::ffff:10.0.0.0/104) are stored as IPv4.
type Prefix struct {
	netip.Prefix
}

// ParsePrefix parses a CIDR or a bare IP address.
func ParsePrefix(s string) (Prefix, error) {
	t := strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(t, "/") {
		var err error
		p, err = netip.ParsePrefix(t)
		if err != nil {
			return Prefix{}, fmt.Errorf("want a network like 10.0.0.0/8 or an IP address, got %q", s)
		}
	} else {
		a, err := netip.ParseAddr(t)
		if err != nil || a.Zone() != "" {
			return Prefix{}, fmt.Errorf("want a network like 10.0.0.0/8 or an IP address, got %q", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return Prefix{p.Masked()}, nil
}

// MustPrefix is ParsePrefix that panics on error, for tests and constants.
func MustPrefix(s string) Prefix {
	p, err := ParsePrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a network like 10.0.0.0/8, got %s", describe(n))
	}
	v, err := ParsePrefix(n.Value)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (p Prefix) MarshalYAML() (any, error) { return p.String(), nil }

// ContainsAddr reports whether a is in any of the networks. IPv4-mapped
// IPv6 addresses (::ffff:192.0.2.1) are matched as the IPv4 address, and
// zones are ignored.
func ContainsAddr(list []Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range list {
		if p.IsValid() && p.Contains(a) {
			return true
		}
	}
	return false
}

// describe names a YAML node for an error message: a mapping, a list, or
// the quoted scalar value.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	v := n.Value
	if len(v) > 60 {
		v = v[:57] + "..."
	}
	return strconv.Quote(v)
}
