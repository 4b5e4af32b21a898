package loop

import (
	"context"
	"strings"
	"testing"

	"mailgate/internal/spool"
	"mailgate/pipeline"
)

func TestCountReceived(t *testing.T) {
	h := "Received: a\r\nreceived: b\r\n\tcontinued Received: no\r\nX-Received: no\r\nRECEIVED:c\r\nSubject: Received: no\r\n\r\n"
	if n := CountReceived([]byte(h)); n != 3 {
		t.Errorf("CountReceived = %d, want 3", n)
	}
}

func TestLoop(t *testing.T) {
	f := New(2)
	for n, want := range map[int]pipeline.Action{0: pipeline.Continue, 2: pipeline.Continue, 3: pipeline.Reject} {
		m := spool.New(1<<20, 1<<20, "")
		m.Write([]byte(strings.Repeat("Received: x\r\n", n) + "Subject: s\r\n\r\nReceived: in the body does not count\r\n"))
		v := f.Data(context.Background(), &pipeline.Session{}, &pipeline.Transaction{}, m)
		if v.Action != want {
			t.Errorf("%d hops: %v, want %v", n, v.Action, want)
		}
		if v.Action == pipeline.Reject && v.Reply.String() != "554 5.4.6 Too many hops: mail loop detected" {
			t.Errorf("reply %q", v.Reply.String())
		}
	}
}
