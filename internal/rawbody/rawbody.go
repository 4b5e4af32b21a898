// Package rawbody reads the body of a message whose MIME structure could
// not be parsed (malformed, too large, or parsed to no text part), the way
// a filter that must not be evaded reads it: after the header, with
// quoted-printable undone, and with every run of base64 lines that
// decodes to text decoded. A sender who breaks the structure on purpose
// to hide a part from the parse does not hide its text.
package rawbody

import (
	"bytes"
	"encoding/base64"
)

// Texts returns the readings of a raw message's body: the body with
// quoted-printable undone (harmless on other text), then each run of
// base64 in it that decodes to text.
func Texts(msg []byte) [][]byte {
	body := Body(msg)
	return append([][]byte{QPDecode(body)}, Base64Texts(body)...)
}

// minBase64Line: shorter lines are not taken for base64 (words, "--",
// short tokens); encoders write 60 to 76 characters a line.
const minBase64Line = 16

// Base64Texts finds the runs of base64 lines in a raw body (each line of
// at least minBase64Line characters of the base64 alphabet, the last
// of a run possibly shorter or padded) and returns the decoded runs
// that are text, not binary (no NUL or other control byte but white
// space in their first 512 bytes): the text parts of a message whose
// MIME structure could not be read.
func Base64Texts(body []byte) [][]byte {
	var (
		out [][]byte
		run []byte // the current run's characters, line breaks removed
	)
	end := func() {
		if len(run) >= minBase64Line {
			dec := make([]byte, base64.StdEncoding.DecodedLen(len(run)))
			n, _ := base64.StdEncoding.Decode(dec, run[:len(run)/4*4]) // what decodes, up to an error
			if n > 0 && isText(dec[:n]) {
				out = append(out, dec[:n])
			}
		}
		run = run[:0]
	}
	for rest := body; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) >= minBase64Line && isBase64(line):
			run = append(run, line...)
			if line[len(line)-1] == '=' {
				end() // padding ends the encoded text
			}
		case len(run) > 0 && len(line) > 0 && isBase64(line):
			run = append(run, line...) // the short last line of a run
			end()
		default:
			end()
		}
	}
	end()
	return out
}

func isBase64(line []byte) bool {
	for i, b := range line {
		switch {
		case 'A' <= b && b <= 'Z', 'a' <= b && b <= 'z', '0' <= b && b <= '9', b == '+', b == '/':
		case b == '=' && i >= len(line)-2:
		default:
			return false
		}
	}
	return true
}

// isText: no control bytes but white space at the start of b.
func isText(b []byte) bool {
	for _, c := range b[:min(len(b), 512)] {
		if c < ' ' && c != '\t' && c != '\r' && c != '\n' || c == 0x7f {
			return false
		}
	}
	return true
}

// Body is what follows the header of a raw message: after the first
// empty line, or from the first line that is neither a header field nor
// its continuation.
func Body(msg []byte) []byte {
	for rest := msg; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			return rest[len(line):]
		}
		if line[0] != ' ' && line[0] != '\t' && FieldName(trimmed) == "" {
			return rest
		}
		rest = rest[len(line):]
	}
	return nil
}

// FieldName returns the name of the header field a line starts, or "" if
// the line is not a field (no colon, or characters a field name cannot
// have). White space before the colon is the obsolete syntax of RFC 5322
// §4.5 ("Name : value"), which mail software still reads as a field: it
// must not end a header, or every field after it would escape the rules.
func FieldName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return ""
	}
	for _, c := range name {
		if c <= ' ' || c > '~' {
			return ""
		}
	}
	return string(name)
}

// QPDecode undoes quoted-printable: "=" at the end of a line (a soft
// line break) joins it to the next, "=XX" is the octet XX; anything else
// is kept as it is.
func QPDecode(b []byte) []byte {
	if bytes.IndexByte(b, '=') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '=' {
			out = append(out, b[i])
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			i++
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			i += 2
		case i+2 < len(b) && isHex(b[i+1]) && isHex(b[i+2]):
			out = append(out, unhex(b[i+1])<<4|unhex(b[i+2]))
			i += 2
		default:
			out = append(out, '=')
		}
	}
	return out
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
