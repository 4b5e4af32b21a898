package state

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"mailgate/internal/redistest"
)

// backend makes stores for the contract cases. setup runs once per
// backend, in the backend's subtest (so a Redis server outlives its cases);
// the function it returns makes a fresh store for one case, and a function
// that lets time pass for it: a fake clock for memory and file, a real
// sleep for Redis.
type backend struct {
	name  string
	setup func(t *testing.T) func(t *testing.T) (Store, func(time.Duration))
}

// fakeClock is a settable clock for the memory and file stores.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var backends = []backend{
	{"memory", func(*testing.T) func(t *testing.T) (Store, func(time.Duration)) {
		return func(t *testing.T) (Store, func(time.Duration)) {
			c := newClock()
			s := NewMemory()
			s.Now = c.Now
			return s, c.Advance
		}
	}},
	{"file", func(*testing.T) func(t *testing.T) (Store, func(time.Duration)) {
		return func(t *testing.T) (Store, func(time.Duration)) {
			c := newClock()
			s, err := OpenFile(filepath.Join(t.TempDir(), "state.db"))
			if err != nil {
				t.Fatal(err)
			}
			s.Now = c.Now
			t.Cleanup(func() { s.Close() })
			return s, c.Advance
		}
	}},
	{"redis", func(t *testing.T) func(t *testing.T) (Store, func(time.Duration)) {
		url := redistest.StartProcess(t).URL()
		return func(t *testing.T) (Store, func(time.Duration)) {
			s, err := OpenRedis(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s, time.Sleep
		}
	}},
}

// ctx bounds every call in a test.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestContract runs the same cases against every backend: the filters
// must not be able to tell them apart. Keys are per case, so the Redis
// cases can share one server.
func TestContract(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			open := b.setup(t)
			for _, c := range contractCases {
				t.Run(c.name, func(t *testing.T) {
					s, advance := open(t)
					c.run(t, s, t.Name()+":", advance)
				})
			}
		})
	}
}

// ttl is short enough for Redis to expire keys in real time, and long
// enough that a slow machine does not see them expire early.
const ttl = 400 * time.Millisecond

var contractCases = []struct {
	name string
	run  func(t *testing.T, s Store, k string, advance func(time.Duration))
}{
	{"GetMissing", func(t *testing.T, s Store, k string, _ func(time.Duration)) {
		v, ok, err := s.Get(ctx(t), k+"nothing")
		if err != nil || ok || v != nil {
			t.Fatalf("Get missing = %q, %v, %v; want nil, false, nil", v, ok, err)
		}
	}},
	{"SetGet", func(t *testing.T, s Store, k string, _ func(time.Duration)) {
		mustSet(t, s, k+"a", "one", time.Hour)
		wantGet(t, s, k+"a", "one")
		mustSet(t, s, k+"a", "two", time.Hour)
		wantGet(t, s, k+"a", "two")
		mustSet(t, s, k+"empty", "", time.Hour)
		wantGet(t, s, k+"empty", "")
	}},
	{"ValuesAreCopies", func(t *testing.T, s Store, k string, _ func(time.Duration)) {
		in := []byte("abc")
		if err := s.Set(ctx(t), k+"a", in, time.Hour); err != nil {
			t.Fatal(err)
		}
		in[0] = 'X'
		v, _, _ := s.Get(ctx(t), k+"a")
		v[1] = 'Y'
		wantGet(t, s, k+"a", "abc")
	}},
	{"Expiry", func(t *testing.T, s Store, k string, advance func(time.Duration)) {
		mustSet(t, s, k+"a", "v", ttl)
		advance(ttl / 2)
		wantGet(t, s, k+"a", "v")
		advance(ttl)
		wantMissing(t, s, k+"a")
	}},
	{"Add", func(t *testing.T, s Store, k string, advance func(time.Duration)) {
		added, existing, err := s.Add(ctx(t), k+"a", []byte("first"), ttl)
		if err != nil || !added || existing != nil {
			t.Fatalf("Add absent = %v, %q, %v; want true, nil, nil", added, existing, err)
		}
		added, existing, err = s.Add(ctx(t), k+"a", []byte("second"), ttl)
		if err != nil || added || string(existing) != "first" {
			t.Fatalf("Add present = %v, %q, %v; want false, \"first\", nil", added, existing, err)
		}
		wantGet(t, s, k+"a", "first")
		advance(ttl + ttl/2)
		added, _, err = s.Add(ctx(t), k+"a", []byte("third"), ttl)
		if err != nil || !added {
			t.Fatalf("Add after expiry = %v, %v; want true, nil", added, err)
		}
		wantGet(t, s, k+"a", "third")
	}},
	{"Delete", func(t *testing.T, s Store, k string, _ func(time.Duration)) {
		mustSet(t, s, k+"a", "v", time.Hour)
		if err := s.Delete(ctx(t), k+"a"); err != nil {
			t.Fatal(err)
		}
		wantMissing(t, s, k+"a")
		if err := s.Delete(ctx(t), k+"never"); err != nil {
			t.Fatalf("Delete missing: %v", err)
		}
	}},
	{"Incr", func(t *testing.T, s Store, k string, _ func(time.Duration)) {
		for i, want := range []struct{ n, v int64 }{{1, 1}, {1, 2}, {5, 7}, {-2, 5}} {
			got, err := s.Incr(ctx(t), k+"c", want.n, time.Hour)
			if err != nil || got != want.v {
				t.Fatalf("Incr #%d by %d = %d, %v; want %d", i, want.n, got, err, want.v)
			}
		}
	}},
	{"IncrFixedWindow", func(t *testing.T, s Store, k string, advance func(time.Duration)) {
		wantIncr(t, s, k+"c", 1)
		advance(ttl * 3 / 4)
		wantIncr(t, s, k+"c", 2) // does not extend the window
		advance(ttl / 2)
		wantIncr(t, s, k+"c", 1) // a new window
		wantIncr(t, s, k+"c", 2)
	}},
	{"IncrConcurrent", func(t *testing.T, s Store, k string, _ func(time.Duration)) {
		const workers, each = 50, 20
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Go(func() {
				for range each {
					if _, err := s.Incr(ctx(t), k+"c", 1, time.Hour); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		got, err := s.Incr(ctx(t), k+"c", 0, time.Hour)
		if err != nil || got != workers*each {
			t.Fatalf("after %d increments the counter is %d, %v", workers*each, got, err)
		}
	}},
	{"BadArguments", func(t *testing.T, s Store, k string, _ func(time.Duration)) {
		if err := s.Set(ctx(t), k+"a", []byte("v"), 0); err == nil {
			t.Error("Set with ttl 0 succeeded")
		}
		if _, err := s.Incr(ctx(t), k+"c", 1, -time.Second); err == nil {
			t.Error("Incr with a negative window succeeded")
		}
		done, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := s.Get(done, k+"a"); !errors.Is(err, context.Canceled) {
			t.Errorf("Get with a canceled context: %v, want context.Canceled", err)
		}
		if err := s.Set(done, k+"a", []byte("v"), time.Hour); !errors.Is(err, context.Canceled) {
			t.Errorf("Set with a canceled context: %v, want context.Canceled", err)
		}
	}},
}

func mustSet(t *testing.T, s Store, key, v string, ttl time.Duration) {
	t.Helper()
	if err := s.Set(ctx(t), key, []byte(v), ttl); err != nil {
		t.Fatalf("Set %s: %v", key, err)
	}
}

func wantGet(t *testing.T, s Store, key, want string) {
	t.Helper()
	v, ok, err := s.Get(ctx(t), key)
	if err != nil || !ok || !bytes.Equal(v, []byte(want)) {
		t.Fatalf("Get %s = %q, %v, %v; want %q", key, v, ok, err, want)
	}
}

func wantMissing(t *testing.T, s Store, key string) {
	t.Helper()
	v, ok, err := s.Get(ctx(t), key)
	if err != nil || ok {
		t.Fatalf("Get %s = %q, %v, %v; want it absent", key, v, ok, err)
	}
}

func wantIncr(t *testing.T, s Store, key string, want int64) {
	t.Helper()
	got, err := s.Incr(ctx(t), key, 1, ttl)
	if err != nil || got != want {
		t.Fatalf("Incr %s = %d, %v; want %d", key, got, err, want)
	}
}
