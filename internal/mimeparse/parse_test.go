package mimeparse

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// testLimits are small, so that the testdata files can show every limit.
var testLimits = Limits{MaxDepth: 10, MaxParts: 20, MaxHeaderSize: 4096, MaxParseSize: 1 << 20}

// render is the text form of a parse the .result files hold.
func render(m *Message) string {
	var b strings.Builder
	for _, f := range m.Header {
		fmt.Fprintf(&b, "header %q: %q\n", f.Name, f.Value)
	}
	for _, p := range m.Parts {
		fmt.Fprintf(&b, "part depth=%d type=%s detected=%s", p.Depth, p.ContentType, p.Detected)
		if p.Disposition != "" {
			fmt.Fprintf(&b, " disposition=%s", p.Disposition)
		}
		if p.Filename != "" {
			fmt.Fprintf(&b, " filename=%q", p.Filename)
		}
		for _, n := range p.AltNames {
			fmt.Fprintf(&b, " alt=%q", n)
		}
		if p.Text {
			b.WriteString(" text")
		}
		if p.HTML {
			b.WriteString(" html")
		}
		fmt.Fprintf(&b, " len=%d\n", len(p.Content))
		c, more := p.Content, ""
		if len(c) > 60 {
			c, more = c[:60], "..."
		}
		fmt.Fprintf(&b, "  content %q%s\n", c, more)
	}
	if m.Malformed != "" {
		fmt.Fprintf(&b, "malformed %q\n", m.Malformed)
	}
	if m.Skipped {
		b.WriteString("skipped\n")
	}
	return b.String()
}

// loadMsg reads a testdata message; the files have LF line endings for
// readability, the gateway hands over CRLF.
func loadMsg(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
}

// TestData parses every testdata/NN-name.msg with testLimits and compares
// the rendering with NN-name.result (MIMEPARSE_UPDATE=1 rewrites them;
// review the diff). Every message, bombs included, must parse in well
// under a second.
func TestData(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.msg")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".msg")
		t.Run(name, func(t *testing.T) {
			data := loadMsg(t, f)
			start := time.Now()
			m, err := Parse(bytes.NewReader(data), int64(len(data)), testLimits)
			if d := time.Since(start); d > time.Second {
				t.Errorf("parse took %v", d)
			}
			if err != nil {
				t.Fatal(err)
			}
			got := render(m)
			resultFile := strings.TrimSuffix(f, ".msg") + ".result"
			if os.Getenv("MIMEPARSE_UPDATE") == "1" {
				if err := os.WriteFile(resultFile, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(resultFile)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// bomb is a multipart nested n deep whose boundaries are never closed.
func bomb(n int) []byte {
	var b bytes.Buffer
	b.WriteString("Subject: bomb\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i-1, i)
	}
	fmt.Fprintf(&b, "--b%d\r\nContent-Type: text/plain\r\n\r\nboom\r\n", n)
	return b.Bytes()
}

// TestDeepBomb: with max_depth at the top of its range (50), a 45-deep
// unclosed bomb parses in milliseconds (enmime alone would take hours:
// it never sees the structure).
func TestDeepBomb(t *testing.T) {
	data := bomb(45)
	start := time.Now()
	m, err := Parse(bytes.NewReader(data), int64(len(data)), Limits{MaxDepth: 50})
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("took %v", d)
	}
	if err != nil {
		t.Fatal(err)
	}
	if m.Malformed != "" || len(m.Parts) != 1 || m.Parts[0].Depth != 46 || string(m.Parts[0].Content) != "boom\r\n" {
		t.Errorf("got:\n%s", render(m))
	}
}

// TestManyUnclosedSiblings: many unclosed nested multiparts side by side.
func TestManyUnclosedSiblings(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("Content-Type: multipart/mixed; boundary=\"top\"\r\n\r\n")
	for i := 0; i < 150; i++ {
		b.WriteString("--top\r\n")
		for j := 1; j <= 9; j++ {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"s%d-%d\"\r\n\r\n--s%d-%d\r\n", i, j, i, j)
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nx\r\n")
	}
	b.WriteString("--top--\r\n")
	data := b.Bytes()
	start := time.Now()
	m, err := Parse(bytes.NewReader(data), int64(len(data)), Limits{MaxDepth: 50, MaxParts: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	if m.Malformed != "" || len(m.Parts) != 150 || m.Parts[149].Depth != 10 {
		t.Errorf("malformed %q, %d parts", m.Malformed, len(m.Parts))
	}
}

func TestSkipped(t *testing.T) {
	data := loadMsg(t, "testdata/04-base64-attachment.msg")
	// By the size the caller gives ...
	m, err := Parse(bytes.NewReader(data), 2<<20, testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Skipped || len(m.Parts) != 0 || m.Malformed != "" {
		t.Errorf("by size: %s", render(m))
	}
	if v, ok := m.Get("subject"); !ok || v != "report" {
		t.Errorf("Get(subject) = %q, %v", v, ok)
	}
	// ... and by what the reader holds when the size was wrong.
	lim := testLimits
	lim.MaxParseSize = 300
	for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data))} {
		m, err = Parse(r, 100, lim)
		if err != nil {
			t.Fatal(err)
		}
		if !m.Skipped || len(m.Parts) != 0 || len(m.Header) != 5 {
			t.Errorf("by content: %s", render(m))
		}
	}
	// A single part larger than its size said.
	data = loadMsg(t, "testdata/01-plain-text.msg")
	lim.MaxParseSize = int64(len(data)) - 5
	if m, err = Parse(bytes.NewReader(data), 10, lim); err != nil || !m.Skipped {
		t.Errorf("single part: %v %s", err, render(m))
	}
}

// TestNotSeekable: a reader that cannot seek is read into memory once.
func TestNotSeekable(t *testing.T) {
	data := loadMsg(t, "testdata/03-nested-multipart.msg")
	want, _ := Parse(bytes.NewReader(data), int64(len(data)), testLimits)
	got, err := Parse(iotest.HalfReader(bytes.NewReader(data)), int64(len(data)), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if render(got) != render(want) || len(got.Parts) != 4 {
		t.Errorf("got:\n%s\nwant:\n%s", render(got), render(want))
	}
}

// TestReadError: read errors are errors, not malformed messages.
func TestReadError(t *testing.T) {
	data := loadMsg(t, "testdata/02-alternative.msg")
	for _, n := range []int{10, 200, len(data) - 10} {
		r := io.MultiReader(bytes.NewReader(data[:n]), iotest.ErrReader(io.ErrUnexpectedEOF))
		if _, err := Parse(r, int64(len(data)), testLimits); err != io.ErrUnexpectedEOF {
			t.Errorf("cut at %d: err %v", n, err)
		}
	}
	// A reader read in place failing on the second pass, part by part
	// (multipart) or whole (single part).
	for _, f := range []string{"testdata/02-alternative.msg", "testdata/01-plain-text.msg"} {
		data := loadMsg(t, f)
		fr := &failSecond{data: data}
		if _, err := Parse(fr, int64(len(data)), testLimits); err != io.ErrClosedPipe {
			t.Errorf("%s, second pass: err %v", f, err)
		}
	}
}

// failSecond reads data once, then fails after a rewind, and in ReadAt.
type failSecond struct {
	data   []byte
	off    int
	rewind bool
}

func (f *failSecond) ReadAt([]byte, int64) (int, error) { return 0, io.ErrClosedPipe }

func (f *failSecond) Read(p []byte) (int, error) {
	if f.rewind {
		return 0, io.ErrClosedPipe
	}
	if f.off >= len(f.data) {
		return 0, io.EOF
	}
	n := copy(p, f.data[f.off:])
	f.off += n
	return n, nil
}

func (f *failSecond) Seek(off int64, whence int) (int64, error) {
	if whence == io.SeekStart {
		f.rewind = true
		f.off = int(off)
	}
	return int64(f.off), nil
}

// TestStructure covers the pre-scan's reading of boundaries, where it
// must agree with enmime.
func TestStructure(t *testing.T) {
	for _, c := range []struct {
		name, msg string
		parts     int
		malformed string
	}{
		{"a boundary must start its line",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\npreamble --b \r\nContent-Type: text/plain\r\n\r\none\r\n x--b\r\n--b--\r\n", 0, ""},
		{"text after a boundary makes it content",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b and --b--\r\n--bx\r\n--b--x\r\n---b\r\n--b\r\n\r\ntwo\r\n", 2, ""},
		{"white space after a boundary is transport padding",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \t\r\n\r\none\r\n--b\t\r\n\r\ntwo\r\n--b-- \r\n--b\r\nepilogue\r\n", 2, ""},
		{"a boundary line longer than its head",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b" + strings.Repeat(" ", 300) + "x\r\n--b" + strings.Repeat(" ", 300) + "\r\n\r\ntwo\r\n--b--\r\n", 2, ""},
		{"outer boundary ends inner parts",
			"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nin\r\n--o\r\n\r\nout\r\n--o--\r\n", 2, ""},
		{"text part with a boundary is not a multipart",
			"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain; boundary=i\r\n\r\n--i\r\n\r\ntext\r\n--o--\r\n", 1, ""},
		{"nor is any other part that is not multipart/*",
			"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: application/x-msdownload; boundary=i; name=a.exe\r\n\r\nMZ\r\n--o--\r\n", 1, ""},
		{"folded, unindented Content-Type",
			"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed;\r\nboundary=i\r\n\r\n--i\r\n\r\nx\r\n--i--\r\n--o--\r\n", 1, ""},
		{"multipart without a boundary is one part",
			"Content-Type: multipart/mixed\r\n\r\n--\r\nhello\r\n", 1, ""},
		{"boundary too long",
			"Content-Type: multipart/mixed; boundary=\"" + strings.Repeat("b", 201) + "\"\r\n\r\n", 0, "multipart boundary longer than 200 characters"},
		{"bare CR is content",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\na\rb\r\n--b--\r\n", 1, ""},
		{"part header too large",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nX: " + strings.Repeat("x", 5000) + "\r\n\r\n--b--\r\n", 0, "MIME part header larger than 4096 bytes"},
		{"long preamble line",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + strings.Repeat("x", 70<<10) + "\r\n--b\r\n\r\nx\r\n--b--\r\n", 1, ""},
		{"header cut short by a boundary",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf; name=a.pdf\r\n--b\r\nContent-Type: multipart/mixed; boundary=c\r\n--b--\r\n", 1, ""},
		{"long body lines are fine",
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + strings.Repeat("x", 70<<10) + "\r\n--b--\r\n", 1, ""},
		{"damaged base64",
			"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nTVq=QAAM\r\n", 1, ""},
		{"header only",
			"Subject: nothing else", 1, ""},
		{"empty", "", 1, ""},
	} {
		m, err := Parse(strings.NewReader(c.msg), int64(len(c.msg)), testLimits)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(m.Parts) != c.parts || m.Malformed != c.malformed {
			t.Errorf("%s: got\n%s", c.name, render(m))
		}
	}
}

func TestDetect(t *testing.T) {
	for in, want := range map[string]string{
		"MZ\x90\x00":        "application/x-msdownload",
		"\x7fELF\x02\x01":   "application/x-executable",
		"PK\x03\x04\x14":    "application/zip",
		"PK\x05\x06":        "application/zip",
		"%PDF-1.4\n":        "application/pdf",
		"hello world":       "text/plain",
		"<html><body>":      "text/html",
		"\x00\x01\x02\x03":  "application/octet-stream",
		"GIF89a\x01\x00":    "image/gif",
		"":                  "text/plain",
		"\xff\xd8\xff\xe0x": "image/jpeg",
	} {
		if got := Detect([]byte(in)); got != want {
			t.Errorf("Detect(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAttachmentContent parses every testdata message three ways: with
// attachments sniffed or skipped the parts are the same as decoded whole,
// text parts and attached messages still decoded; only the content of
// the other parts of a multipart message is left out (and, skipped, their
// detected type), except for a zip archive's when sniffing.
func TestAttachmentContent(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.msg")
	left, zips := 0, 0
	for _, f := range files {
		data := loadMsg(t, f)
		full, err := Parse(bytes.NewReader(data), int64(len(data)), testLimits)
		if err != nil {
			t.Fatal(err)
		}
		if full.Malformed != "" || full.Skipped {
			continue // what a damaged part does to the parts is TestData's
		}
		for _, mode := range []AttachmentContent{SniffAttachments, SkipAttachments} {
			lim := testLimits
			lim.Attachments = mode
			light, err := Parse(bytes.NewReader(data), int64(len(data)), lim)
			if err != nil {
				t.Fatal(err)
			}
			if light.Malformed != "" || len(light.Parts) != len(full.Parts) {
				t.Errorf("%s mode %d: %d parts, malformed %q; want %d parts", f, mode, len(light.Parts), light.Malformed, len(full.Parts))
				continue
			}
			multipart := len(full.Parts) > 1 || full.Parts[0].Depth > 0
			for i, want := range full.Parts {
				// A part that may be text (a text/* attachment) is
				// decoded whole rather than looked at twice.
				attachment := !want.Text && want.ContentType != "message/rfc822" && multipart
				switch {
				case attachment && mode == SniffAttachments && want.Detected == "application/zip":
					zips++ // decoded whole: its files are looked into
				case attachment && light.Parts[i].Content == nil && mode == SkipAttachments:
					want.Content, want.Detected = nil, ""
					left++
				case attachment && light.Parts[i].Content == nil:
					want.Content = nil
					left++
				}
				got := render(&Message{Parts: []Part{light.Parts[i]}})
				if w := render(&Message{Parts: []Part{want}}); got != w {
					t.Errorf("%s mode %d part %d:\n%s\nwant\n%s", f, mode, i, got, w)
				}
			}
		}
	}
	if left == 0 || zips == 0 {
		t.Errorf("testdata lacks an attachment (%d) or a zip (%d) to show the difference", left, zips)
	}
}

// The type of an attachment is detected from the start of its encoded
// body, however it is cut: after a line, or in a body of one long line.
func TestEncodedHead(t *testing.T) {
	exe := append([]byte("MZ\x90\x00"), bytes.Repeat([]byte{0xcc}, 5000)...)
	enc := base64.StdEncoding.EncodeToString(exe)
	var wrapped strings.Builder
	for s := enc; len(s) > 0; s = s[min(76, len(s)):] {
		wrapped.WriteString(s[:min(76, len(s))] + "\r\n")
	}
	for name, body := range map[string]string{"lines": wrapped.String(), "one line": enc + "\r\n"} {
		msg := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n" +
			"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body + "--b--\r\n"
		m, err := Parse(strings.NewReader(msg), int64(len(msg)), Limits{Attachments: SniffAttachments})
		if err != nil || len(m.Parts) != 2 {
			t.Fatalf("%s: %v, %d parts", name, err, len(m.Parts))
		}
		if p := m.Parts[1]; p.Detected != "application/x-msdownload" || p.Content != nil {
			t.Errorf("%s: detected %q, %d bytes of content", name, p.Detected, len(p.Content))
		}
	}
}

func TestContainsFold(t *testing.T) {
	for in, want := range map[string]bool{
		"Content-Type: MultiPart/Mixed; boundary=x": true,
		"content-type: multipart/":                  true,
		"Content-Type: text/plain":                  false,
		"X: multi\r\n part/mixed":                   false,
		"multipart":                                 false,
		"":                                          false,
	} {
		if got := containsFold([]byte(in), "multipart/"); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}
