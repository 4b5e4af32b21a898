package clamd

import (
	"context"
	"io"
	"net"
	"slices"
	"time"
)

// MaxIdle is how long a session may wait in the pool and still be
// reused; an older one is ended and a new one dialled. clamd closes a
// session that sends nothing for its ReadTimeout (default 120 s, and
// CommandReadTimeout, 30 s, before the first command): MaxIdle stays
// well below both, so a pooled session is not one clamd is closing.
const MaxIdle = 10 * time.Second

// endTimeout bounds the zEND sent to an idle session being closed.
const endTimeout = time.Second

var (
	// cmdSession opens the session with the first request.
	cmdSession  = []byte("zIDSESSION\x00zINSTREAM\x00")
	cmdInstream = []byte("zINSTREAM\x00")
	cmdEnd      = []byte("zEND\x00")
)

// session is a connection to clamd in session mode (zIDSESSION): it
// serves one request at a time, each reply numbered as its request.
type session struct {
	conn net.Conn
	// id is the number of the last request sent: clamd numbers them
	// from 1, and 0 means the session is not open yet.
	id int
	// reused: taken from the pool, so clamd may have closed it meanwhile.
	reused bool
	idleAt time.Time // when it went back to the pool
}

// end closes an idle session the polite way: zEND, then close.
func (s *session) end() {
	_ = s.conn.SetDeadline(time.Now().Add(endTimeout))
	_, _ = s.conn.Write(cmdEnd)
	_ = s.conn.Close()
}

// session returns a session of the pool, or a new connection.
func (c *Client) session(ctx context.Context) (*session, error) {
	if s := c.takeIdle(); s != nil {
		return s, nil
	}
	return c.open(ctx)
}

// open dials clamd. The session itself opens with its first request
// (cmdSession), in the same write.
func (c *Client) open(ctx context.Context) (*session, error) {
	conn, err := c.dial(ctx, c.network, c.address)
	if err != nil {
		return nil, err
	}
	return &session{conn: conn}, nil
}

// takeIdle returns the most recently used idle session that is still
// fit for use; those too old or closed by clamd are closed on the way.
func (c *Client) takeIdle() *session {
	for {
		c.mu.Lock()
		n := len(c.idle)
		if n == 0 {
			c.mu.Unlock()
			return nil
		}
		s := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		c.mu.Unlock()

		switch {
		case time.Since(s.idleAt) > c.maxIdle:
			s.end()
		case c.checkIdle && !idleOpen(s.conn):
			_ = s.conn.Close()
		default:
			s.reused = true
			return s
		}
	}
}

// put returns a session to the pool, which keeps at most as many as
// there are slots, and none once the client is closed. Sessions left
// unused past MaxIdle at the bottom of the pool are ended here: under
// light traffic the pool shrinks to what is used.
func (c *Client) put(s *session) {
	// No deadline while idle: a past one would fail the look at the
	// socket (idleOpen) before its next use.
	_ = s.conn.SetDeadline(time.Time{})
	now := time.Now()
	s.idleAt = now
	var old []*session
	c.mu.Lock()
	for len(c.idle) > 0 && now.Sub(c.idle[0].idleAt) > c.maxIdle {
		old = append(old, c.idle[0])
		c.idle = slices.Delete(c.idle, 0, 1)
	}
	if !c.closed && len(c.idle) < cap(c.slots) {
		c.idle = append(c.idle, s)
		s = nil
	}
	c.mu.Unlock()
	for _, o := range old {
		o.end()
	}
	if s != nil {
		s.end()
	}
}

// Close ends the idle sessions (zEND) and stops keeping sessions: a
// scan running now closes its connection when it is done, and a scan
// started later still works, on a connection of its own. Its owner
// calls it when the client is no longer used (a configuration replaced
// by a reload). It always returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, s := range idle {
		s.end()
	}
	return nil
}

// replay is the message of a scan, read once more if a stale session
// makes it start over. No byte of it is kept: it can start over if
// nothing of it was read yet, or if the reader can go back (rewind).
type replay struct {
	r      io.Reader
	read   bool
	rewind func() error // nil: r cannot go back
}

func newReplay(r io.Reader) *replay {
	return &replay{r: r, rewind: rewinder(r)}
}

func (m *replay) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if n > 0 {
		m.read = true
	}
	return n, err
}

// again readies the message to be sent from its start, and reports
// whether it could.
func (m *replay) again() bool {
	if !m.read {
		return true
	}
	if m.rewind == nil || m.rewind() != nil {
		return false
	}
	m.read = false
	return true
}

// rewinder returns a function that puts r back where it is now, or nil
// when r cannot go back: r must be an io.Seeker, or an *io.LimitedReader
// over one (what the virus filter passes: io.LimitReader of the spooled
// message).
func rewinder(r io.Reader) func() error {
	switch r := r.(type) {
	case io.Seeker:
		at, err := r.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil
		}
		return func() error {
			_, err := r.Seek(at, io.SeekStart)
			return err
		}
	case *io.LimitedReader:
		inner := rewinder(r.R)
		if inner == nil {
			return nil
		}
		n := r.N
		return func() error {
			r.N = n
			return inner()
		}
	}
	return nil
}
