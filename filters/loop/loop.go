// Package loop is mail loop protection (SPEC §4 data): a message that has
// already passed through more MTAs than a sane path has is looping, and
// is refused rather than forwarded once more.
package loop

import (
	"bytes"
	"context"
	"fmt"

	"mailgate/pipeline"
)

// maxHeaderBytes bounds how much of the header block is read to count
// trace fields.
const maxHeaderBytes = 1 << 20

// Filter refuses messages with more than Max Received header fields.
type Filter struct{ Max int }

// New returns the loop filter (limits.max_received_headers).
func New(max int) *Filter { return &Filter{Max: max} }

func (*Filter) Name() string        { return "loop" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// CountReceived counts the Received: fields of a header block.
func CountReceived(header []byte) int {
	n := 0
	for len(header) > 0 {
		line := header
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, header = header[:i+1], header[i+1:]
		} else {
			header = nil
		}
		if len(line) >= 9 && bytes.EqualFold(line[:9], []byte("received:")) {
			n++
		}
	}
	return n
}

// Data counts the message's Received fields.
func (f *Filter) Data(_ context.Context, _ *pipeline.Session, _ *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	n := CountReceived(m.Header(maxHeaderBytes))
	if n > f.Max {
		return pipeline.Refuse(554, [3]int{5, 4, 6}, "Too many hops: mail loop detected",
			fmt.Sprintf("%d Received headers, limit %d", n, f.Max))
	}
	return pipeline.Pass()
}
