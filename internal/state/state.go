// Package state is the gateway's shared state store: greylisting triplets,
// passed clients and windowed counters for rate limits. One small interface
// with two backends: an embedded file (bbolt) for a single gateway, and
// Redis for several gateways behind several MX records, so a retry that
// lands on another gateway is recognised.
package state

import (
	"context"
	"errors"
	"time"
)

// Store is the state shared by the filters. Keys are short ASCII strings
// chosen by the filters ("grey:...", "rate:..."); values are small.
// Every method honours the context's deadline. A backend that cannot be
// reached returns an error wrapping ErrUnavailable, and the caller applies
// its failure policy (SPEC §5).
type Store interface {
	// Get returns the value of key, and whether it exists (and has not
	// expired).
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	// Set stores value under key for ttl (ttl > 0).
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Add stores value under key for ttl only if key does not exist. It
	// reports whether it stored it; when it did not, it returns the value
	// that is there.
	Add(ctx context.Context, key string, value []byte, ttl time.Duration) (added bool, existing []byte, err error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Incr adds n to the counter key and returns the new value. A counter
	// that did not exist starts at 0 and expires window after its creation
	// (a fixed window). A key is used either as a counter or with
	// Get/Set/Add, never both (the file backend keeps counters apart).
	Incr(ctx context.Context, key string, n int64, window time.Duration) (int64, error)
	// Close releases the store.
	Close() error
}

// ErrUnavailable is wrapped by errors from a backend that cannot be
// reached (Redis down, file not writable).
var ErrUnavailable = errors.New("state store unavailable")
