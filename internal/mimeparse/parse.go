package mimeparse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/jhillyerd/enmime/v2"
)

// Default limits, used for the zero fields of Limits (the same as
// filters.mime's defaults).
const (
	DefaultMaxDepth      = 10
	DefaultMaxParts      = 200
	DefaultMaxHeaderSize = 256 << 10
	DefaultMaxParseSize  = 25 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxParts <= 0 {
		l.MaxParts = DefaultMaxParts
	}
	if l.MaxHeaderSize <= 0 {
		l.MaxHeaderSize = DefaultMaxHeaderSize
	}
	if l.MaxParseSize <= 0 {
		l.MaxParseSize = DefaultMaxParseSize
	}
	return l
}

// Parse reads a message (CRLF line endings, as the gateway holds it) of
// size bytes and returns its parsed form. Zero fields of lim take the
// defaults. The error is only ever a read error of r: a message that
// cannot be parsed is reported in Message.Malformed.
//
// A reader that is an io.ReaderAt and an io.Seeker (the spool's readers
// are) is read in place, twice: once by the structure scan, then part by
// part; any other reader is first read into memory, up to
// lim.MaxParseSize.
func Parse(r io.Reader, size int64, lim Limits) (*Message, error) {
	lim = lim.withDefaults()
	if size > lim.MaxParseSize {
		return headerOnly(r, lim)
	}
	ra, ok := r.(readAtSeeker)
	if !ok {
		data, err := io.ReadAll(io.LimitReader(r, lim.MaxParseSize+1))
		if err != nil {
			return nil, err
		}
		if int64(len(data)) > lim.MaxParseSize {
			return headerOnly(bytes.NewReader(data), lim)
		}
		ra = bytes.NewReader(data)
	}
	start, err := ra.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	m := &Message{}
	lr := newLineReader(ra)
	defer lr.release()
	top, err := readTopHeader(lr, lim.MaxHeaderSize)
	if err != nil {
		return nil, err
	}
	m.Header = top.fields
	if top.tooBig {
		m.Malformed = fmt.Sprintf("header section larger than %d bytes", lim.MaxHeaderSize)
		return m, nil
	}
	at := func(off, n int64) io.Reader { return io.NewSectionReader(ra, start+off, n) }
	var w walker
	w.lim = lim
	if b, digest := multipartType(top.raw); b != "" {
		res, err := scanBody(lr, top.first, top.size, b, digest, lim, lim.MaxParseSize)
		if err != nil {
			return nil, err
		}
		if res.tooBig {
			m.Skipped = true
			return m, nil
		}
		if res.bad != "" {
			m.Malformed = res.bad
			return m, nil
		}
		for _, l := range res.leaves {
			w.inDigest = l.inDigest
			hdr := func() io.Reader {
				h := at(l.hdrStart, l.hdrEnd-l.hdrStart)
				if l.noSeparator {
					h = io.MultiReader(h, strings.NewReader("\r\n"))
				}
				return h
			}
			if lim.Attachments != DecodeAttachments {
				done, err := w.attachment(hdr(), at(l.bodyStart, l.bodyEnd-l.bodyStart), l.depth)
				if err != nil {
					return nil, err
				}
				if done {
					continue
				}
			}
			if err := w.decode(io.MultiReader(hdr(), at(l.bodyStart, l.bodyEnd-l.bodyStart)), l.depth); err != nil {
				return nil, err
			}
		}
	} else {
		// A single part: the message as it is (with the empty line after
		// the header that it lacked, if it did: the body is read as the
		// servers behind us will read it).
		if _, err := ra.Seek(start, io.SeekStart); err != nil {
			return nil, err
		}
		limited := &io.LimitedReader{R: ra, N: lim.MaxParseSize + 1}
		var in io.Reader = limited
		if top.noSeparator {
			in = io.MultiReader(io.LimitReader(limited, top.size), strings.NewReader("\r\n"), limited)
		}
		if err := w.decode(in, 0); err != nil {
			return nil, err
		}
		if limited.N <= 0 {
			// Larger than its size said.
			return &Message{Header: m.Header, Skipped: true}, nil
		}
	}
	m.Parts = w.parts
	switch {
	case w.bad != "":
		m.Malformed = w.bad
	case top.noSeparator:
		m.Malformed = "no empty line between header and body"
	}
	return m, nil
}

// readAtSeeker is what Parse reads in place.
type readAtSeeker interface {
	io.ReaderAt
	io.ReadSeeker
}

// readParts runs enmime on a single part (the structure scan made sure
// it is one): a multipart without a boundary is read as a single part
// (enmime would otherwise split it on any "--" line), and text is
// converted from its declared charset rather than a guessed one. A
// panic in enmime is a part it cannot read, not a crash.
func readParts(r io.Reader) (root *enmime.Part, err error) {
	defer func() {
		if p := recover(); p != nil {
			root, err = nil, fmt.Errorf("enmime panicked: %v", p)
		}
	}()
	return enmime.NewParser(
		enmime.SkipMalformedParts(true),
		enmime.MultipartWOBoundaryAsSinglePart(true),
		enmime.DisableCharacterDetection(true),
		enmime.MaxStoredPartErrors(10),
	).ReadParts(r)
}

// headerOnly is the parse of a message too large to parse: its header.
func headerOnly(r io.Reader, lim Limits) (*Message, error) {
	lr := newLineReader(r)
	defer lr.release()
	top, err := readTopHeader(lr, lim.MaxHeaderSize)
	if err != nil {
		return nil, err
	}
	m := &Message{Header: top.fields, Skipped: true}
	if top.tooBig {
		m.Malformed = fmt.Sprintf("header section larger than %d bytes", lim.MaxHeaderSize)
	}
	return m, nil
}

func newLineReader(r io.Reader) *lineReader {
	br := lineBufs.Get().(*bufio.Reader)
	br.Reset(r)
	return &lineReader{br: br}
}

// release returns the reader's buffer for the next message: a 32 KB
// allocation per message otherwise. Nothing read may be used after it
// (lines are copied out of it: textLine.head is lineReader.buf).
func (l *lineReader) release() {
	l.br.Reset(nil)
	lineBufs.Put(l.br)
	l.br = nil
}

var lineBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// topHeader is the message's own header section.
type topHeader struct {
	fields []Field
	raw    []byte // the section as read, without the empty line
	size   int64  // its length
	tooBig bool
	// noSeparator: the header ended at a line that is not a header
	// field rather than at an empty line; first is that line, the
	// first of the body.
	noSeparator bool
	first       *textLine
}

// readTopHeader reads the header section: fields and their continuation
// lines up to the empty line. A line that is neither ends the header
// too, as it does for the MTAs behind the gateway (and for the header
// filter of pipeline.DropHeaderFields).
func readTopHeader(lr *lineReader, limit int64) (*topHeader, error) {
	h := &topHeader{}
	for {
		room := limit - h.size
		ln, err := lr.next(int(min(max(room, lineHead), 1<<30)) + 1)
		head, n := ln.head, ln.n
		if n == 0 {
			if err == io.EOF {
				return h, nil
			}
			return nil, err
		}
		if isEmptyLine(head) {
			return h, nil
		}
		cont := head[0] == ' ' || head[0] == '\t'
		name, value, isField := splitField(head)
		if !cont && !isField {
			h.noSeparator = true
			ln.head = bytes.Clone(head)
			h.first = &ln
			return h, nil
		}
		if int64(n) > room {
			h.tooBig = true
			return h, nil
		}
		h.size += int64(n)
		h.raw = append(h.raw, head...)
		switch {
		case isField:
			h.fields = append(h.fields, Field{Name: name, Value: value})
		case len(h.fields) > 0:
			f := &h.fields[len(h.fields)-1]
			if v := strings.TrimSpace(string(head)); v != "" {
				if f.Value != "" {
					f.Value += " "
				}
				f.Value += v
			}
		}
		if err == io.EOF {
			return h, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// splitField splits a header field line "Name: value". A name is one or
// more printable ASCII characters other than the colon (RFC 5322), which
// may be followed by white space before the colon (the obsolete syntax).
func splitField(line []byte) (name, value string, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", "", false
	}
	n := bytes.TrimRight(line[:i], " \t")
	if len(n) == 0 {
		return "", "", false
	}
	for _, c := range n {
		if c <= ' ' || c > '~' {
			return "", "", false
		}
	}
	return string(n), strings.TrimSpace(string(line[i+1:])), true
}

// errReader remembers the first read error that is not io.EOF, to tell
// read errors from parse errors in what enmime returns.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

// walker collects the leaf parts enmime decodes.
type walker struct {
	lim   Limits
	parts []Part
	bad   string
	// inDigest: the leaf being decoded is a part of a multipart/digest.
	inDigest bool
}

// decode has enmime decode one leaf part (header and body) at depth.
func (w *walker) decode(r io.Reader, depth int) error {
	er := &errReader{r: r}
	root, err := readParts(er)
	if er.err != nil {
		return er.err
	}
	if err != nil || root == nil {
		w.fail("unreadable MIME part")
		return nil
	}
	w.walk(root, depth)
	return nil
}

// attachment adds the leaf part with header hdr and body body without
// decoding all of its content (Limits.Attachments), unless the part is
// text, an attached message or (when sniffing) a zip archive, whose
// content is read, or its header cannot be read alone: then it reports
// false and adds nothing.
func (w *walker) attachment(hdr, body io.Reader, depth int) (bool, error) {
	h, err := io.ReadAll(hdr)
	if err != nil {
		return false, err
	}
	if containsFold(h, "text/") || containsFold(h, "message/") || containsFold(h, "multipart/") {
		// Most likely a part to decode whole: spare enmime a first
		// reading of its header (a wrong guess costs time only).
		return false, nil
	}
	var in io.Reader = bytes.NewReader(h)
	if w.lim.Attachments == SniffAttachments {
		head, err := encodedHead(body)
		if err != nil {
			return false, err
		}
		in = io.MultiReader(in, bytes.NewReader(head))
	}
	er := &errReader{r: in}
	root, err := readParts(er)
	if er.err != nil {
		return false, er.err
	}
	if err != nil || root == nil || root.FirstChild != nil {
		return false, nil
	}
	p := leaf(root, depth, w.inDigest)
	if p.Text || p.ContentType == "message/rfc822" || strings.HasPrefix(p.ContentType, "multipart/") ||
		p.Detected == "application/zip" && w.lim.Attachments == SniffAttachments {
		return false, nil
	}
	if w.lim.Attachments == SkipAttachments {
		p.Detected = ""
	}
	p.Content = nil
	w.parts = append(w.parts, p)
	return true, nil
}

// sniffEncoded is how much of an attachment's encoded body is read to
// detect its type: base64 of well over SniffLen bytes.
const sniffEncoded = 2 << 10

// encodedHead returns the first bytes of an encoded body, enough to
// decode SniffLen bytes: cut after a line break (encoders break lines
// every 76 characters), or, in a body without one, at a multiple of four
// (a whole number of base64 quanta).
func encodedHead(body io.Reader) ([]byte, error) {
	buf := make([]byte, sniffEncoded)
	n, err := io.ReadFull(body, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	head := buf[:n]
	if n < len(buf) {
		return head, nil // the whole body
	}
	if i := bytes.LastIndexByte(head, '\n'); i >= 0 {
		return head[:i+1], nil
	}
	return head[:len(head)/4*4], nil
}

func (w *walker) walk(p *enmime.Part, depth int) {
	for _, e := range p.Errors {
		// Only what lost content makes the message malformed; enmime
		// also reports mere blemishes (bad header lines, charsets).
		if e.Severe && (e.Name == enmime.ErrorMalformedBase64 || e.Name == enmime.ErrorMalformedChildPart) {
			w.fail("damaged part (" + e.Name + ")")
		}
	}
	if p.FirstChild != nil {
		for c := p.FirstChild; c != nil; c = c.NextSibling {
			w.walk(c, depth+1)
		}
		return
	}
	if p.Boundary != "" && len(p.Content) == 0 && strings.HasPrefix(p.ContentType, "multipart/") {
		return // an empty multipart
	}
	w.parts = append(w.parts, leaf(p, depth, w.inDigest && p.Parent == nil))
	if last := &w.parts[len(w.parts)-1]; last.ContentType == "message/rfc822" {
		w.attachedMessage(last.Content, depth)
	}
}

// attachedMessage adds the parts of a message attached to this one
// (forwarded as message/rfc822), within what is left of the limits: an
// executable in an attached message is as much an attachment as one in
// the message itself.
func (w *walker) attachedMessage(content []byte, depth int) {
	lim := w.lim
	lim.MaxDepth -= depth + 1
	lim.MaxParts -= len(w.parts)
	switch {
	case lim.MaxDepth < 1:
		w.fail(fmt.Sprintf("attached messages nested deeper than %d levels", w.lim.MaxDepth))
		return
	case lim.MaxParts < 1:
		w.fail(fmt.Sprintf("more than %d MIME parts", w.lim.MaxParts))
		return
	}
	sub, err := Parse(bytes.NewReader(content), int64(len(content)), lim)
	if err != nil {
		return // a bytes.Reader does not fail
	}
	for _, p := range sub.Parts {
		p.Depth += depth + 1
		w.parts = append(w.parts, p)
	}
	if sub.Malformed != "" {
		w.fail("attached message: " + sub.Malformed)
	}
}

// fail notes the first reason the message is malformed.
func (w *walker) fail(reason string) {
	if w.bad == "" {
		w.bad = reason
	}
}

// leaf converts one of enmime's leaf parts.
func leaf(p *enmime.Part, depth int, inDigest bool) Part {
	ct := strings.ToLower(p.ContentType)
	switch {
	case inDigest && p.Header.Get("Content-Type") == "":
		// RFC 2046 §5.1.5 (enmime would say text/plain): a message
		// hidden in a digest is read as the message it is.
		ct = "message/rfc822"
	case ct == "":
		ct = "text/plain"
	}
	disp := strings.ToLower(p.Disposition)
	if disp != "attachment" && disp != "inline" {
		disp = ""
	}
	name := p.FileName
	var alt []string
	for _, n := range fileNames(p.Header) {
		switch {
		case n == "" || n == name || slices.Contains(alt, n):
		case name == "":
			name = n
		default:
			alt = append(alt, n)
		}
	}
	return Part{
		ContentType: ct,
		Detected:    Detect(p.Content),
		Filename:    name,
		AltNames:    alt,
		Disposition: disp,
		Text:        (ct == "text/plain" || ct == "text/html") && disp != "attachment",
		HTML:        ct == "text/html",
		Content:     p.Content,
		Depth:       depth,
	}
}
