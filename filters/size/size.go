// Package size enforces the message size limit (SPEC §4 mail and data):
// a SIZE= declared at MAIL above the limit is refused before any data is
// sent, and a message that turns out larger is refused after DATA (the
// engine stops storing it at the limit, so memory stays bounded).
package size

import (
	"context"
	"fmt"

	"mailgate/pipeline"
)

// Filter is the size limit.
type Filter struct{ Max int64 }

// New returns the size filter (limits.max_message_size).
func New(max int64) *Filter { return &Filter{Max: max} }

func (*Filter) Name() string        { return "size" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

const text = "Message size exceeds fixed maximum message size"

// Mail checks the declared SIZE.
func (f *Filter) Mail(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction) pipeline.Verdict {
	if t.Size > f.Max {
		return pipeline.Refuse(552, [3]int{5, 3, 4}, text, fmt.Sprintf("declared SIZE %d > %d", t.Size, f.Max))
	}
	return pipeline.Pass()
}

// Data checks the real size.
func (f *Filter) Data(_ context.Context, _ *pipeline.Session, _ *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	if m.Size() > f.Max {
		return pipeline.Refuse(552, [3]int{5, 3, 4}, text, fmt.Sprintf("message of %d bytes > %d", m.Size(), f.Max))
	}
	return pipeline.Pass()
}
