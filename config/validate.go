package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"mailgate/internal/users"
)

// Validate checks a configuration with defaults applied (see
// ApplyDefaults) and normalises it: host and domain names are
// lower-cased, enumerations and AUTH mechanisms get their canonical case,
// and auth.users_file is loaded into Auth.Users. It returns warnings and
// an error holding every problem found. Load and Parse call it.
func (c *Config) Validate() ([]string, error) {
	d := &diag{file: c.Path, lines: map[string]int{}, bad: map[string]bool{}}
	if c.meta != nil {
		d.file, d.lines = c.meta.file, c.meta.lines
	}
	c.validate(d)
	return d.warnings(), d.err()
}

// Limits of the values accepted.
const (
	MinMaxLineLength  = 512 // RFC 5321 §4.5.3.1.4: 512-octet command lines must be accepted
	MaxMaxLineLength  = 65536
	MinMaxMessageSize = 1 * KB
	MaxMaxMessageSize = 2 * GB
	minRelayBits4     = 8  // relay.networks shorter than this are refused
	minRelayBits6     = 16 // (open relay)
)

func (c *Config) validate(d *diag) {
	c.validateNames(d)
	c.validateRelay(d)
	c.validateListeners(d)
	c.validateTLS(d)
	c.validateAuth(d)
	c.validateUpstream(d)
	c.validateLimits(d)
	c.validateConnLimits(d)
	c.validateDNS(d)
	c.validateState(d)
	c.validateFilters(d)
	c.validateContent(d)
	c.validateProxy(d)
	c.validateLog(d)
}

func (c *Config) validateNames(d *diag) {
	if strings.TrimSpace(c.Hostname) == "" {
		d.errorf("hostname", "required: the gateway's fully qualified host name, used in the banner, Received headers and HELO (e.g. mx1.example.com)")
	} else if h, err := checkDomain(c.Hostname, true); err != nil {
		d.errorf("hostname", "%v", err)
	} else {
		c.Hostname = h
	}

	if len(c.Domains) == 0 {
		d.warnf("domains", "no local domains: nothing is accepted inbound")
	}
	seen := map[string]int{}
	for i, dom := range c.Domains {
		key := fmt.Sprintf("domains[%d]", i)
		n, err := checkDomain(dom, false)
		if err != nil {
			d.errorf(key, "%v", err)
			continue
		}
		c.Domains[i] = n
		if j, dup := seen[n]; dup {
			d.errorf(key, "duplicate domain %q (also domains[%d])", n, j)
			continue
		}
		seen[n] = i
	}
}

// checkDomain validates and lower-cases a domain name (a trailing dot is
// removed). With fqdn set it must have at least two labels.
func checkDomain(s string, fqdn bool) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	what := "domain name"
	if fqdn {
		what = "fully qualified host name"
	}
	if n == "" {
		return "", fmt.Errorf("%q is not a valid %s", s, what)
	}
	if _, err := netip.ParseAddr(strings.Trim(n, "[]")); err == nil {
		return "", fmt.Errorf("%q is an IP address; want a %s", s, what)
	}
	if len(n) > 253 {
		return "", fmt.Errorf("%q is longer than 253 characters", s)
	}
	labels := strings.Split(n, ".")
	if fqdn && len(labels) < 2 {
		return "", fmt.Errorf("%q is not a fully qualified host name (want at least one dot, e.g. mx1.example.com)", s)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("%q is not a valid %s: labels must be 1 to 63 characters", s, what)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("%q is not a valid %s: a label cannot start or end with '-'", s, what)
		}
		for i := 0; i < len(l); i++ {
			ch := l[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
				if ch >= 0x80 {
					return "", fmt.Errorf("%q is not a valid %s: write internationalised names in their xn-- (A-label) form", s, what)
				}
				return "", fmt.Errorf("%q is not a valid %s: only letters, digits, '-' and '.' are allowed", s, what)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", fmt.Errorf("%q is not a valid %s: the last label is numeric", s, what)
	}
	return n, nil
}

func (c *Config) validateRelay(d *diag) {
	for i, p := range c.Relay.Networks {
		key := fmt.Sprintf("relay.networks[%d]", i)
		if !p.IsValid() {
			d.errorf(key, "invalid network")
			continue
		}
		min := minRelayBits4
		if p.Addr().Is6() {
			min = minRelayBits6
		}
		if p.Bits() < min {
			d.errorf(key, "%s would make an open relay (networks shorter than /%d are refused)", p, min)
		}
	}
}

var (
	tlsModes  = []string{string(TLSNone), string(TLSStartTLS), string(TLSImplicit)}
	authModes = []string{string(AuthOff), string(AuthOptional), string(AuthRequired)}
)

// checkEnum lower-cases *v and checks it is one of want.
func checkEnum(d *diag, key string, v *string, want []string) bool {
	s := strings.ToLower(strings.TrimSpace(*v))
	for _, w := range want {
		if s == w {
			*v = s
			return true
		}
	}
	d.errorf(key, "unknown value %q (want %s)", *v, orList(want))
	return false
}

// orList gives "a, b or c".
func orList(w []string) string {
	if len(w) == 1 {
		return w[0]
	}
	return strings.Join(w[:len(w)-1], ", ") + " or " + w[len(w)-1]
}

func (c *Config) validateListeners(d *diag) {
	if len(c.Listeners) == 0 {
		d.errorf("listeners", "at least one listener is required (e.g. {name: mx, address: 0.0.0.0:25})")
	}
	names := map[string]int{}
	addrs := map[string]int{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		key := fmt.Sprintf("listeners[%d]", i)
		switch {
		case l.Name == "":
			d.errorf(key+".name", "required: a name for logs and metrics (e.g. mx, submission)")
		case !validName(l.Name):
			d.errorf(key+".name", "%q: use letters, digits, '-', '_' and '.' only", l.Name)
		default:
			if j, dup := names[l.Name]; dup {
				d.errorf(key+".name", "duplicate listener name %q (also listeners[%d])", l.Name, j)
			}
			names[l.Name] = i
		}
		if l.Address == "" {
			d.errorf(key+".address", "required: host:port to listen on (e.g. 0.0.0.0:25)")
		} else if norm, err := checkHostPort(l.Address, false); err != nil {
			d.errorf(key+".address", "%v", err)
		} else {
			if j, dup := addrs[norm]; dup {
				d.errorf(key+".address", "address %s is already used by listeners[%d]", l.Address, j)
			}
			addrs[norm] = i
		}
		tlsOK := checkEnum(d, key+".tls", (*string)(&l.TLS), tlsModes)
		authOK := checkEnum(d, key+".auth", (*string)(&l.Auth), authModes)
		if tlsOK && authOK && l.TLS == TLSNone && l.Auth != AuthOff {
			d.errorf(key+".auth", "auth: %s on a listener with tls: none: AUTH is only ever offered over TLS (use tls: starttls or implicit, or auth: off)", l.Auth)
		}
		if tlsOK && l.TLS == TLSNone && !isLoopback(l.Address) {
			d.warnf(key+".tls", "listener %s offers no TLS: mail to it travels in clear text", listenerName(i, *l))
		}
	}
}

// listenerName names a listener in messages.
func listenerName(i int, l Listener) string {
	if l.Name != "" {
		return l.Name
	}
	return fmt.Sprintf("listeners[%d]", i)
}

func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false
		}
	}
	return s != "" && len(s) <= 64
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// checkHostPort validates "host:port" and returns a normalised form for
// duplicate detection. An empty host (":25", all interfaces) is allowed
// unless hostRequired.
func checkHostPort(s string, hostRequired bool) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q: want host:port (e.g. 0.0.0.0:25, [::]:25)", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || strings.TrimLeft(port, "0123456789") != "" {
		return "", fmt.Errorf("%q: port %q is not a number between 1 and 65535", s, port)
	}
	if host == "" {
		if hostRequired {
			return "", fmt.Errorf("%q: host missing; want host:port", s)
		}
		return ":" + strconv.Itoa(p), nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return net.JoinHostPort(a.String(), strconv.Itoa(p)), nil
	}
	h, err := checkDomain(host, false)
	if err != nil {
		return "", fmt.Errorf("%q: host is neither an IP address nor a host name", s)
	}
	return net.JoinHostPort(h, strconv.Itoa(p)), nil
}

// MinVersionValue returns min_version as a crypto/tls version constant
// (tls.VersionTLS12 unless it is "1.3").
func (t TLS) MinVersionValue() uint16 {
	if normTLSVersion(t.MinVersion) == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// normTLSVersion accepts "1.2", "TLS1.2", "tls 1.2", "1.20" (YAML floats).
func normTLSVersion(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(s, "tls"), "v"))
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		switch f {
		case 1.0, 1.1, 1.2, 1.3:
			return strconv.FormatFloat(f, 'f', 1, 64)
		}
	}
	return s
}

func (c *Config) usesTLS() []string {
	var names []string
	for i, l := range c.Listeners {
		if l.TLS == TLSStartTLS || l.TLS == TLSImplicit {
			names = append(names, listenerName(i, l))
		}
	}
	return names
}

func (c *Config) validateTLS(d *diag) {
	switch v := normTLSVersion(c.TLS.MinVersion); v {
	case "1.2", "1.3":
		c.TLS.MinVersion = v
	case "1.0", "1.1":
		d.errorf("tls.min_version", "TLS %s is obsolete and insecure (RFC 8996); want \"1.2\" or \"1.3\"", v)
	default:
		d.errorf("tls.min_version", "unknown value %q (want \"1.2\" or \"1.3\")", c.TLS.MinVersion)
	}

	users := c.usesTLS()
	if len(users) == 0 && c.TLS.Cert == "" && c.TLS.Key == "" {
		return
	}
	why := ""
	if len(users) > 0 {
		why = fmt.Sprintf(" because listener %s uses TLS", users[0])
	}
	if c.TLS.Cert == "" {
		d.errorf("tls.cert", "required%s: the PEM certificate chain file", why)
	}
	if c.TLS.Key == "" {
		d.errorf("tls.key", "required%s: the PEM private key file", why)
	}
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		return
	}
	certPEM, err := readSmallFile(c.TLS.Cert)
	if err != nil {
		d.errorf("tls.cert", "cannot read the certificate: %v", err)
	}
	keyPEM, kerr := readSmallFile(c.TLS.Key)
	if kerr != nil {
		d.errorf("tls.key", "cannot read the private key: %v", kerr)
	} else {
		c.checkSecretFile(d, "tls.key", c.TLS.Key)
	}
	if err != nil || kerr != nil {
		return
	}
	if !hasPEMBlock(certPEM, "CERTIFICATE") {
		d.errorf("tls.cert", "%s holds no PEM certificate", c.TLS.Cert)
		return
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		d.errorf("tls.key", "%s and %s do not load as a certificate and key pair: %v", c.TLS.Cert, c.TLS.Key, strings.TrimPrefix(err.Error(), "tls: "))
		return
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			d.errorf("tls.cert", "cannot parse the certificate: %v", err)
			return
		}
	}
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		d.warnf("tls.cert", "the certificate expired on %s", leaf.NotAfter.UTC().Format(time.DateOnly))
	case now.Before(leaf.NotBefore):
		d.warnf("tls.cert", "the certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.DateOnly))
	case leaf.NotAfter.Sub(now) < 14*24*time.Hour:
		d.warnf("tls.cert", "the certificate expires on %s", leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	if c.Hostname != "" && leaf.VerifyHostname(c.Hostname) != nil {
		d.warnf("tls.cert", "the certificate does not cover hostname %s (it names %s)", c.Hostname, certNames(leaf))
	}
}

func certNames(c *x509.Certificate) string {
	names := c.DNSNames
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = []string{c.Subject.CommonName}
	}
	if len(names) == 0 {
		return "no host name"
	}
	if len(names) > 4 {
		names = append(names[:4:4], "...")
	}
	return strings.Join(names, ", ")
}

func hasPEMBlock(data []byte, typ string) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if b.Type == typ {
			return true
		}
	}
}

// checkSecretFile warns (or errors with strict_permissions) when a file
// holding secrets is readable by group or others.
func (c *Config) checkSecretFile(d *diag, key, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if msg := permProblem(fi); msg != "" {
		if c.StrictPermissions {
			d.errorf(key, "%s: %s (strict_permissions is on)", path, msg)
		} else {
			d.warnf(key, "%s: %s", path, msg)
		}
	}
}

func (c *Config) validateAuth(d *diag) {
	a := &c.Auth
	var authOn []string
	for i, l := range c.Listeners {
		if l.Auth == AuthOptional || l.Auth == AuthRequired {
			authOn = append(authOn, listenerName(i, l))
		}
	}
	a.Users = nil
	switch {
	case a.UsersFile == "" && len(authOn) > 0:
		d.errorf("auth.users_file", "required because listener %s offers AUTH: a file of user:<bcrypt or argon2id hash> lines", authOn[0])
	case a.UsersFile != "":
		db, err := users.Load(a.UsersFile)
		if err != nil {
			d.errorf("auth.users_file", "%v", err)
			break
		}
		c.checkSecretFile(d, "auth.users_file", a.UsersFile)
		if db.Len() == 0 {
			if len(authOn) > 0 {
				d.errorf("auth.users_file", "%s holds no users, but listener %s offers AUTH", a.UsersFile, authOn[0])
			} else {
				d.warnf("auth.users_file", "%s holds no users", a.UsersFile)
			}
		}
		a.Users = db
	}

	seen := map[string]bool{}
	for i, m := range a.Mechanisms {
		key := fmt.Sprintf("auth.mechanisms[%d]", i)
		u := strings.ToUpper(strings.TrimSpace(m))
		switch u {
		case "PLAIN", "LOGIN":
			if seen[u] {
				d.errorf(key, "duplicate mechanism %s", u)
			}
			seen[u] = true
			a.Mechanisms[i] = u
		case "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "APOP", "NTLM":
			d.errorf(key, "%s is not supported: it needs the plaintext password (or an equivalent) stored on disk, which the gateway refuses; PLAIN and LOGIN are safe because AUTH is only offered over TLS", u)
		default:
			d.errorf(key, "unknown mechanism %q (want PLAIN or LOGIN)", m)
		}
	}
	if a.MaxFailuresPerIP < 1 {
		d.errorf("auth.max_failures_per_ip", "must be at least 1, got %d", a.MaxFailuresPerIP)
	}
	if a.FailureWindow <= 0 {
		d.errorf("auth.failure_window", "must be positive, got %s", a.FailureWindow)
	}
	if a.MaxFailures < 1 {
		d.errorf("auth.max_failures", "must be at least 1, got %d", a.MaxFailures)
	}
	if len(authOn) > 0 && c.Relay.Authenticated != nil && !*c.Relay.Authenticated {
		d.warnf("relay.authenticated", "listener %s offers AUTH but relay.authenticated is false: authenticated users may send to local domains only", authOn[0])
	}
}

func (c *Config) validateUpstream(d *diag) {
	u := &c.Upstream
	if len(u.Servers) == 0 {
		d.errorf("upstream.servers", "at least one upstream server is required: the internal mail server accepted mail is relayed to (e.g. {address: 10.0.0.5:25, tls: starttls})")
	}
	addrs := map[string]int{}
	for i := range u.Servers {
		s := &u.Servers[i]
		key := fmt.Sprintf("upstream.servers[%d]", i)
		name := s.Address
		if s.Address == "" {
			d.errorf(key+".address", "required: host:port of the internal server")
			name = key
		} else if norm, err := checkHostPort(s.Address, true); err != nil {
			d.errorf(key+".address", "%v", err)
		} else {
			if j, dup := addrs[norm]; dup {
				d.warnf(key+".address", "upstream %s is listed twice (also upstream.servers[%d])", s.Address, j)
			}
			addrs[norm] = i
		}
		if !checkEnum(d, key+".tls", (*string)(&s.TLS), tlsModes) {
			continue
		}
		if s.TLS == TLSNone {
			d.warnf(key+".tls", "tls: none: mail goes upstream to %s in clear text", name)
			if s.CA != "" || s.ServerName != "" || s.InsecureSkipVerify {
				d.warnf(key, "ca, server_name and insecure_skip_verify are ignored with tls: none")
			}
			continue
		}
		if s.ServerName != "" {
			if _, err := checkDomain(s.ServerName, false); err != nil {
				if _, ipErr := netip.ParseAddr(s.ServerName); ipErr != nil {
					d.errorf(key+".server_name", "%v", err)
				}
			}
		}
		if s.InsecureSkipVerify {
			d.warnf(key+".insecure_skip_verify", "certificate of upstream %s is not verified: anyone on the path can intercept the mail", name)
		}
		if s.CA != "" {
			if err := checkCAFile(s.CA); err != nil {
				d.errorf(key+".ca", "%v", err)
			}
		}
		if s.ServerName == "" && !s.InsecureSkipVerify {
			if host, _, err := net.SplitHostPort(s.Address); err == nil {
				if _, err := netip.ParseAddr(host); err == nil {
					d.warnf(key+".server_name", "upstream %s is addressed by IP and has no server_name: its certificate must hold that IP address", name)
				}
			}
		}
	}
	for _, t := range []struct {
		key string
		v   Duration
	}{
		{"upstream.connect_timeout", u.ConnectTimeout},
		{"upstream.command_timeout", u.CommandTimeout},
		{"upstream.retry_after", u.RetryAfter},
		{"upstream.idle_timeout", u.IdleTimeout},
	} {
		if t.v <= 0 {
			d.errorf(t.key, "must be positive, got %s", t.v)
		}
	}
	if u.IdleSessions < 0 || u.IdleSessions > 10000 {
		d.errorf("upstream.idle_sessions", "must be between 1 and 10000, got %d", u.IdleSessions)
	}
}

// maxPEMFile bounds the certificate, key and CA files read.
const maxPEMFile = 16 << 20

// readSmallFile reads a regular file of at most maxPEMFile bytes.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("%s is larger than %s", path, Size(maxPEMFile))
	}
	return data, nil
}

// checkCAFile checks that path is a PEM bundle with at least one
// certificate.
func checkCAFile(path string) error {
	data, err := readSmallFile(path)
	if err != nil {
		return fmt.Errorf("cannot read the CA bundle: %v", err)
	}
	n := 0
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("%s: certificate %d: %v", path, n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

func (c *Config) validateLimits(d *diag) {
	l := &c.Limits
	if l.MaxMessageSize < MinMaxMessageSize || l.MaxMessageSize > MaxMaxMessageSize {
		d.errorf("limits.max_message_size", "%s is out of range: want between %s and %s", l.MaxMessageSize, MinMaxMessageSize, MaxMaxMessageSize)
	}
	if l.MaxLineLength < MinMaxLineLength || l.MaxLineLength > MaxMaxLineLength {
		d.errorf("limits.max_line_length", "%d is out of range: want between %d (RFC 5321 requires accepting 512-octet command lines) and %d", l.MaxLineLength, MinMaxLineLength, MaxMaxLineLength)
	}
	for _, n := range []struct {
		key string
		v   int
	}{
		{"limits.max_recipients", l.MaxRecipients},
		{"limits.max_received_headers", l.MaxReceivedHeaders},
		{"limits.max_commands", l.MaxCommands},
		{"limits.max_errors", l.MaxErrors},
		{"limits.max_messages_per_session", l.MaxMessagesPerSession},
	} {
		if n.v < 0 {
			d.errorf(n.key, "must not be negative, got %d (0 or no value means the default)", n.v)
		}
	}
	if l.SpoolThreshold < 0 {
		d.errorf("limits.spool_threshold", "must not be negative, got %d", int64(l.SpoolThreshold))
	}
	for _, t := range []struct {
		key string
		v   Duration
	}{
		{"limits.timeouts.greeting", l.Timeouts.Greeting},
		{"limits.timeouts.command", l.Timeouts.Command},
		{"limits.timeouts.data", l.Timeouts.Data},
	} {
		if t.v <= 0 {
			d.errorf(t.key, "must be positive, got %s", t.v)
		}
	}
	checkEnum(d, "limits.bare_line_endings", &l.BareLineEndings, []string{"normalize", "reject"})
}

func (c *Config) validateLog(d *diag) {
	checkEnum(d, "log.format", &c.Log.Format, []string{"json", "text"})
	checkEnum(d, "log.level", &c.Log.Level, []string{"debug", "info", "warn", "error"})
}
