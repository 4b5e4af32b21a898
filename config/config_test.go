package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"mailgate/internal/users"
)

// writeFixtures creates, in dir, the files the testdata configurations
// refer to by relative name: a self-signed certificate for
// mail.example.com (cert.pem, key.pem, also as ca.pem), an unrelated key
// (other-key.pem), a file that is not PEM, and users files.
func writeFixtures(t testing.TB, dir string) {
	t.Helper()
	certPEM, keyPEM := selfSigned(t, "mail.example.com", time.Now().Add(365*24*time.Hour))
	_, otherKey := selfSigned(t, "other.example.com", time.Now().Add(time.Hour))
	bh, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"cert.pem":      certPEM,
		"key.pem":       keyPEM,
		"ca.pem":        certPEM,
		"other-key.pem": otherKey,
		"notpem.txt":    "this is not a certificate\n",
		"users":         "# test users\nalice:" + string(bh) + "\n",
		"users-empty":   "# nobody yet\n",
		"users-bad":     "alice:" + string(bh) + "\ncarol:plaintext\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// selfSigned returns a PEM certificate and PEM key for host.
func selfSigned(t testing.TB, host string, notAfter time.Time) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// TestTestdata loads every testdata/NN-name.yaml (copied, mode 600, next
// to generated fixtures). With an NN-name.err file the load must fail and
// the error hold each of its lines; without, it must succeed. Lines of an
// optional NN-name.warn file must each be in some warning.
func TestTestdata(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	dir := t.TempDir()
	writeFixtures(t, dir)
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(base, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, base+".yaml")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			c, warns, err := Load(path)
			wantErr := readLines(t, strings.TrimSuffix(f, ".yaml")+".err")
			wantWarn := readLines(t, strings.TrimSuffix(f, ".yaml")+".warn")
			if wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				if c == nil {
					t.Fatal("nil config without error")
				}
			} else {
				if err == nil {
					t.Fatalf("no error; want:\n%s", strings.Join(wantErr, "\n"))
				}
				if c != nil {
					t.Error("config returned with an error")
				}
				for _, w := range wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not contain %q; got:\n%v", w, err)
					}
				}
				// One problem per line, each naming the file.
				for _, line := range strings.Split(err.Error(), "\n") {
					if !strings.HasPrefix(line, path) {
						t.Errorf("error line %q does not start with the file name", line)
					}
				}
			}
			all := strings.Join(warns, "\n")
			if testing.Verbose() {
				t.Logf("error:\n%v\nwarnings:\n%s", err, all)
			}
			for _, w := range wantWarn {
				if !strings.Contains(all, w) {
					t.Errorf("warnings do not contain %q; got:\n%s", w, all)
				}
			}
		})
	}
}

func readLines(t *testing.T, path string) []string {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if out == nil {
		out = []string{}
	}
	return out
}

func loadFull(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	writeFixtures(t, dir)
	data, err := os.ReadFile("testdata/50-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFullValues(t *testing.T) {
	c := loadFull(t)
	if c.Hostname != "mail.example.com" {
		t.Errorf("hostname = %q (want lower-cased, no trailing dot)", c.Hostname)
	}
	if !reflect.DeepEqual(c.Domains, []string{"example.com", "example.org"}) {
		t.Errorf("domains = %q", c.Domains)
	}
	var nets []string
	for _, n := range c.Relay.Networks {
		nets = append(nets, n.String())
	}
	if want := []string{"192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32", "203.0.113.0/24"}; !reflect.DeepEqual(nets, want) {
		t.Errorf("relay.networks = %q, want %q", nets, want)
	}
	if *c.Relay.Authenticated {
		t.Error("relay.authenticated should be false")
	}
	if c.Listeners[1].TLS != TLSStartTLS || c.Listeners[2].Auth != AuthOptional {
		t.Errorf("listeners = %+v", c.Listeners)
	}
	if c.TLS.MinVersion != "1.3" || c.TLS.MinVersionValue() != tls.VersionTLS13 {
		t.Errorf("min_version = %q", c.TLS.MinVersion)
	}
	if !reflect.DeepEqual(c.Auth.Mechanisms, []string{"PLAIN", "LOGIN"}) || c.Auth.MaxFailures != 5 {
		t.Errorf("auth = %+v", c.Auth)
	}
	if c.Auth.Users == nil || c.Auth.Users.Len() != 1 || !c.Auth.Users.Verify("alice", "secret") {
		t.Error("users file not loaded")
	}
	if c.Upstream.ConnectTimeout.D() != 3*time.Second || c.Upstream.RetryAfter.D() != time.Minute {
		t.Errorf("upstream = %+v", c.Upstream)
	}
	if !filepath.IsAbs(c.Upstream.Servers[0].CA) || !strings.HasSuffix(c.TLS.Cert, "/cert.pem") {
		t.Errorf("relative paths not resolved: %q %q", c.Upstream.Servers[0].CA, c.TLS.Cert)
	}
	l := c.Limits
	if l.MaxMessageSize != 50*MB || l.SpoolThreshold != 256*KB || l.MaxLineLength != 1000 ||
		l.Timeouts.Data.D() != time.Hour || l.BareLineEndings != "reject" {
		t.Errorf("limits = %+v", l)
	}
	if c.Log.Format != "text" || c.Log.Level != "debug" {
		t.Errorf("log = %+v", c.Log)
	}
	if c.Line("listeners[1].tls") != 15 || c.Line("limits.timeouts") != 42 || c.Line("nope") != 0 {
		t.Errorf("lines: %d %d", c.Line("listeners[1].tls"), c.Line("limits.timeouts"))
	}
}

func TestDefaults(t *testing.T) {
	c, _, err := Parse([]byte(`
hostname: mx1.example.com
listeners:
  - {name: mx, address: 127.0.0.1:25, tls: none}
upstream:
  servers: [{address: 10.0.0.5:25, tls: none}]
`), "gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Relay.Authenticated == nil || !*c.Relay.Authenticated || len(c.Relay.Networks) != 0 {
		t.Errorf("relay = %+v", c.Relay)
	}
	if c.Listeners[0].Auth != AuthOff {
		t.Errorf("listener auth = %q", c.Listeners[0].Auth)
	}
	if c.TLS.MinVersion != "1.2" || c.TLS.MinVersionValue() != tls.VersionTLS12 {
		t.Errorf("tls = %+v", c.TLS)
	}
	if !reflect.DeepEqual(c.Auth.Mechanisms, []string{"PLAIN", "LOGIN"}) || c.Auth.MaxFailures != 3 || c.Auth.Users != nil {
		t.Errorf("auth = %+v", c.Auth)
	}
	u := c.Upstream
	if u.ConnectTimeout.D() != 10*time.Second || u.CommandTimeout.D() != 5*time.Minute || u.RetryAfter.D() != 30*time.Second {
		t.Errorf("upstream = %+v", u)
	}
	want := Limits{
		MaxConnections: 2000, MaxConnectionsPerIP: 20, ConnectionRatePerIP: Rate{N: 60, Per: Duration(time.Minute)},
		MaxMessageSize: 25 * MB, MaxRecipients: 100, MaxReceivedHeaders: 30, MaxLineLength: 512,
		MaxCommands: 200, MaxErrors: 10, MaxMessagesPerSession: 100,
		Timeouts:       Timeouts{Greeting: Duration(5 * time.Minute), Command: Duration(5 * time.Minute), Data: Duration(10 * time.Minute)},
		SpoolThreshold: MB, BareLineEndings: "normalize",
	}
	if c.Limits != want {
		t.Errorf("limits = %+v\nwant     %+v", c.Limits, want)
	}
	if c.Log != (Log{Format: "json", Level: "info"}) {
		t.Errorf("log = %+v", c.Log)
	}

	// An upstream server and a listener without tls default to starttls:
	// the listener then needs a certificate.
	_, _, err = Parse([]byte(`
hostname: mx1.example.com
listeners: [{name: mx, address: 127.0.0.1:25}]
upstream: {servers: [{address: 10.0.0.5:25}]}
`), "gateway.yaml")
	if err == nil || !strings.Contains(err.Error(), "tls.cert: required because listener mx uses TLS") {
		t.Errorf("err = %v", err)
	}
}

func TestWarnings(t *testing.T) {
	_, warns, err := Parse([]byte(`
hostname: mx1.example.com
listeners: [{name: mx, address: 0.0.0.0:25, tls: none}]
upstream: {servers: [{address: 10.0.0.5:25, tls: none, ca: x.pem}]}
`), "gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(warns, "\n")
	for _, w := range []string{
		"gateway.yaml: domains: no local domains: nothing is accepted inbound",
		"gateway.yaml:3: listeners[0].tls: listener mx offers no TLS",
		"gateway.yaml:4: upstream.servers[0].tls: tls: none: mail goes upstream to 10.0.0.5:25 in clear text",
		"ca, server_name and insecure_skip_verify are ignored with tls: none",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("warnings lack %q:\n%s", w, all)
		}
	}
}

func TestCertWarnings(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t, "other.example.net", time.Now().Add(-time.Minute))
	os.WriteFile(filepath.Join(dir, "cert.pem"), []byte(certPEM), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), []byte(keyPEM), 0o600)
	_, warns, err := Parse([]byte(`
hostname: mx1.example.com
domains: [example.com]
listeners: [{name: mx, address: 127.0.0.1:25}]
tls: {cert: cert.pem, key: key.pem}
upstream: {servers: [{address: mail.internal:25, server_name: mail.internal}]}
`), filepath.Join(dir, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(warns, "\n")
	for _, w := range []string{"the certificate expired on", "does not cover hostname mx1.example.com (it names other.example.net)"} {
		if !strings.Contains(all, w) {
			t.Errorf("warnings lack %q:\n%s", w, all)
		}
	}
}

func TestPermissions(t *testing.T) {
	dir := t.TempDir()
	writeFixtures(t, dir)
	cfg := `hostname: mail.example.com
domains: [example.com]
%s
listeners: [{name: sub, address: 127.0.0.1:587, auth: required}]
tls: {cert: cert.pem, key: key.pem}
auth: {users_file: users}
upstream: {servers: [{address: 10.0.0.5:25, tls: none}]}
`
	path := filepath.Join(dir, "gateway.yaml")
	write := func(strict string, mode os.FileMode) {
		t.Helper()
		os.Remove(path)
		if err := os.WriteFile(path, []byte(strings.Replace(cfg, "%s", strict, 1)), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	hasPerm := func(warns []string) bool {
		for _, w := range warns {
			if strings.Contains(w, "chmod 600") {
				return true
			}
		}
		return false
	}

	write("", 0o600)
	if _, warns, err := Load(path); err != nil || hasPerm(warns) {
		t.Fatalf("mode 600: err=%v warns=%q", err, warns)
	}

	write("", 0o644)
	_, warns, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) == 0 || !strings.HasPrefix(warns[0], path+": mode 0644 makes it readable by group or others, and it may hold secrets; chmod 600") {
		t.Errorf("warnings = %q", warns)
	}

	write("strict_permissions: true", 0o640)
	c, _, err := Load(path)
	if err == nil || c != nil || !strings.Contains(err.Error(), path+": mode 0640") {
		t.Errorf("strict: err = %v", err)
	}

	// The users file and the TLS key are checked the same way.
	write("", 0o600)
	os.Chmod(filepath.Join(dir, "users"), 0o644)
	os.Chmod(filepath.Join(dir, "key.pem"), 0o604)
	_, warns, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(warns, "\n")
	for _, w := range []string{"auth.users_file: " + filepath.Join(dir, "users") + ": mode 0644", "tls.key: " + filepath.Join(dir, "key.pem") + ": mode 0604"} {
		if !strings.Contains(all, w) {
			t.Errorf("warnings lack %q:\n%s", w, all)
		}
	}
	write("strict_permissions: true", 0o600)
	_, _, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "gateway.yaml:6: auth.users_file:") || !strings.Contains(err.Error(), "gateway.yaml:5: tls.key:") {
		t.Errorf("strict: err = %v", err)
	}

	if _, _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	if _, _, err := Load(dir); err == nil {
		t.Error("loaded a directory")
	}
}

func TestSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Size
		str  string
	}{
		{"25MB", 25 * MB, "25MB"},
		{"512KB", 512 * KB, "512KB"},
		{"1GB", GB, "1GB"},
		{"1048576", MB, "1MB"},
		{"1000", 1000, "1000B"},
		{"0", 0, "0B"},
		{"10mb", 10 * MB, "10MB"},
		{"10 M", 10 * MB, "10MB"},
		{"3k", 3 * KB, "3KB"},
		{"2G", 2 * GB, "2GB"},
		{"64KiB", 64 * KB, "64KB"},
		{"5MiB", 5 * MB, "5MB"},
		{"1536KB", 1536 * KB, "1536KB"},
		{"100B", 100, "100B"},
	} {
		got, err := ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
			continue
		}
		if got.String() != c.str {
			t.Errorf("Size(%d).String() = %q, want %q", got, got.String(), c.str)
		}
		if back, err := ParseSize(got.String()); err != nil || back != got {
			t.Errorf("round trip of %q: %d, %v", got.String(), back, err)
		}
	}
	for _, bad := range []string{"", "MB", "1.5MB", "25XB", "-", "10 TB", "9999999999999GB", "0x10", "1e6"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
}

func TestDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		str  string
	}{
		{"30s", 30 * time.Second, "30s"},
		{"5m", 5 * time.Minute, "5m"},
		{"4h", 4 * time.Hour, "4h"},
		{"1h30m", 90 * time.Minute, "1h30m"},
		{"36d", 36 * 24 * time.Hour, "36d"},
		{"1d12h", 36 * time.Hour, "36h"},
		{"24h", 24 * time.Hour, "1d"},
		{"1.5s", 1500 * time.Millisecond, "1.5s"},
		{"250ms", 250 * time.Millisecond, "250ms"},
		{"-1s", -time.Second, "-1s"},
		{"0", 0, "0s"},
		{"1h0m30s", time.Hour + 30*time.Second, "1h0m30s"},
	} {
		got, err := ParseDuration(c.in)
		if err != nil || got.D() != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got.D(), err, c.want)
			continue
		}
		if got.String() != c.str {
			t.Errorf("Duration(%v).String() = %q, want %q", c.want, got.String(), c.str)
		}
		if back, err := ParseDuration(got.String()); err != nil || back != got {
			t.Errorf("round trip of %q: %v, %v", got.String(), back, err)
		}
	}
	for _, bad := range []string{"", "10", "d", "1.5d", "5 minutes", "1d-1h", "99999999999d", "xd"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", bad)
		}
	}
}

func TestPrefix(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"192.0.2.7", "192.0.2.7/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{" 10.0.0.0/8 ", "10.0.0.0/8"},
	} {
		p, err := ParsePrefix(c.in)
		if err != nil || p.String() != c.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", c.in, p, err, c.want)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/33", "example.com", "fe80::1%eth0", "10.0.0/8", "10.0.0.0/"} {
		if _, err := ParsePrefix(bad); err == nil {
			t.Errorf("ParsePrefix(%q) succeeded", bad)
		}
	}
	list := []Prefix{MustPrefix("10.0.0.0/8"), MustPrefix("2001:db8::/32")}
	for _, c := range []struct {
		a    string
		want bool
	}{
		{"10.1.2.3", true},
		{"::ffff:10.1.2.3", true},
		{"11.0.0.1", false},
		{"2001:db8::5", true},
		{"2001:db9::5", false},
		{"fe80::1%eth0", false},
	} {
		if got := ContainsAddr(list, netip.MustParseAddr(c.a)); got != c.want {
			t.Errorf("ContainsAddr(%s) = %v", c.a, got)
		}
	}
	if ContainsAddr(list, netip.Addr{}) || ContainsAddr(nil, netip.MustParseAddr("10.0.0.1")) {
		t.Error("ContainsAddr of nothing")
	}
}

func TestPolicy(t *testing.T) {
	c := loadFull(t)
	p := c.Policy()
	for _, w := range []string{
		"mail.example.com",
		"mx", "0.0.0.0:25", "TLS starttls", "AUTH off",
		"submission", "[::]:587", "AUTH required (offered only after STARTTLS)",
		"submissions", ":465", "TLS implicit", "AUTH optional (offered only over TLS)",
		"AUTH is never offered before TLS",
		"minimum TLS", "1.3",
		"example.com", "example.org",
		"networks (no AUTH needed)  192.0.2.0/24\n", "  2001:db8::/32\n", "198.51.100.7/32", "203.0.113.0/24",
		"authenticated users        no",
		"everyone else", "554 5.7.1 Relay access denied",
		"PLAIN, LOGIN on submission, submissions", "(1 user)", "5 per session",
		"1. 10.0.0.5:25", "verified as mail.internal with CA file",
		"2. mail2.internal:25", "verified as mail2.internal with system roots",
		"3. 10.0.0.7:465", "NOT VERIFIED",
		"max_message_size", "50MB", "max_recipients", "500", "max_received_headers", "40",
		"max_line_length", "1000", "max_commands", "max_errors", "20", "max_messages_per_session",
		"timeouts.greeting", "30s", "timeouts.data", "1h", "spool_threshold", "256KB",
		"bare_line_endings", "reject",
		"format", "text", "level", "debug",
	} {
		if !strings.Contains(p, w) {
			t.Errorf("policy lacks %q", w)
		}
	}
	// Upstream servers in failover order.
	if i, j := strings.Index(p, "10.0.0.5:25"), strings.Index(p, "mail2.internal:25"); i < 0 || j < i {
		t.Error("upstream order")
	}
	if p != c.Policy() {
		t.Error("Policy is not stable")
	}
	for _, line := range strings.Split(p, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("trailing space in %q", line)
		}
	}
	if testing.Verbose() {
		t.Log("\n" + p)
	}

	d, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	dp := d.Policy()
	for _, w := range []string{"nothing" /* never */} {
		if strings.Contains(dp, w) {
			t.Errorf("default policy contains %q", w)
		}
	}
	for _, w := range []string{"127.0.0.1:2525", "TLS none", "networks (no AUTH needed)  none", "authenticated users        yes", "clear text, NOT ENCRYPTED"} {
		if !strings.Contains(dp, w) {
			t.Errorf("default policy lacks %q:\n%s", w, dp)
		}
	}
}

func TestDefault(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mail.example.com" || !reflect.DeepEqual(c.Domains, []string{"example.com"}) ||
		len(c.Listeners) != 1 || c.Listeners[0].Name != "mx" || c.Listeners[0].Address != "127.0.0.1:2525" ||
		c.Listeners[0].TLS != TLSNone || c.Listeners[0].Auth != AuthOff ||
		len(c.Upstream.Servers) != 1 || c.Upstream.Servers[0].Address != "127.0.0.1:2526" ||
		c.Upstream.Servers[0].TLS != TLSNone || c.Log.Format != "text" {
		t.Errorf("default = %+v", c)
	}
	y := DefaultYAML()
	y[0] = 'X'
	if DefaultYAML()[0] == 'X' {
		t.Error("DefaultYAML returns the embedded slice")
	}
}

func TestValidateInCode(t *testing.T) {
	c := &Config{
		Hostname:  "MX.example.com",
		Domains:   []string{"Example.com"},
		Listeners: []Listener{{Name: "mx", Address: "127.0.0.1:25", TLS: TLSNone}},
		Upstream:  Upstream{Servers: []UpstreamServer{{Address: "10.0.0.5:25", TLS: TLSNone}}},
		Relay:     Relay{Networks: []Prefix{MustPrefix("0.0.0.0/0")}},
	}
	c.ApplyDefaults()
	_, err := c.Validate()
	if err == nil || err.Error() != "config: relay.networks[0]: 0.0.0.0/0 would make an open relay (networks shorter than /8 are refused)" {
		t.Fatalf("err = %v", err)
	}
	c.Relay.Networks = nil
	if _, err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mx.example.com" || c.Domains[0] != "example.com" {
		t.Errorf("not normalised: %q %q", c.Hostname, c.Domains)
	}
}

func TestUsersArgon(t *testing.T) {
	dir := t.TempDir()
	writeFixtures(t, dir)
	h, err := users.Hash("pw")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "users"), []byte("bob:"+h+"\n"), 0o600)
	c, _, err := Parse([]byte(`
hostname: mail.example.com
domains: [example.com]
listeners: [{name: sub, address: 127.0.0.1:587, auth: required}]
tls: {cert: cert.pem, key: key.pem}
auth: {users_file: users}
upstream: {servers: [{address: 10.0.0.5:25, tls: none}]}
`), filepath.Join(dir, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Auth.Users.Verify("bob", "pw") || c.Auth.Users.Verify("bob", "px") {
		t.Error("verify")
	}
}

func TestErrorsSuppressed(t *testing.T) {
	// A value that failed to decode is not reported again by validation.
	_, _, err := Parse([]byte("hostname: [a]\nlisteners: 5\nupstream: {servers: x}\n"), "g.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	want := "g.yaml:1: hostname: want a string, got a list\n" +
		"g.yaml:2: listeners: want a list, got \"5\"\n" +
		"g.yaml:3: upstream.servers: want a list, got \"x\""
	if err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
}

func TestHostileYAML(t *testing.T) {
	// Merge keys and aliases fanning out exponentially must stay cheap.
	var b strings.Builder
	b.WriteString("x0: &a0 {name: a}\n")
	for i := 1; i < 40; i++ {
		fmt.Fprintf(&b, "x%d: &a%d {<<: [*a%d, *a%d, *a%d]}\n", i, i, i-1, i-1, i-1)
	}
	b.WriteString("listeners: [*a39, *a39, *a39]\n")
	start := time.Now()
	_, _, err := Parse([]byte(b.String()), "bomb.yaml")
	if err == nil || !strings.Contains(err.Error(), "nested too deeply or expand to too much") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	// A mapping that merges itself.
	if _, _, err := Parse([]byte("relay: &r {<<: *r}\n"), "self.yaml"); err == nil || !strings.Contains(err.Error(), "self.yaml:1: relay: merge keys") {
		t.Errorf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add(DefaultYAML())
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("x: &x {<<: *x}"))
	f.Add([]byte("listeners: [{<<: [{name: a}, {name: b}], address: 1}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Parse(data, "fuzz.yaml")
		if (c == nil) == (err == nil) {
			t.Fatalf("config %v with error %v", c != nil, err)
		}
		if c != nil {
			_ = c.Policy()
		}
	})
}

// TestContentDefaults: the SPEC §3 content blocks, zones written as plain
// names, and the defaults the content filters get.
func TestContentDefaults(t *testing.T) {
	data, err := os.ReadFile("testdata/52-content.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := Parse(data, "52-content.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := c.Filters
	if z := f.SURBL.Zones; len(z) != 2 || z[0].Zone != "multi.surbl.org" || z[1].Zone != "multi.uribl.com" || len(z[1].Codes) != 1 {
		t.Errorf("surbl zones = %+v", z)
	}
	if f.MIME == nil || f.MIME.MaxDepth != DefaultMIMEMaxDepth || f.MIME.Malformed != "accept" {
		t.Errorf("mime defaults = %+v (content filters need the MIME parse)", f.MIME)
	}
	if !*f.DKIM.Verify || f.DKIM.MaxSignatures != DefaultDKIMMaxSignatures || f.DMARC.Quarantine != "tag" {
		t.Errorf("dkim/dmarc defaults = %+v %+v", f.DKIM, f.DMARC)
	}
	if f.ClamAV.Timeout != DefaultClamAVTimeout || f.ClamAV.Connections != DefaultClamAVConns || f.Spamd.OnError != "accept" {
		t.Errorf("clamav/spamd defaults = %+v %+v", f.ClamAV, f.Spamd)
	}
	if !*f.Attachments.ScanArchives || f.Attachments.Action != "reject" || f.Content.Mode != ModeEnforce {
		t.Errorf("attachments/content defaults = %+v %+v", f.Attachments, f.Content)
	}
	if c.Metrics.Address != "127.0.0.1:9025" {
		t.Errorf("metrics.address = %q", c.Metrics.Address)
	}
}

// TestContentPolicy: check prints the content filters in the order they
// run.
func TestContentPolicy(t *testing.T) {
	data, err := os.ReadFile("testdata/52-content.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := Parse(data, "52-content.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policy()
	last := -1
	for _, w := range []string{"spf", "mime", "content", "attachments", "clamav", "dkim", "dmarc", "authresults", "surbl", "spamd"} {
		i := strings.Index(p, "\n  "+w+" ")
		if i < 0 {
			t.Errorf("policy lacks %q:\n%s", w, p)
			continue
		}
		if i < last {
			t.Errorf("%q printed out of pipeline order", w)
		}
		last = i
	}
	for _, w := range []string{"Authentication-Results: mx1.example.com", "multi.surbl.org, multi.uribl.com", "127.0.0.1:783, reject at 10"} {
		if !strings.Contains(p, w) {
			t.Errorf("policy lacks %q", w)
		}
	}
}
