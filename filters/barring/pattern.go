package barring

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxPatternLength bounds an entry: no real address is longer than 256
// bytes, so a longer pattern is a mistake.
const MaxPatternLength = 512

// token is one pattern character. A '*' compiles to an any token
// followed by a star token, "one or more" being "one, then zero or more".
type token struct {
	kind byte // tokLiteral, tokAny, tokAlpha, tokDigit or tokStar
	r    rune // the literal, lower-cased if an ASCII letter
}

const (
	tokLiteral byte = iota
	tokAny
	tokAlpha
	tokDigit
	tokStar
)

// Pattern is one compiled Type 2 wildcard entry.
type Pattern struct {
	text    string
	exclude bool
	toks    []token
}

// Compile parses an entry: an optional '~' (exclusion) and a wildcard
// specification where '*' is one or more characters, '?' one character,
// '$' one ASCII letter and '%' one digit. Other characters match
// themselves, ASCII letters in any case.
func Compile(s string) (Pattern, error) {
	spec, exclude := strings.CutPrefix(s, "~")
	p := Pattern{text: s, exclude: exclude}
	switch {
	case s == "":
		return Pattern{}, errors.New("empty pattern")
	case spec == "":
		return Pattern{}, errors.New("'~' without a pattern")
	case len(s) > MaxPatternLength:
		return Pattern{}, fmt.Errorf("pattern longer than %d bytes", MaxPatternLength)
	case !utf8.ValidString(s):
		return Pattern{}, errors.New("pattern is not valid UTF-8")
	}
	for _, r := range spec {
		switch r {
		case '*':
			p.toks = append(p.toks, token{kind: tokAny})
			if n := len(p.toks); n < 2 || p.toks[n-2].kind != tokStar {
				p.toks = append(p.toks, token{kind: tokStar})
			} else {
				// "**" is "two or more": keep one star, after both anys.
				p.toks[n-2], p.toks[n-1] = p.toks[n-1], p.toks[n-2]
			}
		case '?':
			p.toks = append(p.toks, token{kind: tokAny})
		case '$':
			p.toks = append(p.toks, token{kind: tokAlpha})
		case '%':
			p.toks = append(p.toks, token{kind: tokDigit})
		default:
			p.toks = append(p.toks, token{kind: tokLiteral, r: lower(r)})
		}
	}
	return p, nil
}

// String returns the entry as written.
func (p Pattern) String() string { return p.text }

// Exclude reports a '~' entry.
func (p Pattern) Exclude() bool { return p.exclude }

// Match reports whether the pattern (without its '~') matches the whole
// of addr. It is the classic wildcard match that, on a mismatch, resumes
// after the last star with one more character given to it: worst case
// O(len(pattern) × len(addr)), never exponential.
func (p Pattern) Match(addr string) bool {
	t := p.toks
	ti, ai := 0, 0
	star, starAt := -1, 0 // last star token seen, and where its run ends in addr
	for ai < len(addr) {
		r, w := utf8.DecodeRuneInString(addr[ai:])
		switch {
		case ti < len(t) && t[ti].kind == tokStar:
			star, starAt = ti, ai
			ti++
		case ti < len(t) && t[ti].matches(r):
			ti++
			ai += w
		case star >= 0:
			// Give the star one more character and retry what follows it.
			_, w = utf8.DecodeRuneInString(addr[starAt:])
			starAt += w
			ti, ai = star+1, starAt
		default:
			return false
		}
	}
	for ti < len(t) && t[ti].kind == tokStar {
		ti++
	}
	return ti == len(t)
}

func (t token) matches(r rune) bool {
	switch t.kind {
	case tokAny:
		return true
	case tokAlpha:
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
	case tokDigit:
		return r >= '0' && r <= '9'
	}
	return lower(r) == t.r
}

// lower folds ASCII letters only, as addresses are compared
// case-insensitively in ASCII (RFC 5321 domains; local parts in practice).
func lower(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}

// List is a barring list, read top to bottom.
type List []Pattern

// CompileList compiles the entries in order.
func CompileList(entries []string) (List, error) {
	l := make(List, 0, len(entries))
	for i, e := range entries {
		p, err := Compile(e)
		if err != nil {
			return nil, fmt.Errorf("entry %d (%q): %v", i+1, e, err)
		}
		l = append(l, p)
	}
	return l, nil
}

// Barred runs the list over addr: every matching entry sets the state,
// barred for a plain entry and not barred for a '~' one, so the last
// matching entry decides. It returns that entry, "" if none matched.
func (l List) Barred(addr string) (barred bool, entry string) {
	for _, p := range l {
		if p.Match(addr) {
			barred, entry = !p.exclude, p.text
		}
	}
	return barred, entry
}
