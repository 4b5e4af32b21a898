package barring

import (
	"regexp"
	"strings"
	"testing"
)

// reference translates a pattern into an anchored regexp, the obvious but
// backtracking-prone way to write the matcher. Letters become [xX]
// classes rather than using (?i), whose Unicode folding would let 'k'
// match the Kelvin sign: the matcher folds ASCII only.
func reference(spec string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString(`(?s)^`)
	for _, r := range spec {
		switch {
		case r == '*':
			b.WriteString(`.+`)
		case r == '?':
			b.WriteString(`.`)
		case r == '$':
			b.WriteString(`[A-Za-z]`)
		case r == '%':
			b.WriteString(`[0-9]`)
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			b.WriteString("[" + strings.ToLower(string(r)) + strings.ToUpper(string(r)) + "]")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`$`)
	return regexp.Compile(b.String())
}

func FuzzMatch(f *testing.F) {
	for _, c := range [][2]string{
		{"*@*%%%%*", "bob@mail1234.example.com"},
		{"%%%%*", "1234bob@example.com"},
		{"~friend@netcom.com", "FRIEND@NetCom.com"},
		{"*!*", "host!user@example.com"},
		{`"*@*"`, `"a@b"`},
		{`"*@*"@*`, `"a@b"@example.com`},
		{"*", ""},
		{"**", "a"},
		{"*?*", "ab"},
		{"$$$", "a1c"},
		{"j??e", "jöse"},
		{"k", "\u212a"},
		{"\ufffd", "\xff"},
		{"*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaa"},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, pattern, addr string) {
		p, err := Compile(pattern)
		if err != nil {
			return
		}
		re, err := reference(strings.TrimPrefix(pattern, "~"))
		if err != nil {
			t.Fatalf("reference for %q: %v", pattern, err)
		}
		if got, want := p.Match(addr), re.MatchString(addr); got != want {
			t.Errorf("%q on %q: %v, regexp %s says %v", pattern, addr, got, re, want)
		}
	})
}
