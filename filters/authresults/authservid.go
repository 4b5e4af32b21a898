package authresults

// AuthservID returns the authserv-id that starts an Authentication-Results
// field value (RFC 8601 §2.2):
//
//	authres-payload = [CFWS] authserv-id [ CFWS authres-version ] ...
//	authserv-id     = value          ; token or quoted-string (RFC 2045)
//
// It is deliberately forgiving, because what it decides is which fields
// to remove: comments (nested, with quoted pairs) and folding white space
// are skipped, a quoted string may be unterminated, and a token ends at
// the first character a token cannot hold (";", a comment, a space ...),
// so that "our.name(x);" and "our.name/junk" are both ours. ok is false
// when the value holds no authserv-id at all.
func AuthservID(v string) (id string, ok bool) {
	i := skipCFWS(v, 0)
	if i >= len(v) {
		return "", false
	}
	if v[i] == '"' {
		var b []byte
		for i++; i < len(v) && v[i] != '"'; i++ {
			if v[i] == '\\' && i+1 < len(v) {
				i++
			}
			b = append(b, v[i])
		}
		return string(b), len(b) > 0
	}
	start := i
	for i < len(v) && tokenChar(v[i]) {
		i++
	}
	return v[start:i], i > start
}

// skipCFWS returns the index of the first character at or after i that is
// neither white space (folding included) nor part of a comment.
func skipCFWS(v string, i int) int {
	depth := 0
	for ; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')':
			// A stray ")" is skipped too: being lenient here only ever
			// removes more.
			depth = max(depth-1, 0)
		case depth > 0, c == ' ', c == '\t', c == '\r', c == '\n':
		default:
			return i
		}
	}
	return i
}

// tokenChar reports whether c may appear in an RFC 2045 token: any
// printable US-ASCII character except the tspecials.
func tokenChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=':
		return false
	}
	return true
}
