package state

import (
	"context"
	"time"
)

// maxEntries bounds an in-memory table (about 100 MB of short keys);
// past it, a tenth of the entries are forgotten (see table.put).
const maxEntries = 1_000_000

// MemoryStore keeps the state in this process only: for tests and for
// `mailgate explain`. Its semantics are those of the other backends.
type MemoryStore struct {
	// Now is the clock, for tests of expiry; nil means time.Now. Set it
	// before the first use.
	Now func() time.Time

	t *table
}

// NewMemory returns an empty in-process store.
func NewMemory() *MemoryStore {
	return &MemoryStore{t: newTable(maxEntries)}
}

func (s *MemoryStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *MemoryStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	v, ok := s.t.get(key, s.now())
	return v, ok, nil
}

func (s *MemoryStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := check(ctx, ttl); err != nil {
		return err
	}
	s.t.set(key, value, ttl, s.now())
	return nil
}

func (s *MemoryStore) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, []byte, error) {
	if err := check(ctx, ttl); err != nil {
		return false, nil, err
	}
	added, existing := s.t.add(key, value, ttl, s.now())
	return added, existing, nil
}

func (s *MemoryStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.t.delete(key)
	return nil
}

func (s *MemoryStore) Incr(ctx context.Context, key string, n int64, window time.Duration) (int64, error) {
	if err := check(ctx, window); err != nil {
		return 0, err
	}
	return s.t.incr(key, n, window, s.now())
}

// Close does nothing: the state lives as long as the value.
func (s *MemoryStore) Close() error { return nil }
