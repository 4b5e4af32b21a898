package pipeline

import (
	"io"
	"strings"
	"testing"
)

func dropAR(name string, field []byte) bool {
	return strings.EqualFold(name, "Authentication-Results") && strings.Contains(string(field), "mx.example.com")
}

func TestDropHeaderFields(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"none", "A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n\r\nbody\r\n"},
		{"ours dropped", "Authentication-Results: mx.example.com; spf=pass\r\nFrom: a@b\r\n\r\nbody\r\n",
			"From: a@b\r\n\r\nbody\r\n"},
		{"folded dropped", "From: a@b\r\nAuthentication-Results: mx.example.com;\r\n\tdkim=pass\r\nSubject: x\r\n\r\nb\r\n",
			"From: a@b\r\nSubject: x\r\n\r\nb\r\n"},
		{"theirs kept", "Authentication-Results: other.example; spf=pass\r\n\r\nb\r\n",
			"Authentication-Results: other.example; spf=pass\r\n\r\nb\r\n"},
		{"body untouched", "A: 1\r\n\r\nAuthentication-Results: mx.example.com\r\n",
			"A: 1\r\n\r\nAuthentication-Results: mx.example.com\r\n"},
		{"no body", "Authentication-Results: mx.example.com\r\nA: 1\r\n", "A: 1\r\n"},
		{"no final newline", "A: 1\r\nAuthentication-Results: mx.example.com", "A: 1\r\n"},
		{"not a header", "junk line\r\nAuthentication-Results: mx.example.com\r\n",
			"junk line\r\nAuthentication-Results: mx.example.com\r\n"},
		{"leading continuation", " x\r\nA: 1\r\n\r\n", " x\r\nA: 1\r\n\r\n"},
		{"empty", "", ""},
		{"obsolete space before colon", "X-Foo : bar\r\nAuthentication-Results: mx.example.com; dkim=pass\r\n\r\nb\r\n",
			"X-Foo : bar\r\n\r\nb\r\n"},
		{"obsolete name itself", "Authentication-Results : mx.example.com; dkim=pass\r\nA: 1\r\n\r\nb\r\n",
			"A: 1\r\n\r\nb\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := io.ReadAll(DropHeaderFields(strings.NewReader(tc.in), dropAR))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDropHeaderFieldsLongLine(t *testing.T) {
	in := "A: " + strings.Repeat("x", 100<<10) + "\r\nAuthentication-Results: mx.example.com\r\n\r\nb\r\n"
	got, err := io.ReadAll(DropHeaderFields(strings.NewReader(in), dropAR))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != in {
		t.Errorf("a field longer than the buffer must pass the rest through unchanged")
	}
}

// FuzzDropHeaderFields: dropping nothing is the identity, and the body
// (after the first empty line) is never changed.
func FuzzDropHeaderFields(f *testing.F) {
	f.Add("A: 1\r\nAuthentication-Results: mx.example.com\r\n\r\nbody")
	f.Add(" \r\n:\r\n\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := io.ReadAll(DropHeaderFields(strings.NewReader(in), func(string, []byte) bool { return false }))
		if err != nil || string(got) != in {
			t.Fatalf("identity broken: %q -> %q (%v)", in, got, err)
		}
		got, err = io.ReadAll(DropHeaderFields(strings.NewReader(in), func(string, []byte) bool { return true }))
		if err != nil {
			t.Fatal(err)
		}
		if i := strings.Index(in, "\r\n\r\n"); i >= 0 && !strings.HasSuffix(string(got), in[i+2:]) {
			t.Fatalf("body changed: %q -> %q", in, got)
		}
	})
}
