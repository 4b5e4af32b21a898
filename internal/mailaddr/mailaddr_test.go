package mailaddr

import (
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	cases := []struct {
		arg            string
		local, domain  string
		route, params  string
		null, quoted   bool
		extraAt, isLit bool
		err            error
	}{
		{arg: "<a@example.com>", local: "a", domain: "example.com"},
		{arg: "<A.B@Example.COM> SIZE=100", local: "A.B", domain: "example.com", params: "SIZE=100"},
		{arg: " <a@example.com>", local: "a", domain: "example.com"},
		{arg: "a@example.com BODY=8BITMIME", local: "a", domain: "example.com", params: "BODY=8BITMIME"},
		{arg: "<>", null: true},
		{arg: "<> SIZE=1", null: true, params: "SIZE=1"},
		{arg: "<postmaster>", local: "postmaster"},
		{arg: "<@relay.example:a@b.example>", route: "@relay.example", local: "a", domain: "b.example"},
		{arg: "<a%b@example.com>", local: "a%b", domain: "example.com"},
		{arg: "<b!a@example.com>", local: "b!a", domain: "example.com"},
		{arg: "<b!a>", local: "b!a"},
		{arg: "<a@b@example.com>", local: "a@b", domain: "example.com", extraAt: true},
		{arg: `<"a@b"@example.com>`, local: "a@b", domain: "example.com", quoted: true},
		{arg: `<"a\"b"@example.com>`, local: `a"b`, domain: "example.com", quoted: true},
		{arg: "<a@[192.0.2.1]>", local: "a", domain: "[192.0.2.1]", isLit: true},
		{arg: "<a@[IPv6:2001:db8::1]>", local: "a", domain: "[IPv6:2001:db8::1]", isLit: true},
		{arg: "<a@[300.1.1.1]>", err: ErrSyntax},
		{arg: "<a@>", err: ErrSyntax},
		{arg: "<@>", err: ErrSyntax},
		{arg: "<a@-bad.example>", err: ErrSyntax},
		{arg: "<a@exa_mple.com>", err: ErrSyntax},
		{arg: "<a b@example.com>", err: ErrSyntax},
		{arg: "<a@example.com", err: ErrSyntax},
		{arg: "<a@example.com>x", err: ErrSyntax},
		{arg: "<a<b@example.com>", err: ErrSyntax},
		{arg: "<" + strings.Repeat("a", 250) + "@example.com>", err: ErrTooLong},
		{arg: "", err: ErrSyntax},
	}
	for _, tc := range cases {
		a, params, err := ParsePath(tc.arg)
		if err != tc.err {
			t.Errorf("%q: err = %v, want %v", tc.arg, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if a.Local != tc.local || a.Domain != tc.domain || a.Route != tc.route || params != tc.params ||
			a.Null != tc.null || a.Quoted != tc.quoted || a.ExtraAt != tc.extraAt || a.Literal.IsValid() != tc.isLit {
			t.Errorf("%q: got %+v params %q", tc.arg, a, params)
		}
	}
}

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"a@Example.com":        "a@example.com",
		`"a b"@example.com`:    `"a b"@example.com`,
		`"ab"@example.com`:     `"ab"@example.com`,
		"@r.example:a@example": "a@example",
		"postmaster":           "postmaster",
		"":                     "",
	} {
		a, err := Parse(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if a.String() != want {
			t.Errorf("%q.String() = %q, want %q", in, a.String(), want)
		}
	}
}

// FuzzParsePath: never panics, and what parses re-parses to the same
// address (what we send upstream means what the client meant).
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"<a@b.c>", "<>", `<"x@y"@z.w>`, "<@a:b@c>", "<a@[1.2.3.4]> SIZE=1", "a%b!c@d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, _, err := ParsePath(s)
		if err != nil || a.Null {
			return
		}
		b, err := Parse(a.String())
		if err != nil {
			t.Fatalf("%q parsed as %+v, but its String %q does not parse: %v", s, a, a.String(), err)
		}
		if b.Local != a.Local || b.Domain != a.Domain {
			t.Fatalf("%q: round trip %+v -> %q -> %+v", s, a, a.String(), b)
		}
	})
}
