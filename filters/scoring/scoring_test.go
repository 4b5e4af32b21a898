package scoring

import (
	"context"
	"testing"

	"mailgate/pipeline"
)

func TestThresholds(t *testing.T) {
	f := New(Config{Reject: 5, Tag: 1})
	s := &pipeline.Session{Score: 2, Tags: []string{"dnsbl"}}
	tx := &pipeline.Transaction{Score: 1, Tags: []string{"spf-softfail"}}
	if v := f.Rcpt(context.Background(), s, tx, pipeline.Address{}); v.Action != pipeline.Continue {
		t.Errorf("score 3 refused: %+v", v)
	}
	if v := f.Data(context.Background(), s, tx, nil); v.Action != pipeline.Continue || len(tx.AddHeaders) != 1 ||
		tx.AddHeaders[0] != "X-Mailgate-Score: 3.0 (dnsbl, spf-softfail)\r\n" {
		t.Errorf("header %q", tx.AddHeaders)
	}
	tx.Score = 3
	v := f.Rcpt(context.Background(), s, tx, pipeline.Address{})
	if v.Action != pipeline.Reject || v.Reply.String() != "550 5.7.1 Message refused: too many signs of spam" {
		t.Errorf("score 5: %+v", v)
	}
	clean := &pipeline.Transaction{}
	if f.Data(context.Background(), &pipeline.Session{}, clean, nil); len(clean.AddHeaders) != 0 {
		t.Errorf("score 0 tagged: %q", clean.AddHeaders)
	}
}

func TestRejectOff(t *testing.T) {
	f := New(Config{Tag: 1})
	if v := f.Rcpt(context.Background(), &pipeline.Session{Score: 100}, &pipeline.Transaction{}, pipeline.Address{}); v.Action != pipeline.Continue {
		t.Errorf("reject threshold 0 must never refuse: %+v", v)
	}
}

// TestContentScoreRefusedAtData: points added at DATA (DMARC tag, SURBL
// score) can still reach the reject threshold.
func TestContentScoreRefusedAtData(t *testing.T) {
	f := New(Config{Reject: 5, Tag: 1})
	s := &pipeline.Session{Score: 2, Tags: []string{"dnsbl"}}
	tx := &pipeline.Transaction{Score: 3, Tags: []string{"dmarc-fail"}}
	v := f.Data(context.Background(), s, tx, nil)
	if v.Action != pipeline.Reject || v.Reply.String() != "550 5.7.1 Message refused: too many signs of spam" ||
		v.Reason != "score 5.0 >= 5.0 (dnsbl, dmarc-fail)" {
		t.Errorf("got %+v", v)
	}
	if len(tx.AddHeaders) != 0 {
		t.Errorf("a refused message needs no header: %q", tx.AddHeaders)
	}
}
