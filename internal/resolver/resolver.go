// Package resolver is the gateway's caching DNS resolver, shared by every
// filter that looks anything up (rDNS, DNSBL, SPF, DKIM, DMARC, SURBL).
//
// It asks the configured servers with miekg/dns, caches answers by their
// TTL (negative answers too, by the SOA minimum), collapses concurrent
// identical queries into one, and bounds every query by the caller's
// context and its own timeout, so a DNS server that never answers never
// hangs a session.
//
// Errors are *net.DNSError, as the standard library's resolver returns
// them, so blitiri.com.ar/go/spf and go-msgauth understand them:
// IsNotFound for NXDOMAIN and NODATA, IsTimeout for timeouts, IsTemporary
// for timeouts and SERVFAIL/REFUSED.
package resolver
