package spamdtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"mailgate/internal/spamc"
)

// The private spamd answers, scores GTUBE at 1000 or more with the stock
// rules, and can be stopped and started again.
func TestSpamd(t *testing.T) {
	s := Start(t)
	c, err := spamc.New(spamc.Config{Address: s.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg := "From: a@example.net\r\nSubject: test\r\n\r\n" + GTUBE + "\r\n"
	res, err := c.Symbols(ctx, strings.NewReader(msg), int64(len(msg)))
	if err != nil {
		t.Fatalf("GTUBE: %v\nspamd log:\n%s", err, s.Log())
	}
	if res.Score < 1000 || !res.Spam {
		t.Fatalf("GTUBE scored %+v, want spam with at least 1000", res)
	}

	s.Stop()
	if ping(s.Addr()) {
		t.Fatal("spamd still answers after Stop")
	}
	s.Start()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
