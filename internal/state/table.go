package state

import (
	"fmt"
	"strconv"
	"sync"
	"time"
)

// table is an in-memory map with per-key expiry: the whole MemoryStore,
// and the FileStore's counters. Expired entries are invisible at once and
// removed in bulk when the map has doubled since the last sweep, so memory
// stays proportional to the live entries without a background goroutine.
type table struct {
	mu      sync.Mutex
	m       map[string]entry
	max     int // hard cap on entries
	sweepAt int // sweep expired entries when len(m) reaches this
}

type entry struct {
	v   []byte
	exp int64 // unix nanoseconds
}

// minSweep is the map size below which expired entries are not swept.
const minSweep = 1024

func newTable(max int) *table {
	return &table{m: make(map[string]entry), max: max, sweepAt: minSweep}
}

func (t *table) get(key string, now time.Time) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[key]
	if !ok || e.exp <= now.UnixNano() {
		return nil, false
	}
	return clone(e.v), true
}

func (t *table) set(key string, v []byte, ttl time.Duration, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.put(key, entry{v: clone(v), exp: now.Add(ttl).UnixNano()}, now)
}

func (t *table) add(key string, v []byte, ttl time.Duration, now time.Time) (bool, []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[key]; ok && e.exp > now.UnixNano() {
		return false, clone(e.v)
	}
	t.put(key, entry{v: clone(v), exp: now.Add(ttl).UnixNano()}, now)
	return true, nil
}

func (t *table) delete(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, key)
}

// incr keeps the counter as decimal text, as Redis does, so Get of a
// counter reads the same on every backend that shares keys.
func (t *table) incr(key string, n int64, window time.Duration, now time.Time) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[key]
	if !ok || e.exp <= now.UnixNano() {
		t.put(key, entry{v: strconv.AppendInt(nil, n, 10), exp: now.Add(window).UnixNano()}, now)
		return n, nil
	}
	c, err := strconv.ParseInt(string(e.v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("state: %q is not a counter", key)
	}
	c += n
	e.v = strconv.AppendInt(e.v[:0], c, 10)
	t.m[key] = e
	return c, nil
}

// put stores e, first making room when the map is due for a sweep or full.
func (t *table) put(key string, e entry, now time.Time) {
	if _, exists := t.m[key]; !exists && len(t.m) >= t.sweepAt {
		t.sweep(now)
		t.sweepAt = max(2*len(t.m), minSweep)
		// Full of live entries: forget a tenth of them (map order is
		// random). For rate windows that is a reset, not a failure.
		if len(t.m) >= t.max {
			drop := t.max / 10
			for k := range t.m {
				if drop <= 0 {
					break
				}
				delete(t.m, k)
				drop--
			}
		}
		t.sweepAt = min(t.sweepAt, t.max)
	}
	t.m[key] = e
}

func (t *table) sweep(now time.Time) {
	n := now.UnixNano()
	for k, e := range t.m {
		if e.exp <= n {
			delete(t.m, k)
		}
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append([]byte(nil), b...)
}
