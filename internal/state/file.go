package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileStore is the embedded store of a single gateway: a bbolt file.
//
// Values are written with their expiry; an expired entry reads as absent
// and a sweeper deletes it every few minutes. Concurrent writes share one
// fsync (bolt's Batch).
//
// Counters (Incr) are kept in memory, not in the file: they are rate-limit
// windows of seconds to an hour, losing them on a restart is harmless, and
// an fsync per connection would be far too slow. A counter key is therefore
// not visible to Get; use a key either as a counter or as a value.
//
// The file is opened on the first Get, Set, Add or Delete, so a gateway
// that only counts needs no writable state directory. bolt locks the file:
// a second process gets an error after a second instead of hanging.
type FileStore struct {
	// Now is the clock, for tests of expiry; nil means time.Now. Set it
	// before the first use.
	Now func() time.Time

	path     string
	counters *table

	mu      sync.Mutex // guards the fields below
	db      *bolt.DB
	openErr error     // last failure to open, returned until retryAt
	retryAt time.Time // so a locked or unwritable file does not stall every call
	closed  bool
	stop    chan struct{} // closed by Close: ends the sweeper
	swept   chan struct{} // closed by the sweeper when it ends
}

var bucket = []byte("state")

// Timing of the file store.
const (
	sweepEvery   = 3 * time.Minute
	lockTimeout  = time.Second      // wait for another process's file lock
	reopenPeriod = 10 * time.Second // after a failed open, fail fast this long
)

// OpenFile returns the store kept in the file at path. It does not touch
// the file yet; see FileStore.
func OpenFile(path string) (*FileStore, error) {
	if path == "" {
		return nil, errors.New("state: empty file path")
	}
	return &FileStore{path: path, counters: newTable(maxEntries)}, nil
}

func (s *FileStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// open returns the database, opening it on first use.
func (s *FileStore) open() (*bolt.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, fmt.Errorf("%w: %s is closed", ErrUnavailable, s.path)
	case s.db != nil:
		return s.db, nil
	case s.openErr != nil && time.Now().Before(s.retryAt):
		return nil, s.openErr
	}
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucket)
			return err
		})
		if err != nil {
			db.Close()
		}
	}
	if err != nil {
		s.openErr = fmt.Errorf("%w: open %s: %w", ErrUnavailable, s.path, err)
		s.retryAt = time.Now().Add(reopenPeriod)
		return nil, s.openErr
	}
	s.db, s.openErr = db, nil
	s.stop, s.swept = make(chan struct{}), make(chan struct{})
	go s.sweeper(db, s.stop, s.swept)
	return db, nil
}

// encode prefixes value with its expiry in unix nanoseconds.
func encode(value []byte, exp time.Time) []byte {
	b := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(b, uint64(exp.UnixNano()))
	copy(b[8:], value)
	return b
}

// live returns the value in a stored record, or false if it has expired
// (or is not a record of ours).
func live(rec []byte, now time.Time) ([]byte, bool) {
	if len(rec) < 8 || int64(binary.BigEndian.Uint64(rec)) <= now.UnixNano() {
		return nil, false
	}
	return rec[8:], true
}

func (s *FileStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	db, err := s.open()
	if err != nil {
		return nil, false, err
	}
	var value []byte
	var ok bool
	err = db.View(func(tx *bolt.Tx) error {
		value, ok = live(tx.Bucket(bucket).Get([]byte(key)), s.now())
		value = clone(value) // bolt's memory is valid only inside the transaction
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !ok {
		return nil, false, nil
	}
	return value, true, nil
}

// update runs fn in a write transaction batched with concurrent writers.
// Batch may run fn more than once, so fn must only set its results.
func (s *FileStore) update(fn func(b *bolt.Bucket) error) error {
	db, err := s.open()
	if err != nil {
		return err
	}
	if err := db.Batch(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucket)) }); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

func (s *FileStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := check(ctx, ttl); err != nil {
		return err
	}
	rec := encode(value, s.now().Add(ttl))
	return s.update(func(b *bolt.Bucket) error {
		return b.Put([]byte(key), rec)
	})
}

func (s *FileStore) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, []byte, error) {
	if err := check(ctx, ttl); err != nil {
		return false, nil, err
	}
	now := s.now()
	rec := encode(value, now.Add(ttl))
	var added bool
	var existing []byte
	err := s.update(func(b *bolt.Bucket) error {
		if v, ok := live(b.Get([]byte(key)), now); ok {
			added, existing = false, clone(v)
			return nil
		}
		added, existing = true, nil
		return b.Put([]byte(key), rec)
	})
	if err != nil {
		return false, nil, err
	}
	return added, existing, nil
}

func (s *FileStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(func(b *bolt.Bucket) error {
		return b.Delete([]byte(key))
	})
}

func (s *FileStore) Incr(ctx context.Context, key string, n int64, window time.Duration) (int64, error) {
	if err := check(ctx, window); err != nil {
		return 0, err
	}
	return s.counters.incr(key, n, window, s.now())
}

// sweeper deletes expired records until stop is closed.
func (s *FileStore) sweeper(db *bolt.DB, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			// A failure is retried at the next tick; reads ignore
			// expired records meanwhile.
			_ = sweep(db, s.now())
		}
	}
}

// sweep deletes the records expired at now. Keys are collected first:
// deleting under a bolt cursor can skip the next key.
func sweep(db *bolt.DB, now time.Time) error {
	return db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var expired [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if _, ok := live(v, now); !ok {
				expired = append(expired, clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close stops the sweeper and closes the file. Later calls of Get, Set,
// Add and Delete fail; counters live on in memory.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.db == nil {
		return nil
	}
	close(s.stop)
	<-s.swept
	return s.db.Close()
}
