package state

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A restart: what was written is there when the file is opened again.
func TestFileSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	clock := newClock()
	s, _ := OpenFile(path)
	s.Now = clock.Now
	mustSet(t, s, "grey:a", "pending", time.Hour)
	if added, _, err := s.Add(ctx(t), "pass:b", []byte("ok"), time.Hour); err != nil || !added {
		t.Fatalf("Add = %v, %v", added, err)
	}
	mustSet(t, s, "short", "v", time.Minute)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx(t), "grey:a"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Get after Close: %v, want ErrUnavailable", err)
	}

	clock.Advance(2 * time.Minute) // the gateway was down for a while
	s, _ = OpenFile(path)
	s.Now = clock.Now
	defer s.Close()
	wantGet(t, s, "grey:a", "pending")
	wantGet(t, s, "pass:b", "ok")
	wantMissing(t, s, "short")
}

// Only counting needs no file: the state directory may be missing or
// read-only when no filter keeps values.
func TestFileLazyOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "state.db")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	defer s.Close()
	if n, err := s.Incr(ctx(t), "rate:x", 1, time.Minute); err != nil || n != 1 {
		t.Fatalf("Incr = %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Fatalf("Incr touched the state directory: %v", err)
	}
	if err := s.Set(ctx(t), "grey:a", []byte("v"), time.Hour); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Set without a directory: %v, want ErrUnavailable", err)
	}
	if _, _, err := s.Get(ctx(t), "grey:a"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get without a directory: %v, want ErrUnavailable", err)
	}
}

// A second gateway on the same file gets an error, not a hang.
func TestFileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	first, _ := OpenFile(path)
	defer first.Close()
	mustSet(t, first, "a", "v", time.Hour)

	second, _ := OpenFile(path)
	defer second.Close()
	start := time.Now()
	_, _, err := second.Get(ctx(t), "a")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get on a locked file: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Get on a locked file took %v", d)
	}
	// The failure is remembered for a while: no second wait for the lock.
	start = time.Now()
	if _, _, err := second.Get(ctx(t), "a"); !errors.Is(err, ErrUnavailable) || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("second Get on a locked file: %v after %v", err, time.Since(start))
	}
}

// The sweeper's work: expired records leave the file.
func TestFileSweep(t *testing.T) {
	clock := newClock()
	s, _ := OpenFile(filepath.Join(t.TempDir(), "state.db"))
	s.Now = clock.Now
	defer s.Close()
	mustSet(t, s, "old", "v", time.Minute)
	mustSet(t, s, "new", "v", time.Hour)
	clock.Advance(2 * time.Minute)

	db, err := s.open()
	if err != nil {
		t.Fatal(err)
	}
	if err := sweep(db, clock.Now()); err != nil {
		t.Fatal(err)
	}
	var keys []string
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if len(keys) != 1 || keys[0] != "new" {
		t.Fatalf("after the sweep the file holds %q, want [new]", keys)
	}
}

func BenchmarkFileGet(b *testing.B) {
	s, _ := OpenFile(filepath.Join(b.TempDir(), "state.db"))
	defer s.Close()
	ctx := b.Context()
	if err := s.Set(ctx, "grey:1.2.3.4/a@example.org/b@example.com", []byte("1700000000"), time.Hour); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, ok, err := s.Get(ctx, "grey:1.2.3.4/a@example.org/b@example.com"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
