package dmarc

import (
	"bufio"
	"errors"
	"io"
	"mime"
	"net/mail"
	"strings"
	"sync"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// The RFC5322.From domain is what DMARC protects: the author the reader
// sees. Finding it is parsing hostile input, so the rules are explicit:
//
//   - The header is read as a mail client would: every line with a colon
//     is a field, whitespace before the colon included ("From :" is a From
//     field, RFC 5322 §4.5 obs-fields), and a line that is not a field does not end
//     the header (a later From field still counts).
//   - Exactly one From field; in it, one author, or several of one domain.
//   - An address net/mail cannot parse is read leniently: every "@domain"
//     in the field; if they name one domain, that is it.

// Why a From domain could not be found (each a dmarc=permerror).
var (
	ErrNoFrom       = errors.New("no From header field")
	ErrSeveralFrom  = errors.New("several From header fields")
	ErrNoAuthor     = errors.New("no address in the From header field")
	ErrSeveralAuths = errors.New("the From header field names authors of several domains")
	ErrBadDomain    = errors.New("the From address has no usable domain")
)

const (
	// maxFromField bounds one From field kept while reading; a longer
	// one is cut there (and will most likely not parse).
	maxFromField = 16 << 10
	// maxHeaderLine bounds a header line: of a longer one only the start
	// is looked at.
	maxHeaderLine = 64 << 10
)

// headerReaders spares fromFields a 64 KB allocation per message.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxHeaderLine) }}

// fromFields returns the values of the message's From header fields,
// unfolded (two at most: a second is already one too many). It reads the
// header only.
func fromFields(r io.Reader) ([]string, error) {
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		headerReaders.Put(br)
	}()
	var (
		from    []string
		current *strings.Builder // the From field being collected, or nil
	)
	for {
		line, read, err := readLine(br)
		if read {
			switch {
			case line == "":
				return collect(from, current), nil // end of the header
			case line[0] == ' ' || line[0] == '\t':
				if current != nil {
					appendCapped(current, line)
				}
			default:
				from = collect(from, current)
				current = nil
				if len(from) > 1 {
					return from, nil // enough to know it is one too many
				}
				if name, value, ok := field(line); ok && strings.EqualFold(name, "From") {
					current = &strings.Builder{}
					appendCapped(current, value)
				}
			}
		}
		if err == io.EOF {
			return collect(from, current), nil
		}
		if err != nil {
			return from, err
		}
	}
}

// readLine returns the next line without its line ending (read is false
// when there was none); of a line longer than maxHeaderLine, the start
// (the rest is skipped). At the end of the input it returns io.EOF,
// possibly with a last line.
func readLine(br *bufio.Reader) (line string, read bool, err error) {
	chunk, err := br.ReadSlice('\n')
	line, read = strings.TrimRight(string(chunk), "\r\n"), len(chunk) > 0
	for err == bufio.ErrBufferFull {
		_, err = br.ReadSlice('\n')
	}
	return line, read, err
}

func collect(from []string, current *strings.Builder) []string {
	if current != nil {
		from = append(from, current.String())
	}
	return from
}

func appendCapped(b *strings.Builder, p string) {
	if room := maxFromField - b.Len(); room > 0 {
		b.WriteString(p[:min(len(p), room)])
	}
}

// field splits a header line into its name (without the whitespace an
// obsolete "Name :" has) and value; ok is false for a line that is not a
// field.
func field(line string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(line, ":")
	if !ok {
		return "", "", false
	}
	name = strings.TrimRight(name, " \t")
	if name == "" {
		return "", "", false
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] > '~' {
			return "", "", false
		}
	}
	return name, value, true
}

// addressParser decodes no charsets: display names do not matter here,
// and an unknown charset must not make a valid address unparseable.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// AuthorDomain returns the domain of the author named by a message's From
// header fields (their unfolded values): lower-case ASCII (an
// internationalised name in its A-label form), without a trailing dot.
// The errors are the Err* of this package.
func AuthorDomain(from []string) (string, error) {
	switch {
	case len(from) == 0:
		return "", ErrNoFrom
	case len(from) > 1:
		return "", ErrSeveralFrom
	}
	var domains []string
	if list, err := addressParser.ParseList(from[0]); err == nil {
		for _, a := range list {
			_, d, _ := cutLast(a.Address, "@")
			domains = append(domains, d)
		}
	} else {
		domains = atDomains(from[0])
	}
	if len(domains) == 0 {
		return "", ErrNoAuthor
	}
	domain := ""
	for i, d := range domains {
		d, ok := normalise(d)
		if !ok {
			return "", ErrBadDomain
		}
		if i > 0 && d != domain {
			return "", ErrSeveralAuths
		}
		domain = d
	}
	return domain, nil
}

// authorDomains returns the distinct valid author domains of all From
// fields, in order.
func authorDomains(from []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, field := range from {
		var domains []string
		if list, err := addressParser.ParseList(field); err == nil {
			for _, a := range list {
				_, d, _ := cutLast(a.Address, "@")
				domains = append(domains, d)
			}
		} else {
			domains = atDomains(field)
		}
		for _, d := range domains {
			if d, ok := normalise(d); ok && !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// atDomains is the lenient reading of a From field net/mail refused:
// the domain after every "@".
func atDomains(v string) []string {
	var out []string
	for {
		i := strings.IndexByte(v, '@')
		if i < 0 {
			return out
		}
		v = v[i+1:]
		j := 0
		for j < len(v) && (isDomainChar(v[j]) || v[j] >= 0x80) {
			j++
		}
		out = append(out, v[:j])
		v = v[j:]
	}
}

func isDomainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
}

// normalise lower-cases a domain, turns a U-label name into A-labels and
// checks that what is left is a DNS name of at least two labels.
func normalise(d string) (string, bool) {
	d = strings.TrimSuffix(d, ".")
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(d)
			if err != nil {
				return "", false
			}
			d = a
			break
		}
	}
	d = strings.ToLower(d)
	if len(d) > 253 || !strings.Contains(d, ".") {
		return "", false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			if !isDomainChar(label[i]) || label[i] == '.' {
				return "", false
			}
		}
	}
	return d, true
}

// OrgDomain is a domain's organisational domain (RFC 7489 §3.2): the
// public suffix plus one label ("mail.example.co.uk" → "example.co.uk").
// A name that is itself a public suffix, or not a name, is its own.
func OrgDomain(domain string) string {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}
