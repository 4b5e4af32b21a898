package upstream

import (
	"bytes"
	"io"
	"net"
	"sync"
	"time"
)

// aLongTimeAgo is a deadline in the past: setting it aborts pending I/O.
var aLongTimeAgo = time.Unix(1, 0)

// limitConn is the TCP connection under everything else (TLS, go-smtp's
// client). go-smtp sets its own deadlines from Client.CommandTimeout and
// SubmissionTimeout and clears them after each command; limitConn clamps
// every deadline anyone sets to the current call's limit (the context
// deadline or command timeout) and, once interrupted (context cancelled),
// keeps the deadline in the past so that nothing can re-arm it.
//
// It also notes whether any I/O failed, so a Conn knows it is broken.
type limitConn struct {
	net.Conn

	mu          sync.Mutex
	limit       time.Time // zero: none
	interrupted bool
	rd, wd      time.Time // deadlines requested by the layers above
	ioErr       error     // first read/write error
	active      bool      // Read or Write was called
}

func newLimitConn(c net.Conn) *limitConn { return &limitConn{Conn: c} }

func (c *limitConn) Read(p []byte) (int, error) {
	c.note(nil)
	n, err := c.Conn.Read(p)
	if err != nil {
		c.note(err)
	}
	return n, err
}

func (c *limitConn) Write(p []byte) (int, error) {
	c.note(nil)
	n, err := c.Conn.Write(p)
	if err != nil {
		c.note(err)
	}
	return n, err
}

// note records activity and the first I/O error.
func (c *limitConn) note(err error) {
	c.mu.Lock()
	c.active = true
	if c.ioErr == nil {
		c.ioErr = err
	}
	c.mu.Unlock()
}

// effective is the deadline to apply for a requested one. Called with mu.
func (c *limitConn) effective(t time.Time) time.Time {
	if c.interrupted {
		return aLongTimeAgo
	}
	if !c.limit.IsZero() && (t.IsZero() || c.limit.Before(t)) {
		return c.limit
	}
	return t
}

// apply sets both deadlines on the real connection. Called with mu.
func (c *limitConn) apply() {
	c.Conn.SetReadDeadline(c.effective(c.rd))
	c.Conn.SetWriteDeadline(c.effective(c.wd))
}

func (c *limitConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd, c.wd = t, t
	if err := c.Conn.SetReadDeadline(c.effective(t)); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(c.effective(t))
}

func (c *limitConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd = t
	return c.Conn.SetReadDeadline(c.effective(t))
}

func (c *limitConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wd = t
	return c.Conn.SetWriteDeadline(c.effective(t))
}

// begin starts a call: no I/O may outlast limit (zero: no limit beyond the
// deadlines set by the layers above).
func (c *limitConn) begin(limit time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit = limit
	c.interrupted = false
	c.ioErr = nil
	c.active = false
	c.apply()
}

// interrupt aborts the current call: pending and future I/O fail at once
// until end.
func (c *limitConn) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.interrupted = true
	c.apply()
}

// end finishes a call, lifts its limit and reports whether I/O failed,
// the call was interrupted, and whether any I/O was attempted at all.
func (c *limitConn) end() (interrupted, active bool, ioErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	interrupted, active, ioErr = c.interrupted, c.active, c.ioErr
	c.limit, c.interrupted, c.ioErr, c.active = time.Time{}, false, nil, false
	c.apply()
	return interrupted, active, ioErr
}

// greetedConn feeds a synthetic "220" greeting to go-smtp's client before
// the real stream. After STARTTLS the server sends no new greeting, but
// go-smtp's client always waits for one; this lets us do the plaintext
// part (greeting, EHLO with our own name, STARTTLS) ourselves — go-smtp's
// STARTTLS helpers would say "EHLO localhost" — and hand the TLS
// connection to go-smtp afterwards.
type greetedConn struct {
	net.Conn
	pending []byte
}

func (c *greetedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// dotEncoder is the DATA phase's encoder: every bare CR and every bare
// LF becomes CRLF, and a line that starts with "." gets another one (RFC
// 5321 §4.5.2). With both, the upstream only ever sees CRLF line endings
// and correct dot-stuffing, so an end-of-data look-alike such as "\r.\r"
// can never end the message early on an upstream vulnerable to SMTP
// smuggling. It does in bulk what go-smtp's textproto DotWriter does a
// byte at a time through a 4 KB buffer (a fifth of the plain relay's CPU
// when it did): lines are found with IndexByte and a chunk is encoded
// into one buffer, written in one call.
type dotEncoder struct {
	midLine   bool // the last byte encoded was not a line end
	pendingCR bool // a CR ended the last input: it is bare unless LF follows
	started   bool // anything was encoded
}

// encode appends src's encoding to dst.
func (e *dotEncoder) encode(dst, src []byte) []byte {
	if len(src) > 0 {
		e.started = true
	}
	for len(src) > 0 {
		if e.pendingCR {
			e.pendingCR = false
			dst = append(dst, '\r', '\n')
			e.midLine = false
			if src[0] == '\n' {
				src = src[1:]
				continue
			}
		}
		if !e.midLine && src[0] == '.' {
			dst = append(dst, '.')
		}
		i := lineEnd(src)
		if i > 0 {
			dst = append(dst, src[:i]...)
			e.midLine = true
		}
		if i == len(src) {
			break
		}
		if src[i] == '\n' {
			dst = append(dst, '\r', '\n')
			e.midLine = false
		} else {
			e.pendingCR = true
		}
		src = src[i+1:]
	}
	return dst
}

// finish appends what ends the message: the line end a pending CR stands
// for, or the CRLF a message that does not end with one lacks (go-smtp's
// DotWriter adds one too; an empty message becomes one empty line, as
// it does there). The message then always ends with CRLF.
func (e *dotEncoder) finish(dst []byte) []byte {
	if e.pendingCR || e.midLine || !e.started {
		dst = append(dst, '\r', '\n')
	}
	e.pendingCR, e.midLine = false, false
	return dst
}

// lineEnd is the index of the first CR or LF in b, or len(b).
func lineEnd(b []byte) int {
	n := bytes.IndexByte(b, '\n')
	if n < 0 {
		n = len(b)
	}
	if r := bytes.IndexByte(b[:n], '\r'); r >= 0 {
		return r
	}
	return n
}

// idleWriter refreshes the write deadline before each write (an encoded
// chunk of the message), so a message
// body may take as long as it needs while the upstream keeps reading, but
// a stalled upstream fails after timeout (always within the call's limit).
type idleWriter struct {
	w       io.Writer
	conn    *limitConn
	timeout time.Duration
}

func (w *idleWriter) Write(p []byte) (int, error) {
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.w.Write(p)
}
