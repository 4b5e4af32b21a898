package mimeparse

import (
	"bytes"
	"net/http"
	"strings"
)

// SniffLen is how many leading bytes Detect looks at.
const SniffLen = 512

// Detect returns the media type of content judged from its first bytes,
// without parameters: net/http.DetectContentType (the WHATWG sniffing
// rules), refined with the magic numbers of what mail filters bar but the
// web rules do not name: Windows executables (MZ), ELF executables and
// zip archives (which also covers jar, docx, ...).
func Detect(content []byte) string {
	if len(content) > SniffLen {
		content = content[:SniffLen]
	}
	switch {
	case bytes.HasPrefix(content, []byte("MZ")):
		return "application/x-msdownload"
	case bytes.HasPrefix(content, []byte("\x7fELF")):
		return "application/x-executable"
	case bytes.HasPrefix(content, []byte("PK\x03\x04")),
		bytes.HasPrefix(content, []byte("PK\x05\x06")), // empty archive
		bytes.HasPrefix(content, []byte("PK\x07\x08")): // spanned archive
		return "application/zip"
	}
	t := http.DetectContentType(content)
	if i := strings.IndexByte(t, ';'); i >= 0 {
		t = t[:i]
	}
	return strings.TrimSpace(t)
}
