// Package mailaddr parses SMTP envelope paths (RFC 5321 §4.1.2).
//
// The parser is deliberately a little more permissive than the grammar so
// that relay-exploit forms (percent hack, bang paths, source routes, several
// '@') parse and can be refused by policy with a clear reply, instead of
// vanishing into a generic syntax error.
package mailaddr

import (
	"errors"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// MaxPathLength is RFC 5321 §4.5.3.1.3's limit for a path, brackets included.
const MaxPathLength = 256

// Address is a parsed envelope path.
type Address struct {
	// Raw is the path between the angle brackets, as the client sent it.
	Raw string
	// Null is the null reverse-path <>.
	Null bool
	// Route is a source route ("@a,@b") if one was given.
	Route string
	// Local is the local part with quotes and escapes removed.
	Local string
	// Quoted reports a quoted-string local part.
	Quoted bool
	// Domain is lower-cased; an address literal keeps its brackets.
	Domain string
	// Literal is the address of a domain literal such as [192.0.2.1].
	Literal netip.Addr
	// ExtraAt reports an unquoted '@' inside the local part (a@b@c).
	ExtraAt bool
}

// String returns the address for logs and for the upstream: local@domain,
// without a source route.
func (a Address) String() string {
	if a.Null {
		return ""
	}
	local := a.Local
	if a.Quoted || needsQuoting(local) {
		local = quote(local)
	}
	if a.Domain == "" {
		return local
	}
	return local + "@" + a.Domain
}

// Errors returned by Parse.
var (
	ErrSyntax   = errors.New("bad address syntax")
	ErrTooLong  = errors.New("address too long")
	ErrNoDomain = errors.New("address has no domain")
)

// ParsePath parses the argument of MAIL FROM: or RCPT TO: after the colon:
// "<path> params...". It returns the address and the remaining parameter
// text. Missing angle brackets are tolerated, as most MTAs do.
func ParsePath(arg string) (Address, string, error) {
	arg = strings.TrimLeft(arg, " ")
	var path, rest string
	if strings.HasPrefix(arg, "<") {
		end := closingBracket(arg)
		if end < 0 {
			return Address{}, "", ErrSyntax
		}
		path, rest = arg[1:end], arg[end+1:]
		if rest != "" && rest[0] != ' ' {
			return Address{}, "", ErrSyntax
		}
	} else {
		path, rest, _ = strings.Cut(arg, " ")
		if path == "" {
			return Address{}, "", ErrSyntax
		}
	}
	if len(path)+2 > MaxPathLength {
		return Address{}, "", ErrTooLong
	}
	a, err := Parse(path)
	return a, strings.TrimSpace(rest), err
}

// closingBracket finds the '>' that closes the path, skipping quoted text.
func closingBracket(s string) int {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '>' && !inQuote:
			return i
		}
	}
	return -1
}

// Parse parses a path without angle brackets. "" is the null path.
func Parse(path string) (Address, error) {
	a := Address{Raw: path}
	if path == "" {
		a.Null = true
		return a, nil
	}
	if strings.ContainsAny(path, "\x00\r\n\t ") && !strings.HasPrefix(path, `"`) && !strings.Contains(path, `"`) {
		return Address{}, ErrSyntax
	}
	mailbox := path
	if strings.HasPrefix(path, "@") {
		route, box, ok := strings.Cut(path, ":")
		if !ok || box == "" {
			return Address{}, ErrSyntax
		}
		a.Route, mailbox = route, box
	}

	var local, domain string
	if strings.HasPrefix(mailbox, `"`) {
		end, unq, ok := parseQuoted(mailbox)
		if !ok {
			return Address{}, ErrSyntax
		}
		a.Quoted, local = true, unq
		rest := mailbox[end:]
		switch {
		case rest == "":
		case strings.HasPrefix(rest, "@"):
			domain = rest[1:]
		default:
			return Address{}, ErrSyntax
		}
	} else {
		at := strings.LastIndexByte(mailbox, '@')
		if at < 0 {
			local = mailbox
		} else {
			local, domain = mailbox[:at], mailbox[at+1:]
		}
		if local == "" {
			return Address{}, ErrSyntax
		}
		a.ExtraAt = strings.Contains(local, "@")
		for i := 0; i < len(local); i++ {
			if c := local[i]; c <= ' ' || c >= 0x7f && c < 0x80 || strings.IndexByte(`"(),:;<>[\]`, c) >= 0 {
				return Address{}, ErrSyntax
			}
		}
	}
	a.Local = local
	if domain == "" {
		if strings.Contains(mailbox, "@") {
			return Address{}, ErrSyntax
		}
		return a, nil
	}
	if strings.HasPrefix(domain, "[") {
		lit, ok := parseLiteral(domain)
		if !ok {
			return Address{}, ErrSyntax
		}
		a.Literal, a.Domain = lit, domain
		return a, nil
	}
	if !validDomain(domain) {
		return Address{}, ErrSyntax
	}
	a.Domain = ASCIILower(strings.TrimSuffix(domain, "."))
	return a, nil
}

// parseQuoted returns the index after the closing quote and the unquoted
// content.
func parseQuoted(s string) (int, string, bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 >= len(s) || s[i+1] < ' ' || s[i+1] > '~' {
				return 0, "", false
			}
			i++
			b.WriteByte(s[i])
		case c == '"':
			return i + 1, b.String(), true
		case c < ' ' || c == 0x7f:
			return 0, "", false
		default:
			b.WriteByte(c)
		}
	}
	return 0, "", false
}

func parseLiteral(d string) (netip.Addr, bool) {
	if !strings.HasSuffix(d, "]") {
		return netip.Addr{}, false
	}
	inner := d[1 : len(d)-1]
	if v6, ok := strings.CutPrefix(inner, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		return a, err == nil && a.Is6()
	}
	a, err := netip.ParseAddr(inner)
	return a, err == nil && a.Is4()
}

// validDomain checks RFC 5321 domain syntax (letters, digits, hyphens and
// dots; UTF-8 is accepted for internationalised names).
func validDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 || !utf8.ValidString(d) {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c >= 0x80) {
				return false
			}
		}
	}
	return true
}

// ASCIILower lower-cases ASCII letters only: strings.ToLower would change
// the length of some UTF-8 names.
func ASCIILower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func needsQuoting(local string) bool {
	if local == "" || strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
		return true
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c <= ' ' || c == 0x7f || strings.IndexByte(`"(),:;<>@[\]`, c) >= 0 {
			return true
		}
	}
	return false
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}
