package limits

import (
	"context"
	"testing"

	"mailgate/internal/mailaddr"
	"mailgate/pipeline"
)

func TestLimits(t *testing.T) {
	f := New(Config{MaxRecipients: 2, MaxMessagesPerSession: 1})
	ctx := context.Background()
	s := &pipeline.Session{}
	tx := &pipeline.Transaction{}
	a, _ := mailaddr.Parse("a@example.com")
	for i, want := range []pipeline.Action{pipeline.Continue, pipeline.Continue, pipeline.Tempfail} {
		v := f.Rcpt(ctx, s, tx, a)
		if v.Action != want {
			t.Fatalf("rcpt %d: %v", i, v.Action)
		}
		if want == pipeline.Tempfail && v.Reply.String() != "452 4.5.3 Too many recipients" {
			t.Errorf("reply %v", v.Reply)
		}
		tx.Rcpts = append(tx.Rcpts, a)
	}
	if v := f.Mail(ctx, s, tx); v.Action != pipeline.Continue {
		t.Errorf("first message: %v", v.Action)
	}
	s.Messages = 1
	if v := f.Mail(ctx, s, tx); v.Reply.Code != 421 || !v.Reply.Close {
		t.Errorf("second message: %+v", v)
	}
	if v := New(Config{}).Rcpt(ctx, s, &pipeline.Transaction{Rcpts: make([]mailaddr.Address, 1000)}, a); v.Action != pipeline.Continue {
		t.Errorf("zero means unlimited: %v", v.Action)
	}
}
