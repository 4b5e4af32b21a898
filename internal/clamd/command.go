package clamd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	lib "github.com/baruwa-enterprise/clamd"
)

// commandTimeout bounds PING and VERSION when ctx has no earlier
// deadline.
const commandTimeout = 5 * time.Second

// Ping asks clamd whether it is up (PING, PONG). It does not take a scan
// slot: a busy clamd is still up.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.command(ctx, "PING", func(ctx context.Context, l *lib.Client) (string, error) {
		ok, err := l.Ping(ctx)
		if err == nil && !ok {
			err = errors.New("no PONG")
		}
		return "", err
	})
	return err
}

// Version returns clamd's version and signature database version, e.g.
// "ClamAV 1.4.6/27462/Mon Nov 23 09:28:45 2026", for logs and checks.
func (c *Client) Version(ctx context.Context) (string, error) {
	return c.command(ctx, "VERSION", func(ctx context.Context, l *lib.Client) (string, error) {
		return l.Version(ctx)
	})
}

// command runs one short library command within ctx (default 5 s). The
// library's context bounds only its dial and its timeouts are per read,
// so the call runs aside and we return at the deadline whatever it does;
// its own timeouts, set to the time left, end it soon after.
func (c *Client) command(ctx context.Context, name string, call func(context.Context, *lib.Client) (string, error)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	dl, _ := ctx.Deadline()
	left := time.Until(dl)
	if left <= 0 {
		return "", fmt.Errorf("clamd: %s: %w", name, context.DeadlineExceeded)
	}
	// A client per call: the library checks at creation that a unix
	// socket exists, and clamd may have started (or gone) since.
	l, err := lib.NewClient(c.network, c.address)
	if err != nil {
		return "", fmt.Errorf("clamd: %s: %w", name, err)
	}
	l.SetConnRetries(0)
	l.SetConnTimeout(left)
	l.SetCmdTimeout(left)
	type result struct {
		s   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := call(ctx, l)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			// The library's timeouts are set to the deadline: its own
			// timeout and ours are the same event.
			var ne net.Error
			if errors.As(r.err, &ne) && ne.Timeout() {
				return "", fmt.Errorf("clamd: %s: %w (%v)", name, context.DeadlineExceeded, r.err)
			}
			return "", fmt.Errorf("clamd: %s: %w", name, r.err)
		}
		return r.s, nil
	case <-ctx.Done():
		return "", fmt.Errorf("clamd: %s: %w", name, ctx.Err())
	}
}
