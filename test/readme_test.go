package test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"mailgate/config"
	"mailgate/internal/recorder"
)

// TestREADMEConfig: the example configuration in the README loads, once
// the files it names exist (the test gives it stand-ins).
func TestREADMEConfig(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	var example string
	for _, b := range blocks {
		if strings.Contains(b[1], "hostname: mx1.example.com") && strings.Contains(b[1], "clamav:") {
			example = b[1]
		}
	}
	if example == "" {
		t.Fatal("the README has no example configuration with content filters")
	}
	// The files the example names: a certificate and key, a users file,
	// a CA and a DKIM key, made up here under a temp dir.
	dir := t.TempDir()
	pki, err := recorder.NewPKI("mx1.example.com")
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(edKey)
	if err != nil {
		t.Fatal(err)
	}
	dkimPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	files := map[string][]byte{
		"/etc/mailgate/cert.pem":             pki.CertPEM,
		"/etc/mailgate/key.pem":              pki.KeyPEM,
		"/etc/mailgate/internal-ca.pem":      pki.CAPEM,
		"/etc/mailgate/users":                []byte("alice:$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy\n"),
		"/etc/mailgate/dkim/example.com.pem": dkimPEM,
		"file:/var/lib/mailgate/state.db":    nil,
	}
	for path, data := range files {
		if data == nil {
			example = strings.ReplaceAll(example, path, "file:"+filepath.Join(dir, "state.db"))
			continue
		}
		local := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(local, data, 0o600); err != nil {
			t.Fatal(err)
		}
		example = strings.ReplaceAll(example, path, local)
	}
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	c, warnings, err := config.Load(path)
	if err != nil {
		t.Fatalf("the README example does not load:\n%v", err)
	}
	if c.Filters.ClamAV == nil || c.Filters.DKIM == nil || len(c.Filters.SURBL.Zones) != 2 {
		t.Errorf("content filters not configured: %+v", c.Filters)
	}
	t.Logf("warnings: %q", warnings)
}
