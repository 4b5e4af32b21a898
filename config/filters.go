package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DNS configures the caching resolver every DNS-based filter shares.
type DNS struct {
	// Servers are host:port resolvers asked in order; empty: the
	// system's (/etc/resolv.conf).
	Servers []string `yaml:"servers"`
	// Timeout bounds one query (all servers tried).
	Timeout Duration `yaml:"timeout"`
	// CacheSize is the number of answers cached (by their TTL).
	CacheSize int `yaml:"cache_size"`
}

// State is where greylisting and rate counters are kept.
type State struct {
	// Store is "file:/path/state.db" (one gateway), "redis://host:6379/0"
	// or "rediss://..." (several gateways sharing state), or "memory:"
	// (lost on restart; tests and explain).
	Store string `yaml:"store"`
}

// FilterMode is a filter block's `mode`: enforce (default) or shadow
// (decisions logged and counted, never applied).
type FilterMode string

// Filters are the optional checks; a block present (even empty) enables
// its filter with defaults.
type Filters struct {
	Access     *Access   `yaml:"access"`
	RDNS       *RDNS     `yaml:"rdns"`
	Pregreet   *Pregreet `yaml:"pregreet"`
	Helo       *Helo     `yaml:"helo"`
	DNSBL      *DNSBL    `yaml:"dnsbl"`
	Barring    *Barring  `yaml:"barring"`
	Senders    *Senders  `yaml:"senders"`
	NullSender string    `yaml:"null_sender"` // accept | reject
	SPF        *SPF      `yaml:"spf"`
	Greylist   *Greylist `yaml:"greylist"`
	Rates      *Rates    `yaml:"rates"`
	Scoring    *Scoring  `yaml:"scoring"`

	// Data-stage (content) filters: config/content.go.
	MIME        *MIME        `yaml:"mime"`
	DKIM        *DKIM        `yaml:"dkim"`
	DMARC       *DMARC       `yaml:"dmarc"`
	SURBL       *SURBL       `yaml:"surbl"`
	ClamAV      *ClamAV      `yaml:"clamav"`
	Spamd       *Spamd       `yaml:"spamd"`
	Attachments *Attachments `yaml:"attachments"`
	Content     *Content     `yaml:"content"`
}

// AccessRules are CIDR allow/deny lists; allow wins.
type AccessRules struct {
	Allow []Prefix `yaml:"allow"`
	Deny  []Prefix `yaml:"deny"`
}

// Access is the global client IP allow/deny list (filters.access).
type Access struct {
	Mode  FilterMode `yaml:"mode"`
	Allow []Prefix   `yaml:"allow"`
	Deny  []Prefix   `yaml:"deny"`
}

// RDNS requires a reverse DNS name for the client (filters.rdns).
type RDNS struct {
	Mode          FilterMode `yaml:"mode"`
	RequirePTR    *bool      `yaml:"require_ptr"`    // default true
	RequireFCRDNS bool       `yaml:"require_fcrdns"` // forward-confirmed
	Action        string     `yaml:"action"`         // reject | tempfail | score
	Score         float64    `yaml:"score"`          // points for action: score
	OnDNSError    string     `yaml:"on_dns_error"`   // tempfail | skip
}

// Pregreet refuses clients that talk before the banner (filters.pregreet).
type Pregreet struct {
	Mode   FilterMode `yaml:"mode"`
	Wait   Duration   `yaml:"wait"`   // banner held back this long
	Action string     `yaml:"action"` // reject | tempfail | score
	Score  float64    `yaml:"score"`
}

// Helo checks the HELO/EHLO name (filters.helo).
type Helo struct {
	Mode                    FilterMode `yaml:"mode"`
	RequireFQDN             *bool      `yaml:"require_fqdn"`               // default true
	RejectOwnName           *bool      `yaml:"reject_own_name"`            // default true
	RejectIPLiteralMismatch *bool      `yaml:"reject_ip_literal_mismatch"` // default true
	Action                  string     `yaml:"action"`                     // reject | score
	Score                   float64    `yaml:"score"`
}

// DNSBLZone is one block or allow list.
type DNSBLZone struct {
	Zone   string   `yaml:"zone"`
	Weight float64  `yaml:"weight"` // default 1 (allow zones: -1)
	Codes  []string `yaml:"codes"`  // "127.0.0.2" or "127.0.0.2-127.0.0.11"; empty: any
	Mask   int      `yaml:"mask"`   // bitmask on the answer's last octet; 0: unused
}

// fromScalar lets a zone be written as its name alone.
func (z *DNSBLZone) fromScalar(s string) { z.Zone = s }

// DNSBL queries DNS block and allow lists (filters.dnsbl).
type DNSBL struct {
	Mode           FilterMode  `yaml:"mode"`
	Zones          []DNSBLZone `yaml:"zones"`
	AllowZones     []DNSBLZone `yaml:"allow_zones"`
	Threshold      float64     `yaml:"threshold"`       // default 1
	AllowThreshold float64     `yaml:"allow_threshold"` // <0: score at or below whitelists
	RejectAt       string      `yaml:"reject_at"`       // rcpt (default) | connect
	Action         string      `yaml:"action"`          // reject | tempfail
}

// Barring is the seed's wildcard barring of senders and recipients.
type Barring struct {
	Mode       FilterMode `yaml:"mode"`
	Senders    []string   `yaml:"senders"`
	Recipients []string   `yaml:"recipients"`
}

// Senders are sender allow/deny lists (filters.senders).
type Senders struct {
	Mode  FilterMode `yaml:"mode"`
	Allow []string   `yaml:"allow"`
	Deny  []string   `yaml:"deny"`
}

// SPF maps SPF results to actions (filters.spf): ignore, tag, reject or
// tempfail.
type SPF struct {
	Mode      FilterMode `yaml:"mode"`
	Fail      string     `yaml:"fail"`
	SoftFail  string     `yaml:"softfail"`
	Neutral   string     `yaml:"neutral"`
	None      string     `yaml:"none"`
	TempError string     `yaml:"temperror"`
	PermError string     `yaml:"permerror"`
	TagScore  float64    `yaml:"tag_score"`
	Timeout   Duration   `yaml:"timeout"`
}

// Greylist is triplet greylisting (filters.greylist).
type Greylist struct {
	Mode           FilterMode `yaml:"mode"`
	Delay          Duration   `yaml:"delay"`
	Expire         Duration   `yaml:"expire"`
	PassTTL        Duration   `yaml:"pass_ttl"`
	NetmaskV4      int        `yaml:"netmask_v4"`
	NetmaskV6      int        `yaml:"netmask_v6"`
	KeyOnSPFDomain bool       `yaml:"key_on_spf_domain"`
	OnError        string     `yaml:"on_error"` // tempfail | accept
}

// RateLimits are one client control rule.
type RateLimits struct {
	Messages   Rate `yaml:"messages"`
	Recipients Rate `yaml:"recipients"`
	MaxSize    Size `yaml:"max_size"`
}

// Rates are the seed's client control rules (filters.rates).
type Rates struct {
	Mode        FilterMode `yaml:"mode"`
	PerSender   RateLimits `yaml:"per_sender"`
	PerClientIP RateLimits `yaml:"per_client_ip"`
}

// Scoring turns the score of weighted checks (DNSBL below its threshold,
// rdns/helo/pregreet/SPF with action score or tag) into a refusal at
// RCPT, and a header at DATA (filters.scoring).
type Scoring struct {
	Reject float64 `yaml:"reject"` // score >= reject: 550 5.7.1 at RCPT; 0: never
	Tag    float64 `yaml:"tag"`    // score >= tag: X-Mailgate-Score header; default 1
}

// Rate is a count per time window, written "200/1h" (or "60/m").
type Rate struct {
	N   int
	Per Duration
}

// IsZero reports whether no rate is set.
func (r Rate) IsZero() bool { return r.N == 0 && r.Per == 0 }

// ParseRate parses "N/duration" such as "60/1m", "200/1h" or "60/m".
func ParseRate(s string) (Rate, error) {
	bad := fmt.Errorf("want a rate like 60/1m or 200/1h, got %q", s)
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, bad
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 0 {
		return Rate{}, bad
	}
	per = strings.TrimSpace(per)
	if per != "" && (per[0] < '0' || per[0] > '9') {
		per = "1" + per
	}
	d, err := ParseDuration(per)
	if err != nil || d <= 0 {
		return Rate{}, bad
	}
	return Rate{N: n, Per: d}, nil
}

func (r Rate) String() string { return strconv.Itoa(r.N) + "/" + r.Per.String() }

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a rate like 60/1m, got %s", describe(n))
	}
	v, err := ParseRate(n.Value)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (r Rate) MarshalYAML() (any, error) { return r.String(), nil }

// Defaults of the filters, DNS and state.
const (
	DefaultDNSTimeout   = Duration(2 * time.Second)
	DefaultDNSCacheSize = 100000
	DefaultStateStore   = "file:/var/lib/mailgate/state.db"

	DefaultMaxConnections      = 2000
	DefaultMaxConnectionsPerIP = 20

	DefaultPregreetWait   = Duration(time.Second)
	DefaultDNSBLThreshold = 1.0
	DefaultSPFTimeout     = Duration(10 * time.Second)
	DefaultGreylistDelay  = Duration(5 * time.Minute)
	DefaultGreylistExpire = Duration(4 * time.Hour)
	DefaultGreylistPass   = Duration(36 * 24 * time.Hour)
	DefaultNetmaskV4      = 24
	DefaultNetmaskV6      = 64
	DefaultScore          = 1.0
)

// DefaultConnectionRatePerIP: new connections per client address.
var DefaultConnectionRatePerIP = Rate{N: 60, Per: Duration(time.Minute)}

func setStr(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

func setBool(p **bool, def bool) {
	if *p == nil {
		v := def
		*p = &v
	}
}

func setFloat(p *float64, def float64) {
	if *p == 0 {
		*p = def
	}
}

func (c *Config) applyFilterDefaults() {
	setDur(&c.DNS.Timeout, DefaultDNSTimeout)
	setInt(&c.DNS.CacheSize, DefaultDNSCacheSize)
	setStr(&c.State.Store, DefaultStateStore)
	setInt(&c.Limits.MaxConnections, DefaultMaxConnections)
	setInt(&c.Limits.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	if c.Limits.ConnectionRatePerIP.IsZero() {
		c.Limits.ConnectionRatePerIP = DefaultConnectionRatePerIP
	}

	f := &c.Filters
	setStr(&f.NullSender, "accept")
	if r := f.RDNS; r != nil {
		setBool(&r.RequirePTR, true)
		setStr(&r.Action, "reject")
		setFloat(&r.Score, DefaultScore)
		setStr(&r.OnDNSError, "tempfail")
	}
	if p := f.Pregreet; p != nil {
		setDur(&p.Wait, DefaultPregreetWait)
		setStr(&p.Action, "reject")
		setFloat(&p.Score, DefaultScore)
	}
	if h := f.Helo; h != nil {
		setBool(&h.RequireFQDN, true)
		setBool(&h.RejectOwnName, true)
		setBool(&h.RejectIPLiteralMismatch, true)
		setStr(&h.Action, "reject")
		setFloat(&h.Score, DefaultScore)
	}
	if d := f.DNSBL; d != nil {
		setFloat(&d.Threshold, DefaultDNSBLThreshold)
		setStr(&d.RejectAt, "rcpt")
		setStr(&d.Action, "reject")
		for i := range d.Zones {
			setFloat(&d.Zones[i].Weight, 1)
		}
		for i := range d.AllowZones {
			setFloat(&d.AllowZones[i].Weight, -1)
			if d.AllowZones[i].Weight > 0 {
				d.AllowZones[i].Weight = -d.AllowZones[i].Weight
			}
		}
	}
	if s := f.SPF; s != nil {
		setStr(&s.Fail, "reject")
		setStr(&s.SoftFail, "tag")
		setStr(&s.Neutral, "ignore")
		setStr(&s.None, "ignore")
		setStr(&s.TempError, "tempfail")
		setStr(&s.PermError, "ignore")
		setFloat(&s.TagScore, DefaultScore)
		setDur(&s.Timeout, DefaultSPFTimeout)
	}
	if g := f.Greylist; g != nil {
		setDur(&g.Delay, DefaultGreylistDelay)
		setDur(&g.Expire, DefaultGreylistExpire)
		setDur(&g.PassTTL, DefaultGreylistPass)
		setInt(&g.NetmaskV4, DefaultNetmaskV4)
		setInt(&g.NetmaskV6, DefaultNetmaskV6)
		setStr(&g.OnError, "tempfail")
	}
	if s := f.Scoring; s != nil {
		setFloat(&s.Tag, DefaultScore)
	}
	c.applyContentDefaults()
	for _, m := range c.filterModes() {
		setStr((*string)(m.mode), string(ModeEnforce))
	}
}

// Filter modes.
const (
	ModeEnforce FilterMode = "enforce"
	ModeShadow  FilterMode = "shadow"
)

type namedMode struct {
	key  string
	mode *FilterMode
}

// filterModes lists the mode of every enabled filter block.
func (c *Config) filterModes() []namedMode {
	f := &c.Filters
	var out []namedMode
	add := func(key string, m *FilterMode) { out = append(out, namedMode{"filters." + key + ".mode", m}) }
	if f.Access != nil {
		add("access", &f.Access.Mode)
	}
	if f.RDNS != nil {
		add("rdns", &f.RDNS.Mode)
	}
	if f.Pregreet != nil {
		add("pregreet", &f.Pregreet.Mode)
	}
	if f.Helo != nil {
		add("helo", &f.Helo.Mode)
	}
	if f.DNSBL != nil {
		add("dnsbl", &f.DNSBL.Mode)
	}
	if f.Barring != nil {
		add("barring", &f.Barring.Mode)
	}
	if f.Senders != nil {
		add("senders", &f.Senders.Mode)
	}
	if f.SPF != nil {
		add("spf", &f.SPF.Mode)
	}
	if f.Greylist != nil {
		add("greylist", &f.Greylist.Mode)
	}
	if f.Rates != nil {
		add("rates", &f.Rates.Mode)
	}
	c.contentModes(add)
	return out
}

// NeedsState reports whether a filter keeps state in the store
// (greylisting, client control rules); connection rates always do.
func (c *Config) NeedsState() bool { return c.Filters.Greylist != nil || c.Filters.Rates != nil }
