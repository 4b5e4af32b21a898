package mimeparse

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzLimits are small, so that the fuzzer reaches every limit.
var fuzzLimits = Limits{MaxDepth: 4, MaxParts: 25, MaxHeaderSize: 2048, MaxParseSize: 64 << 10}

// FuzzParse: Parse never panics, never fails on a reader that cannot
// fail, returns quickly, and keeps its limits.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.msg")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n")))
	}
	f.Add(bomb(6))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\nx --a \r\n--a\r\nContent-Type: multipart/x; boundary=b\r\n\r\n--b\r\n\r\n--a--\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		m, err := Parse(bytes.NewReader(data), int64(len(data)), fuzzLimits)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v", d)
		}
		if err != nil {
			t.Fatalf("error on a bytes.Reader: %v", err)
		}
		if len(m.Parts) > fuzzLimits.MaxParts {
			t.Fatalf("%d parts", len(m.Parts))
		}
		for _, p := range m.Parts {
			if p.Depth > fuzzLimits.MaxDepth {
				t.Fatalf("part at depth %d", p.Depth)
			}
		}
		// Reading attachments for their header only changes no text
		// part of a message that parses cleanly.
		for _, mode := range []AttachmentContent{SniffAttachments, SkipAttachments} {
			lim := fuzzLimits
			lim.Attachments = mode
			light, err := Parse(bytes.NewReader(data), int64(len(data)), lim)
			if err != nil {
				t.Fatalf("error on a bytes.Reader (attachments mode %d): %v", mode, err)
			}
			if m.Malformed != "" || m.Skipped {
				return
			}
			if len(light.Parts) != len(m.Parts) {
				t.Fatalf("%d parts with attachments mode %d, %d decoding all", len(light.Parts), mode, len(m.Parts))
			}
			for i, p := range m.Parts {
				if p.Text && !bytes.Equal(light.Parts[i].Content, p.Content) {
					t.Fatalf("text part %d differs with attachments mode %d", i, mode)
				}
			}
		}
	})
}
