package urls

import (
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/publicsuffix"
)

// Text collects the links in plain text.
func (c *Collector) Text(s string) {
	for i := 0; i < len(s) && !c.Full(); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !isHostRune(r) {
			i += n
			continue
		}
		j := runEnd(s, i, isHostRune)
		if j < len(s) && s[j] == ':' && isScheme(s[i:j]) {
			// Browsers take any number of slashes or backslashes after
			// the scheme: "http:/x", "http:\\x" go to x.
			k := j + 1
			for k < len(s) && (s[k] == '/' || s[k] == '\\') {
				k++
			}
			if k > j+1 {
				end := runEnd(s, k, isAuthorityRune)
				c.addAuthority(s[k:end])
				// The path goes on being read: a redirector's target
				// ("?u=http://...") is a link too.
				i = end
				continue
			}
		}
		c.word(s, i, j)
		i = j
	}
}

// runEnd returns the end of the run of runes from i that in accepts.
func runEnd(s string, i int, in func(rune) bool) int {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !in(r) {
			break
		}
		i += n
	}
	return i
}

// word judges a run of host characters s[i:j] without a scheme: a
// "www." name, or a bare domain name that is clearly one.
func (c *Collector) word(s string, i, j int) {
	if prev, _ := utf8.DecodeLastRuneInString(s[:i]); i > 0 && !boundary(prev) {
		return // inside a path, a query, an address: "/a/b.com", "x@b.com"
	}
	if j < len(s) && s[j] == '@' {
		return // the local part of an address: "john.smith@"
	}
	path := j < len(s) && s[j] == '/'
	w := strings.TrimLeft(s[i:j], ".")
	h, ok := hostName(w)
	if !ok {
		return
	}
	dot := strings.LastIndexByte(h, '.')
	if dot < 0 {
		return
	}
	tld := h[dot+1:]
	if allDigits(tld) {
		return // a version number, or a bare address nobody links
	}
	if _, icann := publicsuffix.PublicSuffix(tld); !icann {
		return // "report.pdf", "main.go": not a top-level domain
	}
	if !strings.HasPrefix(h, "www.") && !path && (strings.Count(h, ".") < 2 || fileExt[tld]) {
		// "setup.py", "notes.md" without a path are file names more
		// often than hosts.
		return
	}
	c.addAuthority(h)
}

// fileExt are top-level domains that are also common file name
// extensions: a bare name ending in one is taken only with a path.
var fileExt = map[string]bool{
	"ac": true, "ai": true, "am": true, "app": true, "as": true, "cc": true, "cs": true,
	"in": true, "la": true, "lo": true, "md": true, "mk": true, "ml": true, "mov": true,
	"ms": true, "pl": true, "pm": true, "ps": true, "py": true, "rs": true, "sh": true,
	"so": true, "zip": true,
}

// boundary reports whether a bare name may start after r: white space,
// brackets, quotes and punctuation that is not part of a URL.
func boundary(r rune) bool {
	if unicode.IsSpace(r) || unicode.In(r, unicode.Ps, unicode.Pe, unicode.Pi, unicode.Pf) {
		return true
	}
	return strings.ContainsRune(`"'<>,;:*|!`, r)
}

// isHostRune: what a host name is written with, including Unicode
// letters for IDN, the ideographic full stops IDNA maps to ".", and
// invisible format characters (soft hyphen, zero-width joiners), which
// IDNA removes or refuses: they must not split a name in two.
func isHostRune(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '-', r == '_', r == '.':
		return true
	case r < 0x80 || r == utf8.RuneError:
		return false
	case r == '\u3002', r == '\uff0e', r == '\uff61':
		return true
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) || unicode.Is(unicode.Cf, r)
}

// isAuthorityRune adds what an authority holds besides the host: a
// port, userinfo, %-escapes.
func isAuthorityRune(r rune) bool {
	return isHostRune(r) || r == '%' || r == ':' || r == '@'
}

// global reports whether a dotted IPv4 address is one a list may hold:
// not loopback, private, link-local, multicast or unspecified.
func global(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.IsGlobalUnicast() && !a.IsPrivate()
}
