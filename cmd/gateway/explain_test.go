package main

import (
	"bytes"
	"testing"
	"testing/iotest"
)

func TestCopyCRLF(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"a":                  "a\r\n",
		"a\nb\n":             "a\r\nb\r\n",
		"a\r\nb":             "a\r\nb\r\n",
		"a\r\r\nb\rc\n\n":    "a\r\r\nb\rc\r\n\r\n",
		"Subject: x\n\nbody": "Subject: x\r\n\r\nbody\r\n",
	} {
		var out bytes.Buffer
		if err := copyCRLF(&out, bytes.NewBufferString(in)); err != nil || out.String() != want {
			t.Errorf("copyCRLF(%q) = %q, %v; want %q", in, out.String(), err, want)
		}
	}
}

// FuzzCopyCRLF: whatever the input and however it is read, every LF of
// the result ends a CRLF, the result ends with CRLF, and only CRs before
// LFs (and a final line break) were added.
func FuzzCopyCRLF(f *testing.F) {
	f.Add([]byte("a\nb\r\nc\rd"))
	f.Add([]byte("\r"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		// One byte per read: CR and LF fall in different reads.
		if err := copyCRLF(&out, iotest.OneByteReader(bytes.NewReader(in))); err != nil {
			t.Fatal(err)
		}
		b := out.Bytes()
		for i, c := range b {
			if c == '\n' && (i == 0 || b[i-1] != '\r') {
				t.Fatalf("bare LF at %d in %q", i, b)
			}
		}
		if len(in) > 0 && !bytes.HasSuffix(b, []byte("\r\n")) {
			t.Fatalf("%q does not end with CRLF", b)
		}
		norm := func(x []byte) []byte { return bytes.ReplaceAll(x, []byte("\r\n"), []byte("\n")) }
		want := norm(in)
		if len(in) > 0 && in[len(in)-1] != '\n' {
			want = append(want, '\n')
		}
		if !bytes.Equal(norm(b), want) {
			t.Fatalf("copyCRLF(%q) = %q", in, b)
		}
	})
}
