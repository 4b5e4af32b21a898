package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// The data-stage (content) filter blocks of SPEC §3. Like the envelope
// filters, a block present enables its filter.

// MIME bounds the shared MIME parse every content filter reads
// (filters.mime). It is enabled, with its defaults, whenever any content
// filter is.
type MIME struct {
	// MaxDepth is the deepest multipart nesting parsed; deeper is
	// malformed (enmime takes exponential time on deep nesting).
	MaxDepth int `yaml:"max_depth"`
	// MaxParts is the most MIME parts parsed.
	MaxParts int `yaml:"max_parts"`
	// MaxHeaderSize bounds any one header section (the message's or a
	// part's).
	MaxHeaderSize Size `yaml:"max_header_size"`
	// MaxParseSize: larger messages are not MIME-parsed (they are still
	// scanned by ClamAV up to its max_size); content filters that need
	// the parse treat them as unparsed.
	MaxParseSize Size `yaml:"max_parse_size"`
	// Malformed is what happens to a message the pre-scan or enmime
	// cannot parse: accept (unparsed, content checks that need parts
	// skipped, an X-Mailgate-MIME header says why) or reject (554 5.6.0).
	Malformed string `yaml:"malformed"`
}

// DKIMSignKey is one outbound signing key.
type DKIMSignKey struct {
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	Key      string `yaml:"key"` // PEM file: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8)
}

// DKIM verifies DKIM signatures of incoming mail and signs authenticated
// submission mail (filters.dkim).
type DKIM struct {
	Mode FilterMode `yaml:"mode"`
	// Verify incoming signatures (default true); results go to
	// Authentication-Results and DMARC.
	Verify *bool `yaml:"verify"`
	// MaxSignatures verified per message (default 5).
	MaxSignatures int `yaml:"max_signatures"`
	// Timeout for all key lookups of a message (default 10s).
	Timeout Duration `yaml:"timeout"`
	// Sign mail from authenticated users whose From domain has a key.
	Sign []DKIMSignKey `yaml:"sign"`
}

// DMARC evaluates the From domain's DMARC policy (filters.dmarc).
type DMARC struct {
	Mode FilterMode `yaml:"mode"`
	// RejectPolicy honours p=reject with 550 5.7.1 (default true); false:
	// the message is tagged (scored) instead.
	RejectPolicy *bool `yaml:"reject_policy"`
	// Quarantine is what p=quarantine does: tag (default) | reject | ignore.
	Quarantine string `yaml:"quarantine"`
	// TagScore is added for a failing message that is tagged.
	TagScore float64 `yaml:"tag_score"`
	// TempError when the policy cannot be looked up: ignore (default) |
	// tempfail.
	TempError string `yaml:"temperror"`
}

// SURBL looks up the domains of URLs in the message (filters.surbl).
type SURBL struct {
	Mode  FilterMode  `yaml:"mode"`
	Zones []DNSBLZone `yaml:"zones"` // zone, codes, mask (weight unused)
	// MaxDomains looked up per message (default 50); the first found.
	MaxDomains int `yaml:"max_domains"`
	// Action for a listed domain: reject (default, 554 5.7.1) | score.
	Action string  `yaml:"action"`
	Score  float64 `yaml:"score"`
	// Timeout for all lookups of a message (default 5s).
	Timeout Duration `yaml:"timeout"`
	// OnDNSError: skip (default) | tempfail.
	OnDNSError string `yaml:"on_dns_error"`
}

// ClamAV scans messages with clamd (filters.clamav).
type ClamAV struct {
	Mode FilterMode `yaml:"mode"`
	// Address of clamd: unix:/run/clamav/clamd.ctl or tcp:host:port
	// (a bare host:port is TCP).
	Address string `yaml:"address"`
	// OnError when clamd is down, slow or answers an error: tempfail
	// (default, 451 4.3.0) | accept (logged loudly).
	OnError string `yaml:"on_error"`
	// MaxSize: larger messages are scanned up to this size only (keep it
	// at or below clamd's StreamMaxLength). Default 25MB.
	MaxSize Size `yaml:"max_size"`
	// Timeout for one scan (default 60s).
	Timeout Duration `yaml:"timeout"`
	// Connections is the most concurrent scans (default 8).
	Connections int `yaml:"connections"`
}

// Spamd scores messages with SpamAssassin's spamd (filters.spamd).
type Spamd struct {
	Mode FilterMode `yaml:"mode"`
	// Address of spamd: host:port or unix:/path.
	Address string `yaml:"address"`
	// RejectScore: at or above, 550 5.7.1 (0: never reject).
	RejectScore float64 `yaml:"reject_score"`
	// TagScore: at or above, X-Spam-Flag: YES (default 5).
	TagScore float64 `yaml:"tag_score"`
	// MaxSize: larger messages are not scored (default 512KB, like spamc).
	MaxSize Size `yaml:"max_size"`
	// Timeout for one check (default 30s).
	Timeout Duration `yaml:"timeout"`
	// OnError when spamd is down or slow: accept (default) | tempfail.
	OnError string `yaml:"on_error"`
}

// Attachments bars attachments by name and detected type
// (filters.attachments).
type Attachments struct {
	Mode FilterMode `yaml:"mode"`
	// DenyExtensions are file name extensions, without the dot,
	// compared case-insensitively on every dot-separated suffix
	// ("invoice.pdf.exe" and "a.tar.exe" both match exe).
	DenyExtensions []string `yaml:"deny_extensions"`
	// DenyTypes are detected content types (from the part's bytes, not
	// its declared type), e.g. application/x-msdownload.
	DenyTypes []string `yaml:"deny_types"`
	// ScanArchives looks inside zip attachments for barred names and
	// types (default true).
	ScanArchives *bool `yaml:"scan_archives"`
	// Action: reject (default, 554 5.7.1) | tempfail.
	Action string `yaml:"action"`
}

// Content refuses messages whose header fields or body lines match a
// regular expression (filters.content), 554 5.7.1.
type Content struct {
	Mode        FilterMode `yaml:"mode"`
	DenyHeaders []string   `yaml:"deny_headers"` // matched against "Name: value" (unfolded)
	DenyBody    []string   `yaml:"deny_body"`    // matched against each decoded text line
}

// Metrics is the Prometheus and health endpoint (SPEC §7).
type Metrics struct {
	// Address to serve /metrics, /healthz and /readyz on; empty: off.
	Address string `yaml:"address"`
}

// Content filter defaults.
const (
	DefaultMIMEMaxDepth      = 10
	DefaultMIMEMaxParts      = 200
	DefaultMIMEMaxHeaderSize = 256 * KB
	DefaultMIMEMaxParseSize  = 25 * MB
	DefaultDKIMMaxSignatures = 5
	DefaultDKIMTimeout       = Duration(10 * time.Second)
	DefaultSURBLMaxDomains   = 50
	DefaultSURBLTimeout      = Duration(5 * time.Second)
	DefaultClamAVMaxSize     = 25 * MB
	DefaultClamAVTimeout     = Duration(60 * time.Second)
	DefaultClamAVConns       = 8
	DefaultSpamdTagScore     = 5
	DefaultSpamdMaxSize      = 512 * KB
	DefaultSpamdTimeout      = Duration(30 * time.Second)
)

// DefaultDenyExtensions are the seed's barred attachment extensions.
var DefaultDenyExtensions = []string{"exe", "scr", "com", "pif", "bat", "cmd", "js", "vbs", "jar"}

// NeedsMIME reports whether any content filter reads MIME parts.
func (c *Config) NeedsMIME() bool {
	f := &c.Filters
	return f.MIME != nil || f.SURBL != nil || f.Attachments != nil || f.Content != nil
}

func (c *Config) applyContentDefaults() {
	f := &c.Filters
	if c.NeedsMIME() && f.MIME == nil {
		f.MIME = &MIME{}
	}
	if m := f.MIME; m != nil {
		setInt(&m.MaxDepth, DefaultMIMEMaxDepth)
		setInt(&m.MaxParts, DefaultMIMEMaxParts)
		setSize(&m.MaxHeaderSize, DefaultMIMEMaxHeaderSize)
		setSize(&m.MaxParseSize, DefaultMIMEMaxParseSize)
		setStr(&m.Malformed, "accept")
	}
	if d := f.DKIM; d != nil {
		setBool(&d.Verify, true)
		setInt(&d.MaxSignatures, DefaultDKIMMaxSignatures)
		setDur(&d.Timeout, DefaultDKIMTimeout)
	}
	if d := f.DMARC; d != nil {
		setBool(&d.RejectPolicy, true)
		setStr(&d.Quarantine, "tag")
		setFloat(&d.TagScore, DefaultScore)
		setStr(&d.TempError, "ignore")
	}
	if s := f.SURBL; s != nil {
		setInt(&s.MaxDomains, DefaultSURBLMaxDomains)
		setStr(&s.Action, "reject")
		setFloat(&s.Score, DefaultScore)
		setDur(&s.Timeout, DefaultSURBLTimeout)
		setStr(&s.OnDNSError, "skip")
	}
	if a := f.ClamAV; a != nil {
		setStr(&a.OnError, "tempfail")
		setSize(&a.MaxSize, DefaultClamAVMaxSize)
		setDur(&a.Timeout, DefaultClamAVTimeout)
		setInt(&a.Connections, DefaultClamAVConns)
	}
	if s := f.Spamd; s != nil {
		setFloat(&s.TagScore, DefaultSpamdTagScore)
		setSize(&s.MaxSize, DefaultSpamdMaxSize)
		setDur(&s.Timeout, DefaultSpamdTimeout)
		setStr(&s.OnError, "accept")
	}
	if a := f.Attachments; a != nil {
		if a.DenyExtensions == nil && a.DenyTypes == nil {
			a.DenyExtensions = append([]string(nil), DefaultDenyExtensions...)
		}
		setBool(&a.ScanArchives, true)
		setStr(&a.Action, "reject")
	}
}

func setSize(p *Size, def Size) {
	if *p == 0 {
		*p = def
	}
}

func (c *Config) contentModes(add func(string, *FilterMode)) {
	f := &c.Filters
	if f.DKIM != nil {
		add("dkim", &f.DKIM.Mode)
	}
	if f.DMARC != nil {
		add("dmarc", &f.DMARC.Mode)
	}
	if f.SURBL != nil {
		add("surbl", &f.SURBL.Mode)
	}
	if f.ClamAV != nil {
		add("clamav", &f.ClamAV.Mode)
	}
	if f.Spamd != nil {
		add("spamd", &f.Spamd.Mode)
	}
	if f.Attachments != nil {
		add("attachments", &f.Attachments.Mode)
	}
	if f.Content != nil {
		add("content", &f.Content.Mode)
	}
}

func (c *Config) validateContent(d *diag) {
	f := &c.Filters
	if m := f.MIME; m != nil {
		if m.MaxDepth < 1 || m.MaxDepth > 50 {
			d.errorf("filters.mime.max_depth", "%d is out of range: want 1 to 50", m.MaxDepth)
		}
		if m.MaxParts < 1 || m.MaxParts > 10000 {
			d.errorf("filters.mime.max_parts", "%d is out of range: want 1 to 10000", m.MaxParts)
		}
		if m.MaxHeaderSize < KB || m.MaxHeaderSize > 16*MB {
			d.errorf("filters.mime.max_header_size", "%s is out of range: want 1KB to 16MB", m.MaxHeaderSize)
		}
		if m.MaxParseSize < 0 {
			d.errorf("filters.mime.max_parse_size", "must not be negative")
		}
		checkEnum(d, "filters.mime.malformed", &m.Malformed, []string{"accept", "reject"})
	}
	if k := f.DKIM; k != nil {
		if k.MaxSignatures < 1 || k.MaxSignatures > 50 {
			d.errorf("filters.dkim.max_signatures", "%d is out of range: want 1 to 50", k.MaxSignatures)
		}
		checkTimeout(d, "filters.dkim.timeout", k.Timeout, time.Minute)
		seen := map[string]bool{}
		for i, s := range k.Sign {
			key := fmt.Sprintf("filters.dkim.sign[%d]", i)
			if n, err := checkDomain(s.Domain, true); err != nil {
				d.errorf(key+".domain", "%v", err)
			} else {
				s.Domain, k.Sign[i].Domain = n, n
			}
			if seen[s.Domain] {
				d.errorf(key+".domain", "%s has two keys: give one per domain", s.Domain)
			}
			seen[s.Domain] = true
			if !isSelector(s.Selector) {
				d.errorf(key+".selector", "%q is not a valid selector", s.Selector)
			}
			if s.Key == "" {
				d.errorf(key+".key", "a PEM private key file is required")
			} else if _, err := os.Stat(s.Key); err != nil {
				d.errorf(key+".key", "%v", err)
			}
		}
	}
	if m := f.DMARC; m != nil {
		checkEnum(d, "filters.dmarc.quarantine", &m.Quarantine, []string{"tag", "reject", "ignore"})
		checkEnum(d, "filters.dmarc.temperror", &m.TempError, []string{"ignore", "tempfail"})
		checkScore(d, "filters.dmarc.tag_score", m.TagScore)
		if f.SPF == nil || f.DKIM == nil || !*f.DKIM.Verify {
			d.warnf("filters.dmarc", "DMARC needs filters.spf and filters.dkim (verify: true): without them every message fails DMARC")
		}
	}
	if s := f.SURBL; s != nil {
		if len(s.Zones) == 0 {
			d.errorf("filters.surbl.zones", "give at least one zone, e.g. multi.surbl.org")
		}
		checkZones(d, "filters.surbl.zones", s.Zones)
		if s.MaxDomains < 1 || s.MaxDomains > 1000 {
			d.errorf("filters.surbl.max_domains", "%d is out of range: want 1 to 1000", s.MaxDomains)
		}
		checkEnum(d, "filters.surbl.action", &s.Action, []string{"reject", "score"})
		checkEnum(d, "filters.surbl.on_dns_error", &s.OnDNSError, []string{"skip", "tempfail"})
		checkScore(d, "filters.surbl.score", s.Score)
		checkTimeout(d, "filters.surbl.timeout", s.Timeout, time.Minute)
	}
	if a := f.ClamAV; a != nil {
		if err := checkServiceAddress(a.Address); err != nil {
			d.errorf("filters.clamav.address", "%v", err)
		}
		checkEnum(d, "filters.clamav.on_error", &a.OnError, []string{"tempfail", "accept"})
		if a.OnError == "accept" {
			d.warnf("filters.clamav.on_error", "accept: while clamd is down, mail is delivered unscanned")
		}
		if a.MaxSize < 0 {
			d.errorf("filters.clamav.max_size", "must not be negative")
		}
		checkTimeout(d, "filters.clamav.timeout", a.Timeout, 10*time.Minute)
		if a.Connections < 1 || a.Connections > 1000 {
			d.errorf("filters.clamav.connections", "%d is out of range: want 1 to 1000", a.Connections)
		}
	}
	if s := f.Spamd; s != nil {
		if err := checkServiceAddress(s.Address); err != nil {
			d.errorf("filters.spamd.address", "%v", err)
		}
		if s.RejectScore < 0 || s.RejectScore > 1000 {
			d.errorf("filters.spamd.reject_score", "%g is out of range: want 0 to 1000", s.RejectScore)
		}
		checkScore(d, "filters.spamd.tag_score", s.TagScore)
		if s.RejectScore > 0 && s.RejectScore < s.TagScore {
			d.warnf("filters.spamd", "reject_score %g is below tag_score %g", s.RejectScore, s.TagScore)
		}
		if s.MaxSize < 0 {
			d.errorf("filters.spamd.max_size", "must not be negative")
		}
		checkTimeout(d, "filters.spamd.timeout", s.Timeout, 10*time.Minute)
		checkEnum(d, "filters.spamd.on_error", &s.OnError, []string{"accept", "tempfail"})
	}
	if a := f.Attachments; a != nil {
		for i, e := range a.DenyExtensions {
			e = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(e), "."))
			a.DenyExtensions[i] = e
			if e == "" || strings.ContainsAny(e, "/\\ *?") {
				d.errorf(fmt.Sprintf("filters.attachments.deny_extensions[%d]", i), "%q is not a file name extension", e)
			}
		}
		for i, t := range a.DenyTypes {
			t = strings.ToLower(strings.TrimSpace(t))
			a.DenyTypes[i] = t
			if typ, sub, ok := strings.Cut(t, "/"); !ok || typ == "" || sub == "" {
				d.errorf(fmt.Sprintf("filters.attachments.deny_types[%d]", i), "%q is not a content type like application/x-msdownload", t)
			}
		}
		checkEnum(d, "filters.attachments.action", &a.Action, []string{"reject", "tempfail"})
	}
	if ct := f.Content; ct != nil {
		checkRegexps(d, "filters.content.deny_headers", ct.DenyHeaders)
		checkRegexps(d, "filters.content.deny_body", ct.DenyBody)
		if len(ct.DenyHeaders)+len(ct.DenyBody) == 0 {
			d.warnf("filters.content", "no pattern set: give deny_headers or deny_body")
		}
	}
	if c.Metrics.Address != "" {
		if _, err := checkHostPort(c.Metrics.Address, false); err != nil {
			d.errorf("metrics.address", "%v", err)
		}
	}
}

func checkTimeout(d *diag, key string, v Duration, max time.Duration) {
	if v <= 0 || v.D() > max {
		d.errorf(key, "%s is out of range: want more than 0 and at most %s", v, max)
	}
}

func checkRegexps(d *diag, key string, list []string) {
	for i, p := range list {
		if _, err := regexp.Compile(p); err != nil {
			d.errorf(fmt.Sprintf("%s[%d]", key, i), "not a valid regular expression: %v", err)
		}
	}
}

// checkServiceAddress accepts unix:/path, tcp:host:port and host:port.
func checkServiceAddress(a string) error {
	switch {
	case a == "":
		return fmt.Errorf("required: unix:/path/to/socket or host:port")
	case strings.HasPrefix(a, "unix:"):
		if !strings.HasPrefix(strings.TrimPrefix(a, "unix:"), "/") {
			return fmt.Errorf("%q: a unix socket needs an absolute path", a)
		}
		return nil
	}
	_, err := checkHostPort(strings.TrimPrefix(a, "tcp:"), true)
	return err
}

// isSelector checks a DKIM selector (RFC 6376 §3.1: dot-separated labels
// of letters, digits and hyphens; all-numeric labels such as 20230601 are
// common).
func isSelector(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func (c *Config) validateProxy(d *diag) {
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		if l.ProxyProtocol && len(l.TrustedProxies) == 0 {
			d.errorf(key+".trusted_proxies", "proxy_protocol needs the load balancers' networks here: a PROXY header from anyone else would let them forge client addresses")
		}
		if !l.ProxyProtocol && len(l.TrustedProxies) > 0 {
			d.warnf(key+".trusted_proxies", "set, but proxy_protocol is off: it has no effect")
		}
	}
}
