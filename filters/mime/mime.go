// Package mime parses each message's MIME structure once, at DATA, for
// the content filters that come after it (SPEC §4 data: attachments,
// content rules, URL lists), within limits on nesting depth, part count
// and header size that a cheap linear scan enforces before any part is
// decoded (see internal/mimeparse).
//
// A message that cannot be parsed within the limits is malformed, and
// the policy decides (SPEC §5: "malformed MIME → accepted unparsed or
// rejected per config, never a crash"):
//
//   - accept (default): the message goes on; the content checks that
//     need its parts see what could be read safely (often nothing), and
//     the header "X-Mailgate-MIME: unparsed (<why>)" tells the internal
//     server so. ClamAV still scans the raw message.
//   - reject: 554 5.6.0 Message refused: malformed MIME structure (<why>).
//
// A message larger than max_parse_size is not parsed at all and is
// marked the same way (never refused for that).
//
// YAML (filters.mime), with the defaults; the block is on whenever a
// content filter is:
//
//	mime:
//	  max_depth: 10          # deepest multipart nesting
//	  max_parts: 200         # most MIME parts
//	  max_header_size: 256KB # largest header section, the message's or a part's
//	  max_parse_size: 25MB   # larger messages are not parsed
//	  malformed: accept      # accept | reject
package mime

import (
	"context"
	"fmt"
	"io"
	"strings"

	"mailgate/internal/mimeparse"
	"mailgate/pipeline"
	"mailgate/smtpd"
)

// Policies for a malformed message.
const (
	Accept = "accept"
	Reject = "reject"
)

// HeaderName is the field that marks a message whose content checks
// were incomplete.
const HeaderName = "X-Mailgate-MIME"

// Config is the MIME parse policy.
type Config struct {
	// Limits of the parse; zero fields take mimeparse's defaults.
	Limits mimeparse.Limits
	// Malformed is Accept (default) or Reject.
	Malformed string
}

// Filter parses messages for the content filters.
type Filter struct {
	lim    mimeparse.Limits
	reject bool
}

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	switch c.Malformed {
	case "", Accept, Reject:
	default:
		return nil, fmt.Errorf("mime: malformed: unknown policy %q (want accept or reject)", c.Malformed)
	}
	if c.Limits.MaxDepth < 0 || c.Limits.MaxParts < 0 || c.Limits.MaxHeaderSize < 0 || c.Limits.MaxParseSize < 0 {
		return nil, fmt.Errorf("mime: limits must not be negative")
	}
	return &Filter{lim: c.Limits, reject: c.Malformed == Reject}, nil
}

func (*Filter) Name() string { return "mime" }

// Kind: the parse is what the policy filters (attachments, content
// rules) judge, so it runs for whitelisted senders too.
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// Data parses the message into t.MIME.
func (f *Filter) Data(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	// The header is ours to write: a copy the sender put in is removed,
	// so the internal server can trust the one it sees.
	t.AddDropHeader(func(name string, _ []byte) bool { return strings.EqualFold(name, HeaderName) })
	return f.parse(t, m.Reader(), m.Size())
}

// parse is Data on the message's reader.
func (f *Filter) parse(t *pipeline.Transaction, r io.Reader, size int64) pipeline.Verdict {
	msg, err := mimeparse.Parse(r, size, f.lim)
	if err != nil {
		return pipeline.Defer(451, [3]int{4, 3, 0}, "Temporary local problem, try again later",
			"reading the message for the MIME parse: "+err.Error())
	}
	t.MIME = msg
	switch {
	case msg.Malformed != "" && f.reject:
		why := smtpd.Sanitize(msg.Malformed, 100)
		return pipeline.Refuse(554, [3]int{5, 6, 0}, "Message refused: malformed MIME structure ("+why+")",
			"malformed MIME: "+msg.Malformed)
	case msg.Malformed != "":
		t.AddHeaders = append(t.AddHeaders, header("unparsed ("+msg.Malformed+")"))
		return pipeline.PassBecause("malformed MIME, accepted unparsed: " + msg.Malformed)
	case msg.Skipped:
		why := fmt.Sprintf("larger than %d bytes", f.parseSize())
		t.AddHeaders = append(t.AddHeaders, header("unparsed ("+why+")"))
		return pipeline.PassBecause("not MIME-parsed: " + why)
	}
	return pipeline.Pass()
}

func (f *Filter) parseSize() int64 {
	if f.lim.MaxParseSize > 0 {
		return f.lim.MaxParseSize
	}
	return mimeparse.DefaultMaxParseSize
}

// header is the X-Mailgate-MIME field, folded.
func header(value string) string {
	return pipeline.FoldHeader(HeaderName+": ", strings.Fields(smtpd.Sanitize(value, 300)))
}
