package clamd

import (
	"context"
	"net"
	"time"
)

// Hooks for the tests of package clamd_test.

// SetDial replaces how c connects to clamd.
func SetDial(c *Client, dial func(ctx context.Context, network, address string) (net.Conn, error)) {
	c.dial = dial
}

// SetMaxIdle replaces MaxIdle for c.
func SetMaxIdle(c *Client, d time.Duration) { c.maxIdle = d }

// SetCheckIdle turns the look at an idle session before its reuse on or
// off (off: a stale session is found by the scan, and retried).
func SetCheckIdle(c *Client, on bool) { c.checkIdle = on }

// IdleSessions is the number of sessions in c's pool.
func IdleSessions(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle)
}
