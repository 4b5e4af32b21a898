// Package mimeparse parses a message's MIME structure once per message
// for every content filter (SURBL, attachments, content rules). A cheap
// linear scan finds the multipart structure (RFC 2046 boundaries) and
// bounds nesting depth, part count and header size; enmime then decodes
// each leaf part on its own (transfer encoding, charset, file names) and
// never sees the structure: its multipart reader takes exponential time
// on deeply nested unclosed multiparts.
package mimeparse

// Limits bound what is parsed (filters.mime).
type Limits struct {
	MaxDepth      int   // deepest multipart nesting
	MaxParts      int   // most parts in all
	MaxHeaderSize int64 // largest header section (message or part)
	MaxParseSize  int64 // larger messages are not parsed (Message.Skipped)
	// Attachments says how much of the parts of a multipart message
	// that are neither text (Part.Text) nor attached messages is
	// decoded: all of it (the default), enough to detect its type, or
	// none. Decoding a 200 KB attachment costs more than the rest of
	// the parse, and most filters read text parts or the raw message.
	Attachments AttachmentContent
}

// AttachmentContent is how much of an attachment the parse decodes.
type AttachmentContent int

const (
	// DecodeAttachments: all of it, in Part.Content.
	DecodeAttachments AttachmentContent = iota
	// SniffAttachments: its first bytes, for Part.Detected; Content is
	// nil, except for a zip archive (whose files are looked into), which
	// is decoded whole. Damage to the encoding past those first bytes
	// goes unnoticed.
	SniffAttachments
	// SkipAttachments: its header only; Content is nil, Detected empty.
	SkipAttachments
	// (With both, a part whose header names a text, message or multipart
	// type, a text/csv attachment say, is decoded whole all the same.)
)

// Message is the parsed form content filters read. It is plain data, so
// filter tests can build one directly.
type Message struct {
	// Header are the message's top-level header fields in order,
	// unfolded (CRLF+WSP runs become one space), values not decoded.
	Header []Field
	// Parts are the leaf parts in document order (depth first), with
	// their transfer encoding removed. A single-part message has one.
	// The parts of an attached message (message/rfc822) follow its own
	// part, one level deeper.
	Parts []Part
	// Malformed says why the message could not be parsed fully ("" if
	// it was): too deep, too many parts, a header too large, no empty
	// line after the header, or a part enmime could not decode. Parts
	// then holds what could be read safely (nothing when a limit was
	// exceeded). The reason never quotes the message.
	Malformed string
	// Skipped says the message was larger than MaxParseSize and not
	// parsed at all (Parts is empty; Header is still set).
	Skipped bool
}

// Field is one header field.
type Field struct {
	Name  string // as written, e.g. "Content-Type"
	Value string // unfolded, leading/trailing white space trimmed, not decoded
}

// Part is one leaf MIME part.
type Part struct {
	// ContentType is the declared media type, lower case, without
	// parameters ("text/plain" when none is declared).
	ContentType string
	// Detected is the media type sniffed from the content
	// (net/http.DetectContentType plus executable/archive magic
	// numbers), e.g. "application/x-msdownload", "application/zip".
	Detected string
	// Filename from Content-Disposition's filename or Content-Type's
	// name, RFC 2047/2231-decoded; "" if none.
	Filename string
	// AltNames are the other spellings of the file name in the part's
	// header: a Content-Type name that differs from the
	// Content-Disposition filename, an RFC 2231 name in a charset the
	// strict decoder drops, a second Content-Disposition field. Mail
	// clients differ in which they show and save, so a filter judging
	// names must judge them all.
	AltNames []string
	// Disposition is "attachment", "inline" or "".
	Disposition string
	// Text is true for text/plain and text/html parts that are not
	// attachments; their Content is converted to UTF-8.
	Text bool
	// HTML is true for text/html parts.
	HTML bool
	// Content is the decoded body of the part.
	Content []byte
	// Depth is the multipart nesting depth (0 for a single-part message).
	Depth int
}

// Get returns the first value of the named top-level header field
// (case-insensitive) and whether it was present.
func (m *Message) Get(name string) (string, bool) {
	for _, f := range m.Header {
		if equalFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
