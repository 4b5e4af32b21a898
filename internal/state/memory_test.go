package state

import (
	"fmt"
	"testing"
	"time"
)

// The in-memory table stays bounded: expired entries are swept as it
// grows, and past its cap live ones are forgotten rather than the process
// growing without end.
func TestTableBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tb := newTable(20000)
	for i := range 3000 {
		tb.set(fmt.Sprint("old", i), []byte("v"), time.Minute, now)
	}
	now = now.Add(time.Hour)
	for i := range 5000 {
		tb.set(fmt.Sprint("new", i), []byte("v"), time.Minute, now)
	}
	if n := len(tb.m); n != 5000 {
		t.Fatalf("%d entries, 5000 live: expired ones were not swept", n)
	}

	tb = newTable(5000)
	for i := range 10000 {
		tb.set(fmt.Sprint("many", i), []byte("v"), time.Minute, now)
	}
	if n := len(tb.m); n > 5000 {
		t.Fatalf("%d entries, cap 5000", n)
	}
	if v, ok := tb.get("many9999", now); !ok || string(v) != "v" {
		t.Fatal("the newest entry was dropped")
	}
}

func TestIncrOnValue(t *testing.T) {
	s := NewMemory()
	mustSet(t, s, "a", "not a number", time.Hour)
	if _, err := s.Incr(ctx(t), "a", 1, time.Hour); err == nil {
		t.Fatal("Incr of a non-counter succeeded")
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		spec string
		want string // type, or "" for an error
	}{
		{"file:" + dir + "/state.db", "*state.FileStore"},
		{"memory:", "*state.MemoryStore"},
		{"redis://127.0.0.1:1/0", "*state.RedisStore"}, // nothing listens: still opens
		{"rediss://:secret@127.0.0.1:1/2", "*state.RedisStore"},
		{"file:", ""},
		{"/var/lib/mailgate/state.db", ""},
		{"redis://127.0.0.1:1/notanumber", ""},
	} {
		s, err := Open(tc.spec)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Open(%q) succeeded", tc.spec)
				s.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%q): %v", tc.spec, err)
			continue
		}
		if got := fmt.Sprintf("%T", s); got != tc.want {
			t.Errorf("Open(%q) = %s, want %s", tc.spec, got, tc.want)
		}
		s.Close()
	}
}

func BenchmarkMemoryIncr(b *testing.B) {
	s := NewMemory()
	ctx := b.Context()
	for b.Loop() {
		if _, err := s.Incr(ctx, "rate:1.2.3.4", 1, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
