// Package attachments bars attachments by file name and by content type
// (SPEC §3 filters.attachments), the classic defence against mailed
// executables and scripts: ClamAV finds known malware, this refuses the
// kinds of file no one should receive by mail at all.
//
// A file name is barred when any of its dot-separated suffixes, compared
// case-insensitively, is a barred extension: "invoice.pdf.EXE" and
// "a.tar.exe" both match exe (and tar.exe, if listed). The name is first
// cut as Windows would save it: at a NUL, to its last path element, and
// with trailing dots and spaces removed ("evil.exe. " is evil.exe). Every
// spelling of the name in the part's header is judged (mail clients
// differ in which they use). A content type is barred when the type
// detected from the part's bytes is listed, whatever type it declares.
//
// With scan_archives, zip attachments (by their bytes, not their name)
// are opened and the names and detected types of their entries judged
// the same way, including one level of zip inside a zip. The look is
// bounded: the names of all entries, the contents of the first 1000, and
// at most 10 MB decompressed per archive; a zip that cannot be read (corrupt, or an entry encrypted) is
// let through for ClamAV to judge, though the names of encrypted entries,
// which zip does not encrypt, are still judged.
//
// A message the MIME parse could not read (too deep, too many parts, too
// large) has no parts to judge; the file names in its raw Content-Type
// and Content-Disposition fields (in its first 10 MB) are judged instead.
//
// A barred attachment is refused with 554 5.7.1 (action: reject) or
// 451 4.7.1 (action: tempfail, for a trial period where senders should
// retry once the policy is relaxed):
//
//	554 5.7.1 Message refused: attachment invoice.pdf.exe is not allowed (exe)
//
// YAML (filters.attachments), with the defaults:
//
//	attachments:
//	  deny_extensions: [exe, scr, com, pif, bat, cmd, js, vbs, jar]
//	  deny_types: []          # e.g. [application/x-msdownload, application/x-executable]
//	  scan_archives: true
//	  action: reject          # reject | tempfail
package attachments

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"mailgate/internal/mimeparse"
	"mailgate/pipeline"
	"mailgate/smtpd"
)

// Actions for a barred attachment.
const (
	Reject   = "reject"
	Tempfail = "tempfail"
)

// Bounds of the look inside an archive.
const (
	MaxEntries  = 1000
	MaxUnpacked = 10 << 20
)

// Config is the attachment policy.
type Config struct {
	// DenyExtensions without the leading dot, e.g. "exe" or "tar.gz".
	DenyExtensions []string
	// DenyTypes are detected media types, e.g. "application/x-msdownload".
	DenyTypes []string
	// ScanArchives looks inside zip attachments.
	ScanArchives bool
	// Action is Reject (default) or Tempfail.
	Action string
}

// Filter is the attachment policy.
type Filter struct {
	exts     map[string]bool
	types    map[string]bool
	archives bool
	tempfail bool
}

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	f := &Filter{exts: map[string]bool{}, types: map[string]bool{}, archives: c.ScanArchives}
	switch c.Action {
	case "", Reject:
	case Tempfail:
		f.tempfail = true
	default:
		return nil, fmt.Errorf("attachments: action: unknown action %q (want reject or tempfail)", c.Action)
	}
	for i, e := range c.DenyExtensions {
		e = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(e), "."))
		if e == "" || strings.ContainsAny(e, `/\`) {
			return nil, fmt.Errorf("attachments: deny_extensions[%d]: %q is not a file name extension", i, c.DenyExtensions[i])
		}
		f.exts[e] = true
	}
	for i, t := range c.DenyTypes {
		t = strings.ToLower(strings.TrimSpace(t))
		if typ, sub, ok := strings.Cut(t, "/"); !ok || typ == "" || sub == "" {
			return nil, fmt.Errorf("attachments: deny_types[%d]: %q is not a media type", i, c.DenyTypes[i])
		}
		f.types[t] = true
	}
	return f, nil
}

func (*Filter) Name() string { return "attachments" }

// Kind: barred attachments are refused for whitelisted senders too (a
// trusted partner's compromised mailbox sends the same executables).
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// Data judges every part of the message.
func (f *Filter) Data(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	msg := t.MIME
	if msg == nil {
		// No mime filter ran before (tests, explain): parse with the
		// default limits.
		var err error
		if msg, err = mimeparse.Parse(m.Reader(), m.Size(), mimeparse.Limits{}); err != nil {
			return pipeline.Defer(451, [3]int{4, 3, 0}, "Temporary local problem, try again later",
				"reading the message: "+err.Error())
		}
	}
	v := f.check(msg)
	if v.Action != pipeline.Continue || (msg.Malformed == "" && !msg.Skipped) {
		return v
	}
	// The parts of an unparsed message are unknown, but the file names in
	// its raw Content-Type and Content-Disposition fields are not: a
	// barred name must not pass because the MIME structure around it was
	// too deep or too large to parse.
	names, err := rawNames(m.Reader(), RawScanLimit)
	if err != nil {
		return pipeline.Defer(451, [3]int{4, 3, 0}, "Temporary local problem, try again later",
			"reading the message: "+err.Error())
	}
	for _, n := range names {
		if ext := f.barredName(n); ext != "" {
			return f.refuse(n, ext, fmt.Sprintf("unparsed message: file name %q in its raw fields has a barred extension (%s)", n, ext))
		}
	}
	return v
}

// RawScanLimit is how much of an unparsed message is searched for file
// names.
const RawScanLimit = 10 << 20

// maxRawField bounds one raw header field held while looking for names.
const maxRawField = 16 << 10

// rawNames returns the file names of the Content-Type and
// Content-Disposition fields found anywhere in the first limit bytes of
// a message, read as plain lines.
func rawNames(r io.Reader, limit int64) ([]string, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, limit), 32<<10)
	var names []string
	var name string // the field being collected, "" if none
	var value []byte
	flush := func() {
		if name != "" {
			names = append(names, mimeparse.FieldFileNames(name, string(value))...)
		}
		name, value = "", value[:0]
	}
	for {
		line, err := br.ReadSlice('\n')
		long := err == bufio.ErrBufferFull
		for err == bufio.ErrBufferFull {
			_, err = br.ReadSlice('\n') // the rest of a long line: no field
		}
		switch {
		case long:
			flush()
		case len(line) > 0 && (line[0] == ' ' || line[0] == '\t'):
			if name != "" && len(value)+len(line) <= maxRawField {
				value = append(value, bytes.TrimRight(line, "\r\n")...)
			}
		default:
			flush()
			if f, v, ok := bytes.Cut(line, []byte(":")); ok {
				if n := string(bytes.TrimSpace(f)); strings.EqualFold(n, "Content-Type") || strings.EqualFold(n, "Content-Disposition") {
					name = n
					value = append(value, bytes.TrimRight(v, "\r\n")...)
				}
			}
		}
		if err == io.EOF {
			flush()
			return names, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// check judges a parsed message.
func (f *Filter) check(msg *mimeparse.Message) pipeline.Verdict {
	var notes []string
	for i := range msg.Parts {
		p := &msg.Parts[i]
		name := p.Filename
		if name == "" {
			name = fmt.Sprintf("(unnamed part %d)", i+1)
		}
		for _, n := range append([]string{p.Filename}, p.AltNames...) {
			if ext := f.barredName(n); ext != "" {
				return f.refuse(n, ext, fmt.Sprintf("part %d: file name %q has a barred extension (%s)", i+1, n, ext))
			}
		}
		if f.types[p.Detected] {
			return f.refuse(name, p.Detected, fmt.Sprintf("part %d (%q): detected type %s is barred", i+1, p.Filename, p.Detected))
		}
		if f.archives && p.Detected == "application/zip" {
			budget := int64(MaxUnpacked)
			inner, why, note := f.scanZip(p.Content, &budget, false)
			if inner != "" {
				return f.refuse(name, sanitize(inner)+" inside: "+why,
					fmt.Sprintf("part %d (%q): zip entry %q: %s", i+1, p.Filename, inner, why))
			}
			if note != "" {
				notes = append(notes, fmt.Sprintf("part %d (%q): %s", i+1, p.Filename, note))
			}
		}
	}
	if len(notes) > 0 {
		return pipeline.PassBecause(strings.Join(notes, "; "))
	}
	return pipeline.Pass()
}

// refuse names the attachment and why, sanitised: the name is the
// sender's text.
func (f *Filter) refuse(name, why, reason string) pipeline.Verdict {
	text := "Message refused: attachment " + sanitize(name) + " is not allowed (" + why + ")"
	if f.tempfail {
		return pipeline.Defer(451, [3]int{4, 7, 1}, text, reason)
	}
	return pipeline.Refuse(554, [3]int{5, 7, 1}, text, reason)
}

// sanitize makes a file name fit for a reply: printable ASCII only, at
// most 100 characters.
func sanitize(name string) string { return smtpd.Sanitize(name, 100) }

// barredName returns the barred extension name has, or "".
func (f *Filter) barredName(name string) string {
	n := strings.ToLower(windowsName(name))
	// Also as NTFS reads "name.exe:stream": a colon ends the file name.
	variants := []string{n}
	if i := strings.IndexByte(n, ':'); i >= 0 {
		variants = append(variants, strings.TrimRight(n[:i], ". "))
	}
	for _, v := range variants {
		for i := 0; i < len(v); i++ {
			if v[i] == '.' && f.exts[v[i+1:]] {
				return v[i+1:]
			}
		}
	}
	return ""
}

// windowsName is the name a file would be saved under on Windows: cut at
// a NUL, its last path element, without trailing dots and spaces.
func windowsName(name string) string {
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	return strings.TrimRight(name, ". ")
}

// scanZip looks for a barred entry in a zip archive: it returns the
// entry's name and why it is barred, or a note on what could not be
// looked at. budget is what may still be decompressed; nested is set
// inside a zip already (no deeper).
func (f *Filter) scanZip(data []byte, budget *int64, nested bool) (inner, why, note string) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return "", "", "unreadable zip, not scanned"
	}
	// Names cost nothing more to judge (the reader holds them all);
	// contents are looked at in the first MaxEntries entries only.
	for _, zf := range zr.File {
		if ext := f.barredName(zf.Name); ext != "" {
			return zf.Name, ext, ""
		}
	}
	var notes []string
	for i, zf := range zr.File {
		if i == MaxEntries {
			notes = append(notes, fmt.Sprintf("contents of the first %d of %d entries scanned", MaxEntries, len(zr.File)))
			break
		}
		if zf.FileInfo().IsDir() {
			continue
		}
		if zf.Flags&0x1 != 0 {
			notes = appendOnce(notes, "encrypted entries not scanned")
			continue
		}
		if len(f.types) == 0 && nested {
			continue // nothing more to learn from the bytes
		}
		h, err := head(zf, budget)
		if err != nil {
			notes = appendOnce(notes, "entries not scanned: "+noteOf(err))
			continue
		}
		typ := mimeparse.Detect(h)
		if f.types[typ] {
			return zf.Name, typ, ""
		}
		if typ != "application/zip" || nested {
			continue
		}
		if zf.UncompressedSize64 > uint64(*budget) {
			notes = appendOnce(notes, "nested zip not scanned: "+noteOf(errBudget))
			continue
		}
		data, err := whole(zf, budget)
		if err != nil {
			notes = appendOnce(notes, "nested zip not scanned: "+noteOf(err))
			continue
		}
		in, w, n := f.scanZip(data, budget, true)
		if in != "" {
			return zf.Name + "/" + in, w, ""
		}
		if n != "" {
			notes = appendOnce(notes, "nested "+zf.Name+": "+n)
		}
	}
	return "", "", strings.Join(notes, ", ")
}

// errBudget: the archive unpacks to more than may be decompressed.
var errBudget = errors.New("decompression budget exhausted")

// head decompresses the first bytes of an entry, enough to detect its
// type, charged to budget.
func head(zf *zip.File, budget *int64) ([]byte, error) {
	if *budget <= 0 {
		return nil, errBudget
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, min(mimeparse.SniffLen, *budget)))
	*budget -= int64(len(b))
	return b, err
}

// whole decompresses an entry, charged to budget; one larger than the
// budget is an error.
func whole(zf *zip.File, budget *int64) ([]byte, error) {
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, *budget+1))
	if int64(len(b)) > *budget {
		*budget = 0
		return nil, errBudget
	}
	*budget -= int64(len(b))
	return b, err
}

// noteOf says briefly why an entry could not be read.
func noteOf(err error) string {
	if errors.Is(err, errBudget) {
		return fmt.Sprintf("more than %d bytes decompressed", MaxUnpacked)
	}
	return "unreadable"
}

func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
