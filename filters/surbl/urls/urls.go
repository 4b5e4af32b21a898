// Package urls finds the links in a message the way a mail client
// would make them clickable, and reduces each to what URL block lists
// (SURBL, URIBL) list: the registrable domain of its host, or the IPv4
// address of a numeric host.
//
// What counts as a link:
//
//   - in text: URLs with a scheme (http, https, ftp; "http:\\" and a
//     single slash as browsers take them); without a scheme, names
//     whose last label is a real (ICANN) top-level domain when they
//     start with "www.", are followed by a path ("example.com/offer")
//     or have three labels or more ("shop.example.com"), so that file
//     names ("report.pdf", "setup.py") and e-mail addresses are not
//     taken;
//   - in HTML: href, src, action, background, formaction and poster
//     attributes (protocol-relative "//host/" too, HTML entities and
//     the tabs and newlines browsers drop decoded), URLs in any other
//     attribute and in the text;
//   - in a raw message (when no MIME parse is there): the body after the
//     header, quoted-printable soft line breaks and =XX undone, entities
//     decoded, read as text and as HTML; and the runs of base64 lines in
//     it that decode to text, read the same way.
//
// Hosts are normalised as a browser would connect to them: userinfo
// ("http://bank.example@evil.example/") and port dropped, %XX decoded,
// Unicode names mapped to punycode (IDNA, UTS #46), numeric hosts in
// decimal, octal or hex ("http://3232235777/", "http://0x7f.1/") made
// dotted IPv4. Addresses that are not global unicast (loopback, private,
// link-local) are left out: no list has them.
package urls

import (
	"bytes"
	"io"
	"strings"

	"golang.org/x/net/html"

	"mailgate/internal/rawbody"
)

// Collector gathers the targets of one message: each once, in the order
// first seen, at most max.
type Collector struct {
	max     int
	seen    map[string]bool
	targets []Target
}

// NewCollector returns a collector for at most max targets (at least 1).
func NewCollector(n int) *Collector {
	return &Collector{max: max(n, 1), seen: map[string]bool{}}
}

// Targets are the targets found, in the order first seen.
func (c *Collector) Targets() []Target { return c.targets }

// Full reports whether max targets were found; further input is
// ignored.
func (c *Collector) Full() bool { return len(c.targets) >= c.max }

// addAuthority adds the host of a URL's authority.
func (c *Collector) addAuthority(a string) {
	if t, ok := Host(a); ok {
		c.add(t)
	}
}

func (c *Collector) add(t Target) {
	if t.IP && !global(t.Name) {
		return
	}
	if c.seen[t.Name] || c.Full() {
		return
	}
	c.seen[t.Name] = true
	c.targets = append(c.targets, t)
}

// maxToken bounds what the HTML tokenizer buffers for one token (a tag
// with its attributes, a text run): past it, the part is read as text.
const maxToken = 1 << 20

// linkAttrs are the attributes whose value is a URL a client follows or
// loads.
var linkAttrs = map[string]bool{
	"href": true, "src": true, "action": true, "background": true, "formaction": true, "poster": true,
}

// HTML collects the links of an HTML document or fragment.
func (c *Collector) HTML(doc []byte) {
	z := html.NewTokenizer(bytes.NewReader(doc))
	z.SetMaxBuf(maxToken)
	read := 0 // bytes of doc in complete tokens
	for !c.Full() {
		tt := z.Next()
		if tt == html.ErrorToken {
			if z.Err() != io.EOF {
				// A token too large to buffer: the whole part as text,
				// so nothing hides behind one huge attribute.
				c.Text(string(doc))
			} else if read < len(doc) {
				// A tag or comment left open at the end is dropped by
				// the tokenizer; what it holds is read as text.
				c.Text(string(doc[read:]))
			}
			return
		}
		read += len(z.Raw())
		switch tt {
		case html.TextToken:
			c.Text(string(z.Text()))
		case html.StartTagToken, html.SelfClosingTagToken:
			for more := true; more && !c.Full(); {
				var key, val []byte
				key, val, more = z.TagAttr()
				if linkAttrs[string(key)] {
					c.link(string(val))
				} else {
					c.Text(string(val))
				}
			}
		}
	}
}

// link collects the host of an attribute value that is a URL
// (entities already decoded by the tokenizer).
func (c *Collector) link(v string) {
	// Browsers strip leading and trailing spaces and controls and drop
	// every tab and newline inside: "ht\ntp://" is "http://".
	v = strings.TrimFunc(v, func(r rune) bool { return r <= ' ' })
	if strings.ContainsAny(v, "\t\r\n") {
		v = strings.NewReplacer("\t", "", "\r", "", "\n", "").Replace(v)
	}
	if rest, ok := strings.CutPrefix(v, "//"); ok {
		c.addAuthority(authority(rest))
		return
	}
	if i := strings.IndexByte(v, ':'); i > 0 && isScheme(v[:i]) {
		c.addAuthority(authority(strings.TrimLeft(v[i+1:], `/\`)))
		return
	}
	// Anything else (javascript:, a relative "www.example.com/") is read
	// as text, for the URLs it may hold.
	c.Text(v)
}

// authority is the start of s up to the path, query or fragment.
func authority(s string) string {
	if i := strings.IndexAny(s, `/\?#`); i >= 0 {
		return s[:i]
	}
	return s
}

// isScheme reports whether s (any case) is a scheme whose URLs have a
// host a list can judge.
func isScheme(s string) bool {
	return strings.EqualFold(s, "http") || strings.EqualFold(s, "https") || strings.EqualFold(s, "ftp")
}

// Raw collects the links of a message that was not MIME-parsed: each
// reading of its body (internal/rawbody: quoted-printable undone, base64
// runs decoded), as text with HTML entities decoded and as HTML.
func (c *Collector) Raw(msg []byte) {
	for _, body := range rawbody.Texts(msg) {
		if c.Full() {
			return
		}
		c.Text(html.UnescapeString(string(body)))
		if bytes.IndexByte(body, '<') >= 0 {
			c.HTML(body)
		}
	}
}
