// Package scoring turns the score of weighted checks into decisions
// (SPEC §2 "score(n, tag)"): a DNSBL listing below its threshold, an rDNS,
// HELO or pregreet failure with action score, an SPF softfail with action
// tag each add points; this filter refuses a recipient once the total
// reaches the reject threshold, and tells the internal server the score in
// a header otherwise:
//
//	filters:
//	  scoring: {reject: 5, tag: 1}
//
// The header is "X-Mailgate-Score: 2.0 (dnsbl, spf-softfail)".
package scoring

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"mailgate/pipeline"
)

// Config are the thresholds; 0 switches one off.
type Config struct {
	Reject float64
	Tag    float64
}

// Filter applies the thresholds. It runs after the scoring filters.
type Filter struct{ c Config }

// New returns the filter.
func New(c Config) *Filter { return &Filter{c: c} }

func (*Filter) Name() string        { return "scoring" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

// Rcpt refuses once the score has reached the reject threshold.
func (f *Filter) Rcpt(_ context.Context, s *pipeline.Session, t *pipeline.Transaction, _ pipeline.Address) pipeline.Verdict {
	score := t.TotalScore(s)
	if f.c.Reject > 0 && score >= f.c.Reject {
		return pipeline.Refuse(550, [3]int{5, 7, 1}, "Message refused: too many signs of spam",
			fmt.Sprintf("score %s >= %s (%s)", num(score), num(f.c.Reject), strings.Join(tags(s, t), ", ")))
	}
	return pipeline.Pass()
}

// Data refuses a message whose content checks (DMARC tagging, SURBL
// with action score) brought the total to the reject threshold, and adds
// the score header once the tag threshold is reached.
func (f *Filter) Data(_ context.Context, s *pipeline.Session, t *pipeline.Transaction, _ *pipeline.Message) pipeline.Verdict {
	score := t.TotalScore(s)
	if f.c.Reject > 0 && score >= f.c.Reject {
		return pipeline.Refuse(550, [3]int{5, 7, 1}, "Message refused: too many signs of spam",
			fmt.Sprintf("score %s >= %s (%s)", num(score), num(f.c.Reject), strings.Join(tags(s, t), ", ")))
	}
	if f.c.Tag <= 0 || score < f.c.Tag {
		return pipeline.Pass()
	}
	h := "X-Mailgate-Score: " + num(score)
	if tg := tags(s, t); len(tg) > 0 {
		h += " (" + strings.Join(tg, ", ") + ")"
	}
	t.AddHeaders = append(t.AddHeaders, h+"\r\n")
	return pipeline.PassBecause("tagged with score " + num(score))
}

func tags(s *pipeline.Session, t *pipeline.Transaction) []string {
	return append(append([]string(nil), s.Tags...), t.Tags...)
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }
