package spf

import (
	"strings"

	"blitiri.com.ar/go/spf"

	"mailgate/pipeline"
	"mailgate/smtpd"
)

// receivedSPF is the RFC 7208 §9.1 trace field, e.g.
//
//	Received-SPF: pass (mx.example.org: domain of bob@example.com
//		designates 192.0.2.1 as permitted sender) receiver=mx.example.org;
//		client-ip=192.0.2.1; envelope-from="bob@example.com";
//		helo=mail.example.com; identity=mailfrom;
//
// Everything the client sent is reduced to printable ASCII and escaped,
// so no sender or HELO can add a header line of its own.
func (f *Filter) receivedSPF(s *pipeline.Session, from pipeline.Address, c check) string {
	ip := s.ClientIP().String()
	sender := clean(c.sender, 300)
	words := []string{string(c.result)}
	comment := strings.Fields(commentText(c.result, escapeComment(sender), ip))
	if c.domain == "" {
		comment = strings.Fields("no domain name to check")
	}
	if f.hostname != "" {
		comment = append([]string{escapeComment(clean(f.hostname, 253)) + ":"}, comment...)
	}
	comment[0] = "(" + comment[0]
	comment[len(comment)-1] += ")"
	words = append(words, comment...)

	if f.hostname != "" {
		words = append(words, "receiver="+value(clean(f.hostname, 253))+";")
	}
	words = append(words,
		"client-ip="+value(ip)+";",
		"envelope-from="+quoted(clean(from.String(), 300))+";",
		"helo="+value(clean(s.Helo, 255))+";",
		"identity="+c.identity+";",
	)
	return pipeline.FoldHeader("Received-SPF: ", words)
}

// commentText is the customary explanation of each result (as Mail::SPF
// and the postfix policy daemons word it).
func commentText(r spf.Result, sender, ip string) string {
	switch r {
	case spf.Pass:
		return "domain of " + sender + " designates " + ip + " as permitted sender"
	case spf.Fail:
		return "domain of " + sender + " does not designate " + ip + " as permitted sender"
	case spf.SoftFail:
		return "domain of transitioning " + sender + " does not designate " + ip + " as permitted sender"
	case spf.Neutral:
		return ip + " is neither permitted nor denied by domain of " + sender
	case spf.TempError:
		return "temporary error in processing during lookup of " + sender
	case spf.PermError:
		return "permanent error in processing domain of " + sender
	}
	return "domain of " + sender + " does not designate permitted sender hosts"
}

// clean keeps printable ASCII only (anything else becomes '?'), at most
// max bytes: CR, LF and other controls can never reach a header.
func clean(s string, max int) string { return smtpd.Sanitize(s, max) }

// value is a key-value pair's value: a dot-atom if it is one, else a
// quoted-string (RFC 7208 §9.1, RFC 5322 §3.2.3).
func value(s string) string {
	if isDotAtom(s) {
		return s
	}
	return quoted(s)
}

// The replacers are built once: building one per header was most of the
// cost of the Received-SPF field.
var (
	quotedEscaper  = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	commentEscaper = strings.NewReplacer(`\`, `\\`, `(`, `\(`, `)`, `\)`)
)

func quoted(s string) string {
	if strings.ContainsAny(s, `\"`) {
		s = quotedEscaper.Replace(s)
	}
	return `"` + s + `"`
}

// escapeComment quotes what would end or nest the comment.
func escapeComment(s string) string {
	if !strings.ContainsAny(s, `\()`) {
		return s
	}
	return commentEscaper.Replace(s)
}

func isDotAtom(s string) bool {
	if s == "" {
		return false
	}
	for _, atom := range strings.Split(s, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			c := atom[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0) {
				return false
			}
		}
	}
	return true
}
