package state

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"mailgate/internal/redistest"
)

func openRedis(t testing.TB, url string) *RedisStore {
	t.Helper()
	s, err := OpenRedis(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Two gateways on one Redis: a retry that lands on the other MX is
// recognised, and a race on a key has one winner.
func TestRedisTwoGateways(t *testing.T) {
	url := redistest.StartProcess(t).URL()
	a, b := openRedis(t, url), openRedis(t, url)

	mustSet(t, a, "grey:t", "first-seen", time.Hour)
	wantGet(t, b, "grey:t", "first-seen")
	if err := b.Delete(ctx(t), "grey:t"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, a, "grey:t")

	wins := make(chan string, 2)
	var wg sync.WaitGroup
	for name, s := range map[string]*RedisStore{"a": a, "b": b} {
		wg.Go(func() {
			added, _, err := s.Add(ctx(t), "race", []byte(name), time.Hour)
			if err != nil {
				t.Error(err)
			}
			if added {
				wins <- name
			}
		})
	}
	wg.Wait()
	close(wins)
	var winners []string
	for w := range wins {
		winners = append(winners, w)
	}
	if len(winners) != 1 {
		t.Fatalf("Add race winners: %v, want exactly one", winners)
	}
	wantGet(t, a, "race", winners[0])

	if _, err := a.Incr(ctx(t), "rate:x", 3, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Incr(ctx(t), "rate:x", 1, time.Hour); err != nil || n != 4 {
		t.Fatalf("Incr on the other gateway = %d, %v; want 4", n, err)
	}
}

// Keys live under KeyPrefix, out of the way of other users of the database.
func TestRedisKeyPrefix(t *testing.T) {
	addr := redistest.Start(t)
	s := openRedis(t, "redis://"+addr+"/3")
	mustSet(t, s, "grey:k", "v", time.Hour)

	raw := redis.NewClient(&redis.Options{Addr: addr, DB: 3})
	defer raw.Close()
	keys, err := raw.Keys(ctx(t), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != KeyPrefix+"grey:k" {
		t.Fatalf("keys in Redis: %q, want [%sgrey:k]", keys, KeyPrefix)
	}
	if ms, err := raw.PTTL(ctx(t), keys[0]).Result(); err != nil || ms <= 59*time.Minute {
		t.Fatalf("PTTL = %v, %v; want about an hour", ms, err)
	}
}

// Redis going down: every call fails soon with ErrUnavailable, so the
// filter applies its failure policy; once Redis is back, calls work again.
func TestRedisDown(t *testing.T) {
	r := redistest.StartProcess(t)
	s := openRedis(t, r.URL())
	mustSet(t, s, "a", "v", time.Hour)

	r.Stop()
	calls := map[string]func(context.Context) error{
		"Get":    func(c context.Context) error { _, _, err := s.Get(c, "a"); return err },
		"Set":    func(c context.Context) error { return s.Set(c, "a", []byte("v"), time.Hour) },
		"Add":    func(c context.Context) error { _, _, err := s.Add(c, "a", []byte("v"), time.Hour); return err },
		"Delete": func(c context.Context) error { return s.Delete(c, "a") },
		"Incr":   func(c context.Context) error { _, err := s.Incr(c, "c", 1, time.Hour); return err },
		"Ping":   s.Ping,
	}
	for name, call := range calls {
		start := time.Now()
		err := call(ctx(t))
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with Redis down: %v, want ErrUnavailable", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s with Redis down took %v", name, d)
		}
	}

	r.Start()
	// The client reconnects on its own; Redis restarted empty.
	deadline := time.Now().Add(5 * time.Second)
	for s.Ping(ctx(t)) != nil {
		if time.Now().After(deadline) {
			t.Fatal("no connection to the restarted Redis")
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantMissing(t, s, "a")
	mustSet(t, s, "a", "again", time.Hour)
	wantGet(t, s, "a", "again")
}

// A Redis that is down at start does not stop the gateway from starting.
func TestRedisDownAtStart(t *testing.T) {
	r := redistest.StartProcess(t)
	r.Stop()
	s := openRedis(t, r.URL())
	if _, err := s.Incr(ctx(t), "c", 1, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Incr: %v, want ErrUnavailable", err)
	}
	r.Start()
	if n, err := s.Incr(ctx(t), "c", 1, time.Minute); err != nil || n != 1 {
		t.Fatalf("Incr after Redis came up = %d, %v", n, err)
	}
}

// A caller's deadline shorter than the client's timeouts wins.
func TestRedisHonoursDeadline(t *testing.T) {
	r := redistest.StartProcess(t)
	s := openRedis(t, r.URL())
	// A server that accepts but never answers: SIGSTOP would do, a
	// blocking command on our own connection is simpler.
	c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.c.Do(c, "BLPOP", KeyPrefix+"never", 5).Err()
	if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("BLPOP past the deadline: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a 100ms deadline took %v", d)
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

func TestOpenRedisHidesPassword(t *testing.T) {
	_, err := OpenRedis("redis://:hunter2@127.0.0.1:6379/x%zz")
	if err == nil {
		t.Fatal("malformed URL accepted")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error reveals the password: %v", err)
	}
}

func BenchmarkRedisIncr(b *testing.B) {
	s := openRedis(b, redistest.StartProcess(b).URL())
	ctx := b.Context()
	for b.Loop() {
		if _, err := s.Incr(ctx, "rate:1.2.3.4", 1, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
