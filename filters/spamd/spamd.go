// Package spamd scores messages with SpamAssassin's spamd (SPEC §4 data,
// "optional spamd score") and applies spamd's score with the gateway's
// own two thresholds: at or above reject_score the message is refused,
// at or above tag_score it is delivered with X-Spam-Flag: YES, and every
// scored message carries X-Spam-Score and X-Spam-Status for the internal
// server's rules. spamd's own required score is not used.
//
// YAML (filters.spamd), with the defaults:
//
//	spamd:
//	  address: 127.0.0.1:783  # host:port or unix:/path (required)
//	  reject_score: 0         # at or above: 550 5.7.1 (0: never refuse)
//	  tag_score: 5            # at or above: X-Spam-Flag: YES
//	  max_size: 512KB         # larger messages are not scored (like spamc)
//	  timeout: 30s            # one check, connection included
//	  on_error: accept        # spamd down, slow or failing: accept | tempfail
//
// The message spamd sees is the one the internal server will get: the
// trace fields of earlier filters (Received-SPF, Authentication-Results)
// and a Received field for the client's connection, so SpamAssassin's
// relay rules judge the real client, then the message without the header
// fields the gateway removes. X-Spam-Flag, X-Spam-Score, X-Spam-Status
// and X-Spam-Level fields the sender wrote are always removed: the
// internal server must only ever see the gateway's verdict.
//
// Whitelisted and authenticated senders are not scored (kind Antispam).
package spamd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"mailgate/internal/spamc"
	"mailgate/pipeline"
)

// Failure policies (on_error).
const (
	OnErrorAccept   = "accept"
	OnErrorTempfail = "tempfail"
)

// Defaults for zero values in Config.
const (
	DefaultTagScore = 5
	DefaultMaxSize  = spamc.DefaultMaxSize
	DefaultTimeout  = 30 * time.Second
)

// Config is the spamd policy.
type Config struct {
	// Address of spamd: host:port or unix:/path.
	Address string
	// RejectScore: a score at or above it is refused with 550 5.7.1;
	// 0 never refuses.
	RejectScore float64
	// TagScore: a score at or above it is tagged X-Spam-Flag: YES
	// (0: DefaultTagScore).
	TagScore float64
	// MaxSize: larger messages are not scored (0: DefaultMaxSize).
	MaxSize int64
	// Timeout bounds one check (0: DefaultTimeout).
	Timeout time.Duration
	// OnError when spamd is down, slow or answers an error: accept
	// (default; the message goes on unscored, logged) or tempfail
	// (451 4.7.1, the sender retries).
	OnError string
	// Log receives the warnings of the accept policy; nil discards them.
	Log *slog.Logger
}

// Filter is the spamd check.
type Filter struct {
	c      Config
	client *spamc.Client
}

// New validates c and returns the filter. It does not connect: spamd
// may start after the gateway.
func New(c Config) (*Filter, error) {
	if c.TagScore == 0 {
		c.TagScore = DefaultTagScore
	}
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.OnError == "" {
		c.OnError = OnErrorAccept
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.RejectScore < 0:
		return nil, fmt.Errorf("spamd: reject_score %g is negative", c.RejectScore)
	case c.MaxSize < 0:
		return nil, fmt.Errorf("spamd: max_size %d is negative", c.MaxSize)
	case c.Timeout < 0:
		return nil, fmt.Errorf("spamd: timeout %v is negative", c.Timeout)
	case c.OnError != OnErrorAccept && c.OnError != OnErrorTempfail:
		return nil, fmt.Errorf("spamd: on_error %q: want accept or tempfail", c.OnError)
	}
	client, err := spamc.New(spamc.Config{Address: c.Address, MaxSize: c.MaxSize})
	if err != nil {
		return nil, fmt.Errorf("spamd: %w", err)
	}
	return &Filter{c: c, client: client}, nil
}

func (*Filter) Name() string        { return "spamd" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

var unavailable = pipeline.Defer(451, [3]int{4, 7, 1}, "Spam check unavailable, try again later", "")

// Data scores the message and refuses, tags or passes it.
func (f *Filter) Data(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	t.AddDropHeader(forgedVerdict)
	if s.AuthUser != "" {
		return pipeline.PassBecause("authenticated client is not scored")
	}

	// As the internal server will get it: the filters' fields and the
	// gateway's Received, from which SpamAssassin finds the last
	// untrusted relay (the one its network rules judge).
	prefix := strings.Join(t.AddHeaders, "") + t.Received
	size, err := f.size(t, m, int64(len(prefix)))
	if err != nil {
		return f.failed(s, err)
	}
	if size > f.c.MaxSize {
		return pipeline.PassBecause(fmt.Sprintf("not scored: over max_size (%d > %d bytes)", size, f.c.MaxSize))
	}

	ctx, cancel := context.WithTimeout(ctx, f.c.Timeout)
	defer cancel()
	body := t.MessageReader(m)
	res, err := f.client.Symbols(ctx, io.MultiReader(strings.NewReader(prefix), body), size)
	_ = body.Close()
	if err != nil {
		return f.failed(s, err)
	}

	score := formatScore(res.Score)
	tests := strings.Join(res.Symbols, ",")
	reject := f.c.RejectScore > 0 && res.Score >= f.c.RejectScore
	switch {
	case reject || res.Score >= f.c.TagScore:
		// Tagged when refused too, for the decision's sake: in shadow
		// mode the pipeline applies neither the refusal nor the fields.
		t.AddHeaders = append(t.AddHeaders, "X-Spam-Flag: YES\r\n", "X-Spam-Score: "+score+"\r\n",
			f.status("Yes", score, res.Symbols))
		if reject {
			return pipeline.Refuse(550, [3]int{5, 7, 1}, "Message refused as spam (score "+score+")",
				fmt.Sprintf("spamd score %s >= reject_score %g (%s)", score, f.c.RejectScore, tests))
		}
		return pipeline.PassBecause(fmt.Sprintf("spamd score %s >= tag_score %g: tagged (%s)", score, f.c.TagScore, tests))
	default:
		t.AddHeaders = append(t.AddHeaders, "X-Spam-Score: "+score+"\r\n", f.status("No", score, res.Symbols))
		return pipeline.PassBecause(fmt.Sprintf("spamd score %s < tag_score %g (%s)", score, f.c.TagScore, tests))
	}
}

// size is the length of what spamd would be sent, counted up to one
// byte over max_size: the message is spooled, so counting it costs no
// memory, and spamd's protocol wants the length first.
func (f *Filter) size(t *pipeline.Transaction, m *pipeline.Message, prefix int64) (int64, error) {
	r := t.MessageReader(m)
	defer r.Close()
	n, err := io.Copy(io.Discard, io.LimitReader(r, max(f.c.MaxSize-prefix+1, 0)))
	if err != nil {
		return 0, fmt.Errorf("reading the message: %w", err)
	}
	return prefix + n, nil
}

// failed applies the failure policy (SPEC §5).
func (f *Filter) failed(s *pipeline.Session, err error) pipeline.Verdict {
	if f.c.OnError == OnErrorAccept {
		f.c.Log.Warn("spamd unavailable, message not scored", "session", s.ID, "spamd", f.client.String(), "err", err)
		return pipeline.PassBecause("spamd unavailable: " + err.Error())
	}
	return unavailable.WithReason("spamd unavailable: " + err.Error())
}

// status is the X-Spam-Status field, SpamAssassin's format, folded
// after a comma between rule names when long (pipeline.FoldHeader would
// put a space after every comma).
func (f *Filter) status(verdict, score string, symbols []string) string {
	var b strings.Builder
	b.WriteString("X-Spam-Status: " + verdict + ", score=" + score + " required=" + formatScore(f.c.TagScore) + " tests=")
	if len(symbols) == 0 {
		b.WriteString("none\r\n")
		return b.String()
	}
	col := b.Len()
	for i, s := range symbols {
		if i < len(symbols)-1 {
			s += ","
		}
		if i > 0 && col+len(s) > 78 {
			b.WriteString("\r\n\t")
			col = 8
		}
		b.WriteString(s)
		col += len(s)
	}
	b.WriteString("\r\n")
	return b.String()
}

// formatScore writes a score as SpamAssassin does, with one decimal.
func formatScore(v float64) string {
	s := fmt.Sprintf("%.1f", v)
	if s == "-0.0" {
		return "0.0"
	}
	return s
}

// spamVerdictFields are the fields this filter writes.
var spamVerdictFields = []string{"X-Spam-Flag", "X-Spam-Score", "X-Spam-Status", "X-Spam-Level"}

// forgedVerdict drops spam verdict fields that came with the message:
// an internal server filing on X-Spam-Flag must not trust the sender's.
func forgedVerdict(name string, _ []byte) bool {
	for _, n := range spamVerdictFields {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// Ensure the filter implements the stage it runs at.
var _ pipeline.DataFilter = (*Filter)(nil)
