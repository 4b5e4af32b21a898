package pipeline

import (
	"crypto/tls"
	"strings"
	"time"

	"mailgate/smtpd"
)

// heloCleaner drops what would change the structure of the Received
// field: a HELO of "evil (x) [1.2.3.4]" must not read as another host or
// address to the servers and spam scorers that parse the field.
var heloCleaner = strings.NewReplacer("(", "", ")", "", ";", "", "[", "", "]", "", " ", "")

// receivedHeader is the gateway's own trace field for the transaction.
func (h *handler) receivedHeader() string {
	return ReceivedField(h.g.Hostname, h.s, h.t, h.messageID(), h.g.now())
}

// ReceivedField is the gateway's own trace field (RFC 5321 §4.4) for a
// message of transaction t from session s, received by host at now with
// queue id id, with the TLS version and cipher the client used, folded
// at 78 columns.
func ReceivedField(host string, s *Session, t *Transaction, id string, now time.Time) string {
	helo := smtpd.Sanitize(s.Helo, 255)
	helo = heloCleaner.Replace(helo)
	if helo == "" {
		helo = "unknown"
	}
	ip := s.ClientIP().String()
	if s.ClientIP().Is6() {
		ip = "IPv6:" + ip
	}
	with := "SMTP"
	if s.Extended {
		with = "ESMTP"
		if s.TLS != nil {
			with += "S"
		}
		if s.AuthUser != "" {
			with += "A"
		}
	}
	// TCP-info (RFC 5321 §4.4): the forward-confirmed name when the rdns
	// filter found one (it admits only host name characters).
	parts := []string{"from " + helo + " (" + strings.TrimSpace(s.ClientHostname+" ["+ip+"])")}
	if s.TLS != nil {
		parts = append(parts, "(using "+tlsVersion(s.TLS.Version)+" with cipher "+tls.CipherSuiteName(s.TLS.CipherSuite)+")")
	}
	parts = append(parts, "by "+host, "with "+with, "id "+id)
	if len(t.Rcpts) == 1 {
		// Only for a single recipient: naming several would disclose
		// Bcc recipients to each other (RFC 5321 §7.2).
		parts = append(parts, "for <"+smtpd.Sanitize(t.Rcpts[0].String(), 256)+">;")
	} else {
		parts[len(parts)-1] += ";"
	}
	parts = append(parts, now.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	return FoldHeader("Received: ", parts)
}

// FoldHeader joins words into a header field folded before 78 columns
// (a single long word stays whole).
func FoldHeader(name string, words []string) string {
	var b strings.Builder
	b.WriteString(name)
	col := len(name)
	for i, w := range words {
		if i > 0 {
			if col+1+len(w) > 78 {
				b.WriteString("\r\n\t")
				col = 8
			} else {
				b.WriteByte(' ')
				col++
			}
		}
		b.WriteString(w)
		col += len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1.0"
	}
	return "TLS"
}
