package mimeparse

import (
	"io"
	"mime"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// fileNames returns every file name a part's header gives, decoded
// leniently: the filename parameters of its Content-Disposition fields
// and the name parameters of its Content-Type fields, plain, RFC 2047
// encoded or RFC 2231 extended (in any charset, continued or not).
// Go's and enmime's strict parsers drop a parameter they cannot decode
// (an RFC 2231 value in a charset other than UTF-8, a continuation
// without its first section), and a mail client that can decode it
// would show and save the file under that name.
func fileNames(h textproto.MIMEHeader) []string {
	var out []string
	for _, v := range h.Values("Content-Disposition") {
		out = append(out, paramValues(v, "filename")...)
	}
	for _, v := range h.Values("Content-Type") {
		out = append(out, paramValues(v, "name")...)
	}
	return out
}

// FieldFileNames returns the file names one header field gives: the
// filename parameter of a Content-Disposition value, the name parameter
// of a Content-Type value (field names are case-insensitive), decoded
// as leniently as Part.Filename and Part.AltNames are. It lets a filter
// look for names in a message that could not be parsed.
func FieldFileNames(field, value string) []string {
	switch strings.ToLower(field) {
	case "content-disposition":
		return paramValues(value, "filename")
	case "content-type":
		return paramValues(value, "name")
	}
	return nil
}

// paramValues returns the decoded values of parameter name in a header
// value "type; a=b; c=\"d\"" (a missing ";" between parameters is
// tolerated).
func paramValues(v, name string) []string {
	var out []string
	sections := map[int]string{} // name*N and name*N*
	encoded := map[int]bool{}
	// Parameters start after the type; a mangled field may have no
	// type, or no ";" after it.
	rest := v
	if i := strings.IndexByte(v, ';'); i >= 0 && !strings.Contains(v[:i], "=") {
		rest = v[i+1:]
	}
	for len(rest) > 0 {
		rest = strings.TrimLeft(rest, " \t\r\n;")
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			break
		}
		// The key is the last word before "=": anything before it is a
		// valueless parameter or a type not followed by ";".
		key := strings.ToLower(rest[:eq])
		if f := strings.FieldsFunc(key, func(r rune) bool { return r == ';' || r == ' ' || r == '\t' }); len(f) > 0 {
			key = f[len(f)-1]
		}
		rest = strings.TrimLeft(rest[eq+1:], " \t\r\n")
		var val string
		if strings.HasPrefix(rest, `"`) {
			val, rest = unquote(rest)
		} else {
			end := strings.IndexByte(rest, ';')
			if end < 0 {
				end = len(rest)
			}
			val, rest = strings.TrimSpace(rest[:end]), rest[end:]
		}
		switch {
		case key == name:
			out = append(out, decodeWords(val))
		case key == name+"*":
			out = append(out, decodeExtValue(val, true))
		case strings.HasPrefix(key, name+"*"):
			n := strings.TrimPrefix(key, name+"*")
			enc := strings.HasSuffix(n, "*")
			idx, err := strconv.Atoi(strings.TrimSuffix(n, "*"))
			if err != nil || idx < 0 || idx > 999 {
				continue
			}
			sections[idx], encoded[idx] = val, enc
		}
	}
	if len(sections) > 0 {
		idxs := make([]int, 0, len(sections))
		for i := range sections {
			idxs = append(idxs, i)
		}
		sort.Ints(idxs)
		var b strings.Builder
		for _, i := range idxs {
			s := sections[i]
			if encoded[i] {
				s = decodeExtValue(s, i == idxs[0])
			}
			b.WriteString(s)
		}
		out = append(out, b.String())
	}
	return out
}

// unquote reads a quoted string at the start of s and returns its value
// and the rest of s.
func unquote(s string) (string, string) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
			return b.String(), s[i+1:]
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), ""
}

// decodeWords decodes RFC 2047 encoded words (which many mailers put in
// file names, against the RFC); words in charsets Go does not know keep
// their bytes.
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d := mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil }}
	if out, err := d.DecodeHeader(s); err == nil {
		return toUTF8(out)
	}
	return s
}

// decodeExtValue decodes an RFC 2231 value: charset'language'%XX...
// (first: the value starts with the charset and language).
func decodeExtValue(s string, first bool) string {
	if first {
		if parts := strings.SplitN(s, "'", 3); len(parts) == 3 {
			s = parts[2]
		}
	}
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(v))
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return toUTF8(string(b))
}

// toUTF8 reads bytes that are not UTF-8 as ISO-8859-1: right for the
// Western charsets, and the ASCII that matters (the extension) survives
// any charset.
func toUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}
