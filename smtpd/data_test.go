package smtpd

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestReadData(t *testing.T) {
	cases := []struct {
		name      string
		in        string
		want      string
		smuggling bool
		bareLF    int
		bareCR    int
		rest      string // what must remain unread after the end of data
	}{
		{name: "simple", in: "a\r\nb\r\n.\r\n", want: "a\r\nb\r\n"},
		{name: "empty", in: ".\r\n", want: ""},
		{name: "rest is left", in: "a\r\n.\r\nQUIT\r\n", want: "a\r\n", rest: "QUIT\r\n"},
		{name: "dot unstuffing", in: "..a\r\n..\r\n.\r\n", want: ".a\r\n.\r\n"},
		{name: "998 octet line", in: strings.Repeat("x", 998) + "\r\n.\r\n", want: strings.Repeat("x", 998) + "\r\n"},
		{name: "very long line", in: strings.Repeat("y", 10000) + "\r\n.\r\n", want: strings.Repeat("y", 10000) + "\r\n"},
		{name: "bare LF normalised", in: "a\nb\r\n.\r\n", want: "a\r\nb\r\n", bareLF: 1},
		{name: "bare CR normalised", in: "a\rb\r\n.\r\n", want: "a\r\nb\r\n", bareCR: 1},
		{name: "LF.LF", in: "a\n.\nMAIL FROM:<x>\r\n.\r\n", want: "a\r\n\r\nMAIL FROM:<x>\r\n", smuggling: true, bareLF: 2},
		{name: "LF.CRLF", in: "a\n.\r\nMAIL FROM:<x>\r\n.\r\n", want: "a\r\n\r\nMAIL FROM:<x>\r\n", smuggling: true, bareLF: 1},
		{name: "CRLF.LF", in: "a\r\n.\nMAIL FROM:<x>\r\n.\r\n", want: "a\r\n\r\nMAIL FROM:<x>\r\n", smuggling: true, bareLF: 1},
		{name: "CR.CR", in: "a\r.\rMAIL FROM:<x>\r\n.\r\n", want: "a\r\n\r\nMAIL FROM:<x>\r\n", smuggling: true, bareCR: 2},
		{name: "CRLF.CR", in: "a\r\n.\rMAIL\r\n.\r\n", want: "a\r\n\r\nMAIL\r\n", smuggling: true, bareCR: 1},
		{name: "CR.CRLF", in: "a\r.\r\nMAIL\r\n.\r\n", want: "a\r\n\r\nMAIL\r\n", smuggling: true, bareCR: 1},
		{name: "NUL before dot", in: "a\r\n\x00.\r\nMAIL\r\n.\r\n", want: "a\r\n\x00.\r\nMAIL\r\n", smuggling: true},
		{name: "NUL after dot", in: "a\r\n.\x00\r\nMAIL\r\n.\r\n", want: "a\r\n\x00\r\nMAIL\r\n", smuggling: true},
		{name: "dot-space is text", in: "a\r\n. \r\n.\r\n", want: "a\r\n \r\n"},
		{name: "CR at chunk end", in: strings.Repeat("z", 4095) + "\r" + "\n.\r\n", want: strings.Repeat("z", 4095) + "\r\n"},
		{name: "bare CR at chunk end", in: strings.Repeat("z", 4095) + "\r" + ".\r\n.\r\n", want: strings.Repeat("z", 4095) + "\r\n\r\n", smuggling: true, bareCR: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tc.in), 4096)
			var out bytes.Buffer
			res, err := readData(r, &out)
			if err != nil {
				t.Fatalf("readData: %v", err)
			}
			if out.String() != tc.want {
				t.Errorf("message = %q, want %q", out.String(), tc.want)
			}
			if res.Smuggling != tc.smuggling || res.BareLF != tc.bareLF || res.BareCR != tc.bareCR {
				t.Errorf("result = %+v, want smuggling=%v bareLF=%d bareCR=%d", res, tc.smuggling, tc.bareLF, tc.bareCR)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != tc.rest {
				t.Errorf("left unread %q, want %q", rest, tc.rest)
			}
		})
	}
}

func TestReadDataUnterminated(t *testing.T) {
	for _, in := range []string{"", "abc", "a\r\n.", "a\r\n.\r", "a\r\n.\n"} {
		_, err := readData(bufio.NewReader(strings.NewReader(in)), io.Discard)
		if err != io.ErrUnexpectedEOF {
			t.Errorf("%q: err = %v, want unexpected EOF", in, err)
		}
	}
}

// FuzzReadData checks the property that matters: whatever the client
// sends, the message we pass on contains only CRLF line endings, so once
// dot-stuffed again it can never hold an end-of-data sequence — unless the
// reader flagged the data as a smuggling attempt (and it is refused).
func FuzzReadData(f *testing.F) {
	for _, s := range []string{"a\r\n.\r\n", "a\n.\n", "a\r.\r", "\x00.\r\n", "..\r\n.\r\n", "x\r\r\n\n.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		res, err := readData(bufio.NewReaderSize(bytes.NewReader(in), 16), &out)
		if err != nil {
			return
		}
		b := out.Bytes()
		for i, c := range b {
			if c == '\n' && (i == 0 || b[i-1] != '\r') {
				t.Fatalf("bare LF in output %q", b)
			}
			if c == '\r' && (i+1 >= len(b) || b[i+1] != '\n') {
				t.Fatalf("bare CR in output %q", b)
			}
		}
		if res.Smuggling {
			return
		}
		// A "." first line must come from a stuffed ".." line, whatever
		// ended it (a bare CR or LF is normalised, not a terminator).
		if bytes.HasPrefix(b, []byte(".\r\n")) && !bytes.HasPrefix(in, []byte("..\r")) && !bytes.HasPrefix(in, []byte("..\n")) {
			t.Fatalf("unflagged dot line at start: in %q out %q", in, b)
		}
	})
}

// FuzzLineEnd: lineEnd is bytes.IndexAny(b, "\r\n").
func FuzzLineEnd(f *testing.F) {
	for _, s := range []string{"", "abc", "a\r\nb", "a\nb\r", "\r", "\n", "ab\rc\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := lineEnd(b), bytes.IndexAny(b, "\r\n"); got != want {
			t.Fatalf("lineEnd(%q) = %d, want %d", b, got, want)
		}
	})
}
