package mimeparse

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/jhillyerd/enmime/v2"
	"github.com/jhillyerd/enmime/v2/mediatype"
)

// The structure scan walks a multipart message once, line by line, and
// finds its leaf parts by the rules of RFC 2046 §5.1: a boundary line is
// "--boundary" at the start of a line, followed by nothing but white
// space ("--boundary--" for the last one), and a boundary of an
// enclosing multipart ends every part inside it. It holds at most one
// header section and the head of one line, and it stops at the first
// limit exceeded (depth, parts, header size), so nothing after it does
// unbounded work.
//
// enmime then decodes each leaf on its own, as a single-part message,
// and never sees the structure: its own multipart reader takes time
// exponential in the depth of unclosed nested multiparts, and finds
// boundaries where mail clients do not (anywhere in the first 4 KiB of a
// part, not only at the start of a line).

const (
	// maxBoundary is the longest boundary accepted (RFC 2046: 70).
	maxBoundary = 200
	// lineHead is how much of a body line is kept: enough to compare it
	// with any boundary.
	lineHead = maxBoundary + 8
)

// leafSpan locates a leaf part in the message (offsets from its start).
type leafSpan struct {
	hdrStart, hdrEnd int64 // the header section, with its empty line if any
	// noSeparator: the part's header ended at a boundary, without an
	// empty line (the part has no body).
	noSeparator        bool
	bodyStart, bodyEnd int64
	depth              int
	// inDigest: the part is one of a multipart/digest, so a message
	// when it declares no type.
	inDigest bool
}

// scanEntry is an open multipart.
type scanEntry struct {
	delim  []byte // "--boundary"
	digest bool   // multipart/digest
}

type scanMode int

const (
	inPreamble   scanMode = iota // before a multipart's first part
	inPartHeader                 // a part's header section
	inBody                       // a leaf part's body
	inIgnored                    // a container's body after its end (epilogue)
)

// scanner is the structure scan's state.
type scanner struct {
	lim   Limits
	stack []scanEntry
	mode  scanMode
	hdr   []byte // the part header section being read
	cur   leafSpan
	parts int
	// prevEOL is the length of the previous line's line ending: the
	// line ending before a boundary belongs to the boundary.
	prevEOL int
	leaves  []leafSpan
	bad     string // why the message is malformed ("" while it is not)
	done    bool   // the outermost multipart is closed: the rest is epilogue
}

// multipartType returns the boundary of a header section if its body is
// a multipart: a multipart/* type with a boundary (a part of another type
// with a boundary parameter is a leaf, as mail clients read it); and
// whether it is a multipart/digest, whose parts are messages unless they
// say otherwise (RFC 2046 §5.1.5). hdr is the raw header section.
func multipartType(hdr []byte) (boundary string, digest bool) {
	if !containsFold(hdr, "multipart/") {
		// Most messages: no multipart type to find, nothing to parse.
		// (An unfolded header cannot make the word: unfolding keeps
		// the white space.)
		return "", false
	}
	// The reader and media type parser enmime uses, so that both agree on
	// which Content-Type field counts and how it is unfolded: a part this
	// scan calls a leaf is never a multipart for enmime.
	h, err := enmime.ReadHeader(bufio.NewReader(io.MultiReader(bytes.NewReader(hdr), strings.NewReader("\r\n\r\n"))), nopCollector{})
	if err != nil {
		return "", false
	}
	ctype := h.Get("Content-Type")
	if ctype == "" {
		return "", false
	}
	mtype, params, _, err := mediatype.Parse(ctype)
	if err != nil || !strings.HasPrefix(mtype, "multipart/") {
		return "", false
	}
	return params["boundary"], mtype == "multipart/digest"
}

type nopCollector struct{}

func (nopCollector) AddError(string, string, ...any)   {}
func (nopCollector) AddWarning(string, string, ...any) {}

// push opens a multipart.
func (s *scanner) push(boundary string, digest bool) {
	if len(s.stack)+1 > s.lim.MaxDepth {
		s.bad = fmt.Sprintf("multipart nesting deeper than %d levels", s.lim.MaxDepth)
		return
	}
	if len(boundary) > maxBoundary {
		s.bad = fmt.Sprintf("multipart boundary longer than %d characters", maxBoundary)
		return
	}
	s.stack = append(s.stack, scanEntry{delim: []byte("--" + boundary), digest: digest})
	s.mode = inPreamble
}

// boundary tells whether line is a boundary line of e: 1 a delimiter,
// 2 the closing delimiter, 0 neither.
func (e *scanEntry) boundary(line []byte) int {
	if !bytes.HasPrefix(line, e.delim) {
		return 0
	}
	rest, kind := line[len(e.delim):], 1
	if bytes.HasPrefix(rest, []byte("--")) {
		rest, kind = rest[2:], 2
	}
	rest = bytes.TrimLeft(rest, " \t")
	if len(rest) == 0 || rest[0] == '\n' || rest[0] == '\r' && (len(rest) == 1 || rest[1] == '\n') {
		return kind
	}
	return 0
}

// endPart ends the part being read at a boundary line starting at off.
func (s *scanner) endPart(off int64) {
	switch s.mode {
	case inPartHeader:
		// A header cut short: a leaf with no body, or a multipart with
		// nothing in it.
		if b, _ := multipartType(s.hdr); b == "" {
			s.cur.hdrEnd, s.cur.noSeparator = off, true
			s.cur.bodyStart, s.cur.bodyEnd = off, off
			s.leaves = append(s.leaves, s.cur)
		}
	case inBody:
		s.cur.bodyEnd = max(s.cur.bodyStart, off-int64(s.prevEOL))
		s.leaves = append(s.leaves, s.cur)
	}
}

// line handles one line starting at offset off.
func (s *scanner) line(ln *textLine, off int64) {
	head, n := ln.head, ln.n
	for i := range s.stack {
		kind := s.stack[i].boundary(head)
		if kind == 0 || ln.dirty {
			continue
		}
		s.endPart(off)
		if kind == 2 {
			s.stack = s.stack[:i]
			s.mode = inIgnored
			s.done = i == 0
			return
		}
		s.stack = s.stack[:i+1]
		s.parts++
		if s.parts > s.lim.MaxParts {
			s.bad = fmt.Sprintf("more than %d MIME parts", s.lim.MaxParts)
			return
		}
		s.mode = inPartHeader
		s.hdr = s.hdr[:0]
		s.cur = leafSpan{hdrStart: off + int64(n), depth: len(s.stack), inDigest: s.stack[i].digest}
		return
	}
	if s.mode != inPartHeader {
		return
	}
	if isEmptyLine(head) {
		s.mode = inBody
		s.cur.hdrEnd = off + int64(n)
		s.cur.bodyStart = s.cur.hdrEnd
		if b, digest := multipartType(s.hdr); b != "" {
			s.push(b, digest)
		}
		return
	}
	if int64(len(s.hdr)+n) > s.lim.MaxHeaderSize || n > len(head) {
		s.bad = fmt.Sprintf("MIME part header larger than %d bytes", s.lim.MaxHeaderSize)
		return
	}
	s.hdr = append(s.hdr, head...)
}

// headMax is how much of the next line the scanner needs.
func (s *scanner) headMax() int {
	if s.mode == inPartHeader {
		// One byte more than the budget, so that an overflow shows, and
		// never less than a boundary line needs.
		return max(int(min(s.lim.MaxHeaderSize-int64(len(s.hdr)), 1<<30))+1, lineHead)
	}
	return lineHead
}

func isEmptyLine(b []byte) bool {
	return len(b) == 1 && b[0] == '\n' || len(b) == 2 && b[0] == '\r' && b[1] == '\n'
}

// lineReader reads lines of any length, keeping only their heads.
type lineReader struct {
	br   *bufio.Reader
	buf  []byte
	read int64 // bytes consumed
}

// textLine is one line as lineReader returns it.
type textLine struct {
	head []byte // the first bytes of the line (with its line ending if short)
	n    int    // the line's length
	nl   bool   // it ended with a line feed (else the input ended)
	crlf bool   // it ended with CRLF
	// dirty: what was cut off the head holds more than white space
	// and the line ending.
	dirty bool
}

// eol is the length of the line's line ending.
func (l *textLine) eol() int {
	switch {
	case l.crlf:
		return 2
	case l.nl:
		return 1
	}
	return 0
}

// next reads a line, keeping its first keep bytes. At the end of the
// input it returns a line of length 0 and io.EOF.
func (l *lineReader) next(keep int) (textLine, error) {
	l.buf = l.buf[:0]
	var ln textLine
	prevCR := false
	for {
		chunk, e := l.br.ReadSlice('\n')
		ln.n += len(chunk)
		l.read += int64(len(chunk))
		room := keep - len(l.buf)
		if room > 0 {
			l.buf = append(l.buf, chunk[:min(room, len(chunk))]...)
		}
		if !ln.dirty && room < len(chunk) {
			for _, c := range chunk[max(room, 0):] {
				if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
					ln.dirty = true
					break
				}
			}
		}
		switch {
		case len(chunk) >= 2:
			ln.crlf = chunk[len(chunk)-2] == '\r'
		case len(chunk) == 1:
			ln.crlf = prevCR
		}
		if len(chunk) > 0 {
			prevCR = chunk[len(chunk)-1] == '\r'
		}
		if e == bufio.ErrBufferFull {
			continue
		}
		ln.head = l.buf
		if e != nil {
			ln.crlf = false
			return ln, e
		}
		ln.nl = true
		ln.crlf = ln.crlf && ln.n >= 2
		return ln, nil
	}
}

// scanResult is what the structure scan found.
type scanResult struct {
	leaves []leafSpan
	bad    string // why the message is malformed, "" if it is not
	tooBig bool   // larger than the limit: the scan stopped
}

// scanBody runs the structure scan over the body of a multipart message
// whose top-level boundary is given and which starts at offset start
// (with the line first, if set). It stops at a read error, or once more
// than limit bytes were read.
func scanBody(lr *lineReader, first *textLine, start int64, boundary string, digest bool, lim Limits, limit int64) (scanResult, error) {
	s := &scanner{lim: lim}
	s.push(boundary, digest)
	if first != nil && s.bad == "" {
		s.line(first, start)
		s.prevEOL = first.eol()
	}
	for s.bad == "" && !s.done {
		off := lr.read
		ln, rerr := lr.next(s.headMax())
		if ln.n > 0 {
			if lr.read > limit {
				return scanResult{tooBig: true}, nil
			}
			s.line(&ln, off)
			s.prevEOL = ln.eol()
		}
		if rerr == io.EOF {
			s.prevEOL = 0
			s.endPart(lr.read)
			break
		}
		if rerr != nil {
			return scanResult{}, rerr
		}
	}
	return scanResult{leaves: s.leaves, bad: s.bad}, nil
}

// containsFold reports whether b holds word (lower-case ASCII letters
// and punctuation), in any case.
func containsFold(b []byte, word string) bool {
	for i := 0; i+len(word) <= len(b); i++ {
		k := 0
		for k < len(word) && b[i+k]|0x20 == word[k]|0x20 {
			k++
		}
		if k == len(word) {
			return true
		}
	}
	return false
}
