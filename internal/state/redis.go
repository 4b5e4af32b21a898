package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// KeyPrefix is put before every key in Redis, so the gateways can share a
// Redis database with other applications.
const KeyPrefix = "mailgate:"

// RedisStore is the store shared by several gateways: a retry that lands
// on another MX finds the greylist entry the first one wrote.
//
// Timeouts are short (dial 2 s, read and write 1 s, one retry) so that a
// Redis that is down costs a session about a second, after which the
// caller applies its failure policy. Any error other than "no such key"
// wraps ErrUnavailable.
type RedisStore struct {
	c *redis.Client
}

// Both scripts run atomically in Redis, so two gateways racing on the same
// key see one outcome.
var (
	// addScript: SET NX that also returns the value it did not replace.
	addScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`)
	// incrScript: INCRBY that starts the window when it creates the
	// counter (PTTL -1: a key without expiry).
	incrScript = redis.NewScript(`
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n`)
)

// OpenRedis returns the store at a URL redis://[[user]:password@]host:port/db
// or rediss://... (TLS). It fails only on a malformed URL: a Redis that is
// down at start is reported by each call, so the gateway starts and
// applies its failure policy. Timeouts given in the URL's query
// (dial_timeout, read_timeout, ...) override the defaults.
func OpenRedis(rawURL string) (*RedisStore, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		// url.Error repeats the URL, which may hold a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("state: bad redis URL: %v", err)
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = 2 * time.Second
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = time.Second
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = time.Second
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = 1
	}
	opt.DialerRetries = 1 // a refused connection is not worth retrying at once
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true // CLIENT SETINFO needs Redis 7.2
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return &RedisStore{c: redis.NewClient(opt)}, nil
}

// unavailable wraps a Redis error; both it and ErrUnavailable match.
func unavailable(err error) error {
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// ms is d in whole milliseconds, rounded up: Redis's PX unit.
func ms(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func (s *RedisStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := s.c.Get(ctx, KeyPrefix+key).Bytes()
	switch {
	case err == redis.Nil:
		return nil, false, nil
	case err != nil:
		return nil, false, unavailable(err)
	}
	return v, true, nil
}

func (s *RedisStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := check(ctx, ttl); err != nil {
		return err
	}
	if err := s.c.Do(ctx, "SET", KeyPrefix+key, value, "PX", ms(ttl)).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

func (s *RedisStore) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, []byte, error) {
	if err := check(ctx, ttl); err != nil {
		return false, nil, err
	}
	v, err := addScript.Run(ctx, s.c, []string{KeyPrefix + key}, value, ms(ttl)).Text()
	switch {
	case err == redis.Nil:
		return true, nil, nil
	case err != nil:
		return false, nil, unavailable(err)
	}
	return false, []byte(v), nil
}

func (s *RedisStore) Delete(ctx context.Context, key string) error {
	if err := s.c.Del(ctx, KeyPrefix+key).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

func (s *RedisStore) Incr(ctx context.Context, key string, n int64, window time.Duration) (int64, error) {
	if err := check(ctx, window); err != nil {
		return 0, err
	}
	v, err := incrScript.Run(ctx, s.c, []string{KeyPrefix + key}, n, ms(window)).Int64()
	if err != nil {
		return 0, unavailable(err)
	}
	return v, nil
}

// Ping checks that Redis answers, for the gateway's readiness probe.
func (s *RedisStore) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

// Close closes the connections.
func (s *RedisStore) Close() error { return s.c.Close() }

// RedisLogger sends go-redis's own messages (pool dial failures) to log
// instead of standard error. go-redis has one global logger: main sets it.
type RedisLogger struct{ Log *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l RedisLogger) Printf(_ context.Context, format string, v ...any) {
	l.Log.Debug("redis: " + fmt.Sprintf(format, v...))
}
