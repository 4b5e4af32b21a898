// Package content refuses messages by regular expressions on their
// header fields and body lines (SPEC §3 filters.content), the
// administrator's tool for what no list knows yet: this week's phishing
// subject, an internal codeword that must not come in from outside.
//
//   - deny_headers are matched against each top-level header field as
//     "Name: value", unfolded (continuation lines joined with one space),
//     the value not decoded.
//   - deny_body are matched against each line (without its line ending)
//     of the decoded text parts (text/plain and text/html that are not
//     attachments, converted to UTF-8). A message the MIME parse could not
//     read, or was too large to parse, is matched on the raw lines of its
//     body's first megabyte instead (and on whatever text parts could be
//     read).
//
// A match refuses the message with
//
//	554 5.7.1 Message refused by content policy
//
// The reply never repeats the message's content; the log reason names
// the pattern (by index) and the header field or line that matched.
// Patterns use Go's RE2 syntax (linear time on any input); (?i) makes
// one case-insensitive.
//
// YAML (filters.content):
//
//	content:
//	  deny_headers: ['^Subject: .*(?i)invoice overdue']
//	  deny_body: ['(?i)wire transfer.*urgent']
package content

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"

	"mailgate/internal/mimeparse"
	"mailgate/internal/rawbody"
	"mailgate/pipeline"
	"mailgate/smtpd"
)

// RawBodyLimit is how much of an unparsed message's body deny_body looks
// at.
const RawBodyLimit = 1 << 20

// Config holds the patterns.
type Config struct {
	DenyHeaders []string
	DenyBody    []string
}

// Filter is the content policy.
type Filter struct {
	headers, body []*regexp.Regexp
}

// New compiles the patterns.
func New(c Config) (*Filter, error) {
	f := &Filter{}
	var err error
	if f.headers, err = compile("deny_headers", c.DenyHeaders); err != nil {
		return nil, err
	}
	if f.body, err = compile("deny_body", c.DenyBody); err != nil {
		return nil, err
	}
	return f, nil
}

func compile(key string, list []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, len(list))
	for i, p := range list {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("content: %s[%d]: %v", key, i, err)
		}
		out[i] = re
	}
	return out, nil
}

func (*Filter) Name() string { return "content" }

// Kind: the administrator's rules hold for whitelisted senders too.
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// refuse is the one reply for every match: it must not tell the sender
// which rule matched, nor echo the message.
func refuse(reason string) pipeline.Verdict {
	return pipeline.Refuse(554, [3]int{5, 7, 1}, "Message refused by content policy", reason)
}

// Data matches the message against the patterns.
func (f *Filter) Data(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	msg := t.MIME
	if msg == nil {
		// No mime filter ran before (tests, explain): parse with the
		// default limits.
		var err error
		if msg, err = mimeparse.Parse(m.Reader(), m.Size(), mimeparse.Limits{}); err != nil {
			return deferRead(err)
		}
	}
	if v, hit := f.matchHeader(msg); hit {
		return v
	}
	if len(f.body) == 0 {
		return pipeline.Pass()
	}
	if v, hit := f.matchParts(msg); hit {
		return v
	}
	if msg.Malformed == "" && !msg.Skipped {
		return pipeline.Pass()
	}
	raw, err := io.ReadAll(io.LimitReader(m.Reader(), RawBodyLimit))
	if err != nil {
		return deferRead(err)
	}
	// The body with quoted-printable undone, then the base64 texts in
	// it: breaking the structure on purpose hides no text.
	for k, text := range rawbody.Texts(raw) {
		if i, n := f.matchLines(text); i >= 0 {
			where := "the unparsed body"
			if k > 0 {
				where = fmt.Sprintf("base64 text %d of the unparsed body", k)
			}
			return refuse(fmt.Sprintf("deny_body[%d] %q matched line %d of %s", i, f.body[i], n, where))
		}
	}
	return pipeline.PassBecause("unparsed message: deny_body matched on the raw body's first megabyte")
}

func deferRead(err error) pipeline.Verdict {
	return pipeline.Defer(451, [3]int{4, 3, 0}, "Temporary local problem, try again later", "reading the message: "+err.Error())
}

// matchHeader matches deny_headers against the top-level fields.
func (f *Filter) matchHeader(msg *mimeparse.Message) (pipeline.Verdict, bool) {
	if len(f.headers) == 0 {
		return pipeline.Verdict{}, false
	}
	for _, fld := range msg.Header {
		line := fld.Name + ": " + fld.Value
		for i, re := range f.headers {
			if re.MatchString(line) {
				return refuse(fmt.Sprintf("deny_headers[%d] %q matched the %s field", i, re, smtpd.Sanitize(fld.Name, 64))), true
			}
		}
	}
	return pipeline.Verdict{}, false
}

// matchParts matches deny_body against the lines of the text parts.
func (f *Filter) matchParts(msg *mimeparse.Message) (pipeline.Verdict, bool) {
	for n, p := range msg.Parts {
		if !p.Text {
			continue
		}
		if i, line := f.matchLines(p.Content); i >= 0 {
			return refuse(fmt.Sprintf("deny_body[%d] %q matched line %d of part %d (%s)", i, f.body[i], line, n+1, p.ContentType)), true
		}
	}
	return pipeline.Verdict{}, false
}

// matchLines returns the index of the first deny_body pattern matching a
// line of text and the line's number (from 1), or -1.
func (f *Filter) matchLines(text []byte) (pattern, line int) {
	for n := 1; len(text) > 0; n++ {
		l := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			l, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		l = bytes.TrimSuffix(l, []byte("\r"))
		for i, re := range f.body {
			if re.Match(l) {
				return i, n
			}
		}
	}
	return -1, 0
}
