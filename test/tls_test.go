package test

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"mailgate/internal/recorder"
	"mailgate/internal/users"
)

// tlsEnv is a certificate for the gateway and a users file:
// alice/alice-secret (argon2id) and bob/bob-secret (bcrypt).
type tlsEnv struct {
	pki  *recorder.PKI
	dir  string
	cert string
	key  string
	ca   string
	usr  string
	// authExtra is added to the auth: block, e.g. ", max_failures: 1".
	authExtra string
}

func newTLSEnv(t *testing.T) *tlsEnv {
	t.Helper()
	pki, err := recorder.NewPKI("mx.gateway.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &tlsEnv{pki: pki, dir: dir,
		cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"),
		ca: filepath.Join(dir, "ca.pem"), usr: filepath.Join(dir, "users")}
	argon, err := users.Hash("alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("bob-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{
		e.cert: pki.CertPEM, e.key: pki.KeyPEM, e.ca: pki.CAPEM,
		e.usr: []byte(fmt.Sprintf("# test users\nalice:%s\nbob:%s\n", argon, bc)),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// listener renders one listeners entry.
func listener(name, addr, tlsMode, auth string) string {
	return fmt.Sprintf("  - {name: %s, address: %s, tls: %s, auth: %s}\n", name, addr, tlsMode, auth)
}

// config is a full config with the given listeners entries.
func (e *tlsEnv) config(upstream string, listeners ...string) string {
	return fmt.Sprintf(`hostname: mx.gateway.test
domains: [example.com]
listeners:
%stls: {cert: %s, key: %s}
auth: {users_file: %s%s}
upstream:
  servers: [{address: %s, tls: none}]
  connect_timeout: 2s
  command_timeout: 3s
log: {format: json, level: debug}
`, strings.Join(listeners, ""), e.cert, e.key, e.usr, e.authExtra, upstream)
}

// client is a TLS client config that verifies the gateway's certificate.
func (e *tlsEnv) client() *tls.Config { return e.pki.ClientTLSConfig("mx.gateway.test") }

// tlsWrap turns a fresh raw connection into an implicit-TLS one.
func tlsWrap(t *testing.T, r *raw, e *tlsEnv) net.Conn {
	t.Helper()
	r.startTLS(e.client())
	return r.c
}
