package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestDryRunLeavesStoreUnchanged(t *testing.T) {
	c := context.Background()
	base := NewMemory()
	mustSet(t, base, "kept", "base", time.Hour)
	mustSet(t, base, "gone", "base", time.Hour)
	if _, err := base.Incr(c, "count", 5, time.Hour); err != nil {
		t.Fatal(err)
	}
	d := NewDryRun(base)

	wantGet(t, d, "kept", "base")
	if added, existing, err := d.Add(c, "kept", []byte("new"), time.Hour); err != nil || added || string(existing) != "base" {
		t.Fatalf("Add over a real key: %v %q %v", added, existing, err)
	}
	if added, _, err := d.Add(c, "fresh", []byte("dry"), time.Hour); err != nil || !added {
		t.Fatalf("Add of a new key: %v %v", added, err)
	}
	wantGet(t, d, "fresh", "dry") // the dry run sees its own writes
	if added, existing, _ := d.Add(c, "fresh", []byte("again"), time.Hour); added || string(existing) != "dry" {
		t.Fatalf("second Add: %v %q", added, existing)
	}
	if err := d.Delete(c, "gone"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, d, "gone")
	wantIncr(t, d, "count", 6) // from the real counter on
	wantIncr(t, d, "count", 7)
	wantIncr(t, d, "new-count", 1)

	// Nothing reached the real store.
	wantGet(t, base, "kept", "base")
	wantGet(t, base, "gone", "base")
	wantMissing(t, base, "fresh")
	wantMissing(t, base, "new-count")
	wantGet(t, base, "count", "5")

	want := []string{"set fresh", "delete gone", "incr count", "incr count", "incr new-count"}
	if got := d.Writes(); !slices.Equal(got, want) {
		t.Errorf("Writes() = %q, want %q", got, want)
	}
}

func TestDryRunFileReadOnly(t *testing.T) {
	c := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")

	// A missing file is an empty store, and is not created.
	d, err := OpenDryRun("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	wantMissing(t, d, "grey:x")
	if added, _, err := d.Add(c, "grey:x", []byte("1"), time.Hour); err != nil || !added {
		t.Fatalf("Add: %v %v", added, err)
	}
	d.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the dry run created the file: %v", err)
	}

	fs, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, fs, "greypass:x", "1", time.Hour)
	fs.Close()
	info, _ := os.Stat(path)

	d, err = OpenDryRun("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	wantGet(t, d, "greypass:x", "1")
	if err := d.Set(c, "grey:y", []byte("1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	wantGet(t, d, "grey:y", "1")
	d.Close()
	if after, _ := os.Stat(path); !after.ModTime().Equal(info.ModTime()) || after.Size() != info.Size() {
		t.Errorf("the dry run wrote the file")
	}
	fs, _ = OpenFile(path)
	defer fs.Close()
	wantMissing(t, fs, "grey:y")

	// A gateway holding the file: the dry run's reads fail as
	// unavailable (filters apply their failure policy), without hanging.
	d, _ = OpenDryRun("file:" + path)
	defer d.Close()
	start := time.Now()
	if _, _, err := d.Get(c, "greypass:x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get of a locked file: %v, want ErrUnavailable", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("waited %v for the lock", time.Since(start))
	}
}
