package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailgate/internal/state"
)

var storeOps = [...]string{"get", "set", "add", "delete", "incr"}

const (
	opGet = iota
	opSet
	opAdd
	opDelete
	opIncr
)

// WrapStore returns s counting its failures in state_store_errors_total.
// A caller that gave up (context canceled) is not a store failure; a
// deadline exceeded is: the store was too slow.
func (m *Metrics) WrapStore(s state.Store) state.Store {
	cs := &countingStore{Store: s}
	for i, op := range storeOps {
		cs.errs[i] = m.storeErrors.WithLabelValues(op)
	}
	return cs
}

type countingStore struct {
	state.Store
	errs [len(storeOps)]prometheus.Counter
}

func (s *countingStore) count(op int, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		s.errs[op].Inc()
	}
}

func (s *countingStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, ok, err := s.Store.Get(ctx, key)
	s.count(opGet, err)
	return v, ok, err
}

func (s *countingStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	err := s.Store.Set(ctx, key, value, ttl)
	s.count(opSet, err)
	return err
}

func (s *countingStore) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, []byte, error) {
	added, existing, err := s.Store.Add(ctx, key, value, ttl)
	s.count(opAdd, err)
	return added, existing, err
}

func (s *countingStore) Delete(ctx context.Context, key string) error {
	err := s.Store.Delete(ctx, key)
	s.count(opDelete, err)
	return err
}

func (s *countingStore) Incr(ctx context.Context, key string, n int64, window time.Duration) (int64, error) {
	v, err := s.Store.Incr(ctx, key, n, window)
	s.count(opIncr, err)
	return v, err
}
