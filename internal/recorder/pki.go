package recorder

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
	"net"
	"time"
)

// PKI is a throw-away certificate authority and one leaf certificate
// signed by it, for tests and demos. Nothing here is meant for production.
type PKI struct {
	// CAPEM is the CA certificate, PEM encoded (write it to a file for a
	// config's "ca" key).
	CAPEM []byte
	// CAPool holds the CA certificate.
	CAPool *x509.CertPool
	// Cert is the leaf certificate with its private key.
	Cert tls.Certificate
	// CertPEM and KeyPEM are the leaf certificate and its key, PEM encoded.
	CertPEM, KeyPEM []byte
}

// NewPKI creates a CA and a leaf certificate valid for hosts, each a DNS
// name or an IP address (e.g. "mail.internal", "127.0.0.1"). Keys are
// ECDSA P-256; both certificates are valid from an hour ago for a day.
func NewPKI(hosts ...string) (*PKI, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "recorder test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("recorder: CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "recorder test server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		leafTmpl.Subject.CommonName = hosts[0]
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("recorder: leaf certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		return nil, err
	}

	p := &PKI{
		CAPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CAPool:  x509.NewCertPool(),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	p.CAPool.AddCert(caCert)
	p.Cert, err = tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// ServerTLSConfig returns a server-side TLS configuration presenting the
// leaf certificate.
func (p *PKI) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.Cert},
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientTLSConfig returns a client-side TLS configuration that trusts the
// CA and verifies serverName.
func (p *PKI) ClientTLSConfig(serverName string) *tls.Config {
	return &tls.Config{
		RootCAs:    p.CAPool,
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
	}
}
