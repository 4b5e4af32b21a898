package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DryRun is a read-only view of a store, for `mailgate explain`: reads go
// to the real store, writes stay in memory in the DryRun. A dry-run
// session therefore sees what a real one would (the greylist triplet
// recorded by an earlier real session, a rate counter near its limit, and
// what it wrote itself a moment ago) without changing the shared state:
// explaining twice gives the same answer twice.
type DryRun struct {
	base Store
	mem  *MemoryStore

	mu      sync.Mutex
	deleted map[string]bool
	writes  []string
}

// NewDryRun returns a dry-run view of base. Closing it closes base.
func NewDryRun(base Store) *DryRun {
	return &DryRun{base: base, mem: NewMemory(), deleted: map[string]bool{}}
}

// OpenDryRun opens the store named by spec (see Open) for a dry run. A
// file store is opened read-only and only if it exists, so a dry run
// never creates or locks it for writing. While a gateway runs on the same
// file, bbolt's lock keeps the file from being read: reads then fail with
// ErrUnavailable and the filters apply their failure policy.
func OpenDryRun(spec string) (*DryRun, error) {
	if path, ok := strings.CutPrefix(spec, "file:"); ok && path != "" {
		return NewDryRun(&readOnlyFile{path: path}), nil
	}
	base, err := Open(spec)
	if err != nil {
		return nil, err
	}
	return NewDryRun(base), nil
}

// Writes lists the writes that were kept out of the real store, in
// order ("add grey:...", "incr rate:... +1").
func (d *DryRun) Writes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.writes...)
}

func (d *DryRun) note(op, key string) {
	d.mu.Lock()
	d.writes = append(d.writes, op+" "+key)
	d.mu.Unlock()
}

// local reports whether the overlay decides about key: written or
// deleted during the dry run.
func (d *DryRun) local(ctx context.Context, key string) ([]byte, bool, bool) {
	d.mu.Lock()
	deleted := d.deleted[key]
	d.mu.Unlock()
	if v, ok, _ := d.mem.Get(ctx, key); ok {
		return v, true, true
	}
	return nil, false, deleted
}

func (d *DryRun) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if v, ok, decided := d.local(ctx, key); ok || decided {
		return v, ok, nil
	}
	return d.base.Get(ctx, key)
}

func (d *DryRun) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := d.mem.Set(ctx, key, value, ttl); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.deleted, key)
	d.mu.Unlock()
	d.note("set", key)
	return nil
}

func (d *DryRun) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, []byte, error) {
	if err := check(ctx, ttl); err != nil {
		return false, nil, err
	}
	v, ok, err := d.Get(ctx, key)
	if err != nil {
		return false, nil, err
	}
	if ok {
		return false, v, nil
	}
	return true, nil, d.Set(ctx, key, value, ttl)
}

func (d *DryRun) Delete(ctx context.Context, key string) error {
	if err := d.mem.Delete(ctx, key); err != nil {
		return err
	}
	d.mu.Lock()
	d.deleted[key] = true
	d.mu.Unlock()
	d.note("delete", key)
	return nil
}

// Incr starts from the real store's counter (counters read as decimal
// text on the shared backends; a file store's counters live in the
// gateway's memory and read as absent) and counts on in memory.
func (d *DryRun) Incr(ctx context.Context, key string, n int64, window time.Duration) (int64, error) {
	if err := check(ctx, window); err != nil {
		return 0, err
	}
	if _, ok, decided := d.local(ctx, key); !ok && !decided {
		v, ok, err := d.base.Get(ctx, key)
		if err != nil {
			return 0, err
		}
		if ok {
			if c, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				n += c
			}
		}
	}
	c, err := d.mem.Incr(ctx, key, n, window)
	if err == nil {
		d.note("incr", key)
	}
	return c, err
}

// Close closes the real store.
func (d *DryRun) Close() error { return d.base.Close() }

// readOnlyFile reads a FileStore's file without ever writing it. Only Get
// is used (by DryRun); the writes fail.
type readOnlyFile struct {
	path string

	mu     sync.Mutex
	db     *bolt.DB
	err    error
	opened bool
}

var errReadOnly = errors.New("state: read-only store")

func (s *readOnlyFile) open() (*bolt.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opened {
		return s.db, s.err
	}
	s.opened = true
	if _, err := os.Stat(s.path); errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing recorded yet: every key is absent
	}
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		s.err = fmt.Errorf("%w: open %s read-only (is a gateway running on it?): %w", ErrUnavailable, s.path, err)
		return nil, s.err
	}
	s.db = db
	return db, nil
}

func (s *readOnlyFile) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	db, err := s.open()
	if err != nil || db == nil {
		return nil, false, err
	}
	var value []byte
	var ok bool
	err = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucket); b != nil {
			value, ok = live(b.Get([]byte(key)), time.Now())
			value = clone(value)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return value, ok, nil
}

func (s *readOnlyFile) Set(context.Context, string, []byte, time.Duration) error { return errReadOnly }
func (s *readOnlyFile) Add(context.Context, string, []byte, time.Duration) (bool, []byte, error) {
	return false, nil, errReadOnly
}
func (s *readOnlyFile) Delete(context.Context, string) error { return errReadOnly }
func (s *readOnlyFile) Incr(context.Context, string, int64, time.Duration) (int64, error) {
	return 0, errReadOnly
}

func (s *readOnlyFile) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		return s.db.Close()
	}
	return nil
}
