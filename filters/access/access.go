// Package access is the client IP allow/deny list of SPEC §4 connect:
// global rules, per-listener rules, and the relay networks, which are
// trusted like an allow entry.
//
// An allowed client is whitelisted: the antispam filters are skipped for
// the session (never relay control, size or loop limits). Allow wins over
// deny, so a deny of a whole range can carry exceptions. A denied client
// gets "554 5.7.1 Access denied" and the connection is closed.
//
// Configuration (SPEC §3):
//
//	filters:
//	  access: {allow: [CIDR...], deny: [CIDR...]}   # Config.Global
//	listeners:
//	  - name: mx
//	    access: {allow: [CIDR...], deny: [CIDR...]} # Config.Listeners["mx"]
//	relay:
//	  networks: [CIDR...]                            # Config.Trusted
package access

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"mailgate/pipeline"
)

// Rules are one allow list and one deny list.
type Rules struct{ Allow, Deny []netip.Prefix }

// Config is the access policy.
type Config struct {
	Global Rules
	// Listeners holds each listener's own rules, by listener name
	// (pipeline.Session.Listener). They add to the global rules.
	Listeners map[string]Rules
	// Trusted are the relay networks (relay.networks): allowed like an
	// allow entry, so a trusted host is never refused nor spam-checked.
	Trusted []netip.Prefix
}

// Filter is the access list filter.
type Filter struct {
	global    lists
	listeners map[string]lists
	trusted   *set
}

type lists struct{ allow, deny *set }

// New returns the filter; an invalid network is an error.
func New(c Config) (*Filter, error) {
	f := &Filter{listeners: map[string]lists{}}
	var err error
	if f.global, err = newLists(c.Global, "global"); err != nil {
		return nil, err
	}
	for name, r := range c.Listeners {
		if f.listeners[name], err = newLists(r, "listener "+name); err != nil {
			return nil, err
		}
	}
	if f.trusted, err = newSet(c.Trusted); err != nil {
		return nil, fmt.Errorf("access: relay networks: %w", err)
	}
	return f, nil
}

func newLists(r Rules, where string) (lists, error) {
	allow, err := newSet(r.Allow)
	if err != nil {
		return lists{}, fmt.Errorf("access: %s allow: %w", where, err)
	}
	deny, err := newSet(r.Deny)
	if err != nil {
		return lists{}, fmt.Errorf("access: %s deny: %w", where, err)
	}
	return lists{allow, deny}, nil
}

func (*Filter) Name() string        { return "access" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

func deny(reason string) pipeline.Verdict {
	v := pipeline.Refuse(554, [3]int{5, 7, 1}, "Access denied", reason)
	v.Reply.Close = true
	return v
}

// Connect whitelists an allowed client, refuses a denied one, and has no
// opinion about the others.
func (f *Filter) Connect(_ context.Context, s *pipeline.Session) pipeline.Verdict {
	ip := s.ClientIP()
	if why, ok := f.allowed(ip, s.Listener); ok {
		return pipeline.Whitelist(why)
	}
	if n, ok := f.global.deny.lookup(ip); ok {
		return deny(fmt.Sprintf("client %s in global deny network %s", ip, n))
	}
	if n, ok := f.listeners[s.Listener].deny.lookup(ip); ok {
		return deny(fmt.Sprintf("client %s in listener %s deny network %s", ip, s.Listener, n))
	}
	return pipeline.Pass()
}

// Allowed reports whether ip is allow-listed (globally or for the
// listener) or in a relay network: such clients are also exempt from the
// per-IP connection limits.
func (f *Filter) Allowed(ip netip.Addr, listener string) bool {
	_, ok := f.allowed(ip.Unmap(), listener)
	return ok
}

func (f *Filter) allowed(ip netip.Addr, listener string) (why string, ok bool) {
	if n, ok := f.global.allow.lookup(ip); ok {
		return fmt.Sprintf("client %s in global allow network %s", ip, n), true
	}
	if n, ok := f.listeners[listener].allow.lookup(ip); ok {
		return fmt.Sprintf("client %s in listener %s allow network %s", ip, listener, n), true
	}
	if n, ok := f.trusted.lookup(ip); ok {
		return fmt.Sprintf("client %s in relay network %s", ip, n), true
	}
	return "", false
}

// set is a set of networks. Lists may hold thousands of entries (exported
// blocklists), so a lookup masks the address to each prefix length in use
// and looks the result up in a map: at most 33 (IPv4) or 129 (IPv6) map
// lookups, however long the list.
type set struct {
	nets         map[netip.Prefix]bool
	bits4, bits6 []int // prefix lengths in use, longest first
}

func newSet(ps []netip.Prefix) (*set, error) {
	s := &set{nets: make(map[netip.Prefix]bool, len(ps))}
	for _, p := range ps {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid network %q", p)
		}
		// Clients are matched unmapped: write ::ffff:10.0.0.0/104 as
		// 10.0.0.0/8 so it matches them.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		s.nets[p] = true
		if p.Addr().Is4() {
			s.bits4 = append(s.bits4, p.Bits())
		} else {
			s.bits6 = append(s.bits6, p.Bits())
		}
	}
	for _, b := range []*[]int{&s.bits4, &s.bits6} {
		slices.Sort(*b)
		*b = slices.Compact(*b)
		slices.Reverse(*b)
	}
	return s, nil
}

// lookup returns the most specific network of the set holding ip. A nil
// set holds nothing.
func (s *set) lookup(ip netip.Addr) (netip.Prefix, bool) {
	if s == nil || !ip.IsValid() {
		return netip.Prefix{}, false
	}
	bits := s.bits4
	if ip.Is6() {
		bits = s.bits6
	}
	for _, b := range bits {
		p, _ := ip.Prefix(b)
		if s.nets[p] {
			return p, true
		}
	}
	return netip.Prefix{}, false
}
