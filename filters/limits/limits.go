// Package limits caps what one session may do (SPEC §3 limits):
// recipients per message and messages per connection.
package limits

import (
	"context"
	"fmt"

	"mailgate/pipeline"
)

// Config holds the caps; zero means unlimited.
type Config struct {
	MaxRecipients         int
	MaxMessagesPerSession int
}

// Filter applies the caps.
type Filter struct{ c Config }

// New returns the limits filter.
func New(c Config) *Filter { return &Filter{c: c} }

func (*Filter) Name() string        { return "limits" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// Mail refuses a new message once the session has sent its share; the
// client reconnects and goes on, nothing is lost.
func (f *Filter) Mail(_ context.Context, s *pipeline.Session, _ *pipeline.Transaction) pipeline.Verdict {
	if m := f.c.MaxMessagesPerSession; m > 0 && s.Messages >= m {
		v := pipeline.Defer(421, [3]int{4, 7, 0}, "Too many messages in this session, reconnect to send more",
			fmt.Sprintf("%d messages in session, limit %d", s.Messages, m))
		v.Reply.Close = true
		return v
	}
	return pipeline.Pass()
}

// Rcpt refuses recipients over the limit with the 452 RFC 5321 §4.5.3.1.10
// asks for: the client sends the rest in another message.
func (f *Filter) Rcpt(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction, _ pipeline.Address) pipeline.Verdict {
	if m := f.c.MaxRecipients; m > 0 && len(t.Rcpts) >= m {
		return pipeline.Defer(452, [3]int{4, 5, 3}, "Too many recipients",
			fmt.Sprintf("recipient %d over limit %d", len(t.Rcpts)+1, m))
	}
	return pipeline.Pass()
}
