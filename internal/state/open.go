package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Open opens the store named by the config's state.store:
//
//	file:/var/lib/mailgate/state.db   embedded, one gateway (OpenFile)
//	redis://[:password@]host:port/db  shared by several gateways (OpenRedis)
//	rediss://...                      the same over TLS
//	memory:                           this process only (tests, explain)
func Open(spec string) (Store, error) {
	switch {
	case strings.HasPrefix(spec, "file:"):
		path := strings.TrimPrefix(spec, "file:")
		if path == "" {
			return nil, errors.New("state: file: needs a path, e.g. file:/var/lib/mailgate/state.db")
		}
		return OpenFile(path)
	case strings.HasPrefix(spec, "redis://"), strings.HasPrefix(spec, "rediss://"):
		return OpenRedis(spec)
	case spec == "memory:" || spec == "memory":
		return NewMemory(), nil
	}
	return nil, fmt.Errorf("state: unknown store %q: want memory:, file:/path/state.db, redis://host:port/db or rediss://host:port/db", spec)
}

// check rejects a call that cannot succeed: a done context, or a TTL that
// would make the entry expire before it is written.
func check(ctx context.Context, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("state: ttl %v is not positive", ttl)
	}
	return nil
}
