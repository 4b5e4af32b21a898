package size

import (
	"context"
	"strings"
	"testing"

	"mailgate/internal/spool"
	"mailgate/pipeline"
)

func TestSize(t *testing.T) {
	f := New(100)
	s := &pipeline.Session{}
	if v := f.Mail(context.Background(), s, &pipeline.Transaction{Size: 100}); v.Action != pipeline.Continue {
		t.Errorf("SIZE=100: %v", v.Action)
	}
	if v := f.Mail(context.Background(), s, &pipeline.Transaction{Size: 101}); v.Reply.String() != "552 5.3.4 "+text {
		t.Errorf("SIZE=101: %v", v.Reply)
	}
	for n, want := range map[int]pipeline.Action{100: pipeline.Continue, 101: pipeline.Reject} {
		m := spool.New(10, 100, t.TempDir())
		m.Write([]byte(strings.Repeat("x", n)))
		if v := f.Data(context.Background(), s, &pipeline.Transaction{}, m); v.Action != want {
			t.Errorf("%d bytes: %v", n, v.Action)
		}
		m.Close()
	}
}
