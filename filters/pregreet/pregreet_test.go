package pregreet

import (
	"context"
	"testing"

	"mailgate/pipeline"
)

func TestActions(t *testing.T) {
	for _, c := range []struct {
		action string
		want   pipeline.Action
		reply  string
	}{
		{"", pipeline.Reject, "554 5.5.1 Protocol error: talked before the greeting"},
		{"reject", pipeline.Reject, "554 5.5.1 Protocol error: talked before the greeting"},
		{"tempfail", pipeline.Tempfail, "421 4.7.0 Protocol error: talked before the greeting, try again later"},
		{"score", pipeline.Score, ""},
	} {
		f, err := New(Config{Action: c.action, Score: 2})
		if err != nil {
			t.Fatal(err)
		}
		v := f.Pregreet(context.Background(), &pipeline.Session{})
		if v.Action != c.want {
			t.Errorf("%s: %v, want %v", c.action, v.Action, c.want)
		}
		if c.reply != "" && v.Reply.String() != c.reply {
			t.Errorf("%s: reply %q, want %q", c.action, v.Reply.String(), c.reply)
		}
		if c.want == pipeline.Score && v.Score != 2 {
			t.Errorf("score %v", v.Score)
		}
	}
	if _, err := New(Config{Action: "drop"}); err == nil {
		t.Error("unknown action accepted")
	}
}
