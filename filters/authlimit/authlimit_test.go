package authlimit

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"mailgate/pipeline"
)

func session(ip string) *pipeline.Session {
	return &pipeline.Session{Client: netip.AddrPortFrom(netip.MustParseAddr(ip), 1234)}
}

func TestAuthLimit(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f := New(Config{MaxFailures: 3, Window: 10 * time.Minute, Now: func() time.Time { return now }})
	ctx := context.Background()
	a, b := session("192.0.2.1"), session("192.0.2.2")

	for i := 0; i < 3; i++ {
		if v := f.Auth(ctx, a); v.Action != pipeline.Continue {
			t.Fatalf("attempt %d refused: %+v", i, v)
		}
		f.AuthResult(a, "alice", false)
	}
	v := f.Auth(ctx, a)
	if v.Reply.String() != "421 4.7.0 Too many authentication failures, try again later" || !v.Reply.Close {
		t.Fatalf("over the limit: %+v", v)
	}
	if v := f.Auth(ctx, b); v.Action != pipeline.Continue {
		t.Errorf("another address refused")
	}
	// Successes are not failures.
	f.AuthResult(b, "bob", true)
	f.AuthResult(b, "bob", true)
	f.AuthResult(b, "bob", true)
	if v := f.Auth(ctx, b); v.Action != pipeline.Continue {
		t.Errorf("successes counted as failures")
	}
	// The window slides.
	now = now.Add(11 * time.Minute)
	if v := f.Auth(ctx, a); v.Action != pipeline.Continue {
		t.Errorf("still refused after the window: %+v", v)
	}
}

func TestIPv6CountsPer64(t *testing.T) {
	f := New(Config{MaxFailures: 2, Window: time.Minute})
	f.AuthResult(session("2001:db8::1"), "x", false)
	f.AuthResult(session("2001:db8::2"), "x", false)
	if v := f.Auth(context.Background(), session("2001:db8::ffff")); v.Action != pipeline.Tempfail {
		t.Errorf("rotating addresses inside one /64 escaped the limit: %+v", v)
	}
	if v := f.Auth(context.Background(), session("2001:db8:0:1::1")); v.Action != pipeline.Continue {
		t.Errorf("another /64 refused")
	}
}
