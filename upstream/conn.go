package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

var (
	// ErrBroken is wrapped by calls on a Conn that is broken (an earlier
	// network error, timeout, cancellation or out-of-step reply).
	ErrBroken = errors.New("upstream session broken")
	// ErrClosed is wrapped by calls on a closed Conn.
	ErrClosed = errors.New("upstream session closed")
	// ErrNotSupported is wrapped when a call needs an extension the upstream
	// did not advertise (REQUIRETLS, SMTPUTF8). Nothing was sent.
	ErrNotSupported = errors.New("not supported by the upstream server")
)

// Error is a failure of a Conn call that is not an upstream reply: a
// network error, a timeout, a cancelled context, a reply out of step, or a
// request refused locally. Its text may name the upstream: log it, never
// show it to clients (use ReplyFor).
type Error struct {
	Op     string // "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"
	Server string
	Err    error
}

func (e *Error) Error() string { return "upstream " + e.Server + ": " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the call ran out of time (command timeout or
// context deadline).
func (e *Error) Timeout() bool {
	if errors.Is(e.Err, context.Canceled) {
		return false
	}
	if errors.Is(e.Err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// Conn is one SMTP session with an upstream server. Its calls must not be
// made concurrently, except Broken, Server, TLSState, EHLOExtension and
// Close (which aborts a call in progress).
type Conn struct {
	server   string
	raw      *limitConn // the TCP connection
	wire     net.Conn   // what go-smtp's client reads and writes (raw, or TLS over it)
	cl       *smtp.Client
	tlsState *tls.ConnectionState
	timeout  time.Duration
	ext      map[string]string // EHLO keywords (upper case) → parameters

	broken    atomic.Bool
	lastReply string

	mu     sync.Mutex
	busy   bool
	closed bool
	// reused: taken from the idle pool.
	reused bool
}

// Server is the upstream's configured address. For logs only.
func (c *Conn) Server() string { return c.server }

// TLSState is the session's TLS state; false if it is not encrypted.
func (c *Conn) TLSState() (tls.ConnectionState, bool) {
	if c.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *c.tlsState, true
}

// EHLOExtension reports whether the upstream advertised an EHLO keyword
// (case-insensitive) in its last EHLO reply at Open, and its parameters
// (e.g. "SIZE" → "10240000"). Only well-known keywords are kept.
func (c *Conn) EHLOExtension(name string) (bool, string) {
	p, ok := c.ext[strings.ToUpper(name)]
	return ok, p
}

// Broken reports that the session failed in a way that leaves it unusable
// (network error, timeout, cancellation, 421, reply out of step): the
// caller must not reuse it, only Close it. A closed Conn is broken too.
func (c *Conn) Broken() bool { return c.broken.Load() }

// LastDataReply is the text of the upstream's 250 reply to the last
// successful Data (often its queue id). For logs only.
func (c *Conn) LastDataReply() string { return c.lastReply }

// Mail sends MAIL FROM. An upstream refusal comes back as the
// *smtp.SMTPError itself.
func (c *Conn) Mail(ctx context.Context, from string, opts *smtp.MailOptions) error {
	if err := checkLine(from); err != nil {
		return &Error{Op: "MAIL", Server: c.server, Err: err}
	}
	if opts != nil && opts.RequireTLS {
		if ok, _ := c.EHLOExtension("REQUIRETLS"); !ok {
			return &Error{Op: "MAIL", Server: c.server, Err: fmt.Errorf("REQUIRETLS: %w", ErrNotSupported)}
		}
	}
	if opts != nil && opts.UTF8 {
		if ok, _ := c.EHLOExtension("SMTPUTF8"); !ok {
			return &Error{Op: "MAIL", Server: c.server, Err: fmt.Errorf("SMTPUTF8: %w", ErrNotSupported)}
		}
	}
	return c.do(ctx, "MAIL", c.timeout, func() error { return c.cl.Mail(from, opts) })
}

// Rcpt sends RCPT TO. An upstream refusal (e.g. 550 5.1.1 user unknown)
// comes back as the *smtp.SMTPError itself, to be relayed verbatim.
func (c *Conn) Rcpt(ctx context.Context, to string, opts *smtp.RcptOptions) error {
	if err := checkLine(to); err != nil {
		return &Error{Op: "RCPT", Server: c.server, Err: err}
	}
	return c.do(ctx, "RCPT", c.timeout, func() error { return c.cl.Rcpt(to, opts) })
}

// Data sends DATA and streams msg, which should already be CRLF-normalised
// (go-smtp's DotWriter does the dot-stuffing and turns bare LF into CRLF;
// Data also turns bare CR into CRLF, so no end-of-data look-alike can ever
// reach the upstream). It returns nil only when the upstream answered 250
// to the final dot.
//
// Each step (the DATA command, each write of the body, the wait for the
// final reply) may take up to the command timeout; the whole call is bounded
// by ctx. If reading msg fails, the connection is closed without sending
// the final dot, so a partial message is never delivered.
func (c *Conn) Data(ctx context.Context, msg io.Reader) error {
	if msg == nil {
		return &Error{Op: "DATA", Server: c.server, Err: errors.New("nil message")}
	}
	return c.do(ctx, "DATA", 0, func() error {
		w, err := c.cl.Data()
		if err != nil {
			return err
		}
		// The message goes to the connection go-smtp writes to (after
		// its DATA command, whose 354 it has read, its buffer is empty),
		// encoded in bulk; only the final line end goes through its
		// DotWriter, whose Close then ends the data with ".\r\n" and
		// reads the reply.
		raw := &idleWriter{w: c.wire, conn: c.raw, timeout: c.timeout}
		b := dataBufs.Get().(*dataBuf)
		defer dataBufs.Put(b)
		var (
			enc  dotEncoder
			held bool // the CRLF the last chunk ended with is not sent yet
		)
		for {
			n, rerr := msg.Read(b.in[:])
			if n > 0 {
				out := b.out[:0]
				if held {
					out = append(out, '\r', '\n')
				}
				out = enc.encode(out, b.in[:n])
				held = bytes.HasSuffix(out, crlf)
				if held {
					out = out[:len(out)-2]
				}
				if len(out) > 0 {
					if _, err := raw.Write(out); err != nil {
						return err
					}
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				// Never let a truncated message be terminated.
				c.broken.Store(true)
				c.raw.Close()
				return fmt.Errorf("reading the message: %w", rerr)
			}
		}
		out := b.out[:0]
		if held {
			out = append(out, '\r', '\n')
		}
		out = enc.finish(out) // always ends with CRLF
		if len(out) > 2 {
			if _, err := raw.Write(out[:len(out)-2]); err != nil {
				return err
			}
		}
		if _, err := w.Write(crlf); err != nil {
			return err
		}
		resp, err := w.CloseWithResponse()
		if err != nil {
			return err
		}
		c.lastReply = resp.StatusText
		return nil
	})
}

var crlf = []byte("\r\n")

// dataBuf is Data's read buffer and the buffer it encodes into (at most
// twice as long: a bare LF becomes CRLF, a leading dot two).
type dataBuf struct {
	in  [32 << 10]byte
	out [64<<10 + 4]byte
}

// dataBufs avoids allocating Data's buffers per message.
var dataBufs = sync.Pool{New: func() any { return new(dataBuf) }}

// Reset sends RSET, aborting the current transaction.
//
// go-smtp's client then greets again (EHLO) before the next MAIL or NOOP.
func (c *Conn) Reset(ctx context.Context) error {
	return c.do(ctx, "RSET", c.timeout, c.cl.Reset)
}

// Noop sends NOOP, to check the session is alive.
func (c *Conn) Noop(ctx context.Context) error {
	return c.do(ctx, "NOOP", c.timeout, c.cl.Noop)
}

// Close ends the session: QUIT with a short deadline, then close. On a
// broken session, or while another call is running, it just closes the
// connection (aborting that call). Calling it again does nothing.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	busy := c.busy
	c.mu.Unlock()
	if busy || c.broken.Load() {
		c.broken.Store(true)
		c.raw.Close()
		return nil
	}
	c.raw.begin(time.Now().Add(min(quitTimeout, c.timeout)))
	err := c.cl.Quit() // closes the connection on success
	c.raw.end()
	c.broken.Store(true)
	if err != nil {
		c.cl.Close()
		c.raw.Close()
		return &Error{Op: "QUIT", Server: c.server, Err: err}
	}
	return nil
}

// do runs one call: it bounds every I/O by min(ctx deadline, now+limit)
// (limit 0: ctx only), aborts it when ctx is cancelled, and sorts the
// outcome into an upstream reply (returned unchanged) or a failure that
// breaks the session.
func (c *Conn) do(ctx context.Context, op string, limit time.Duration, fn func() error) error {
	c.mu.Lock()
	var refuse error
	switch {
	case c.closed:
		refuse = ErrClosed
	case c.broken.Load():
		refuse = ErrBroken
	case c.busy:
		refuse = errors.New("concurrent use of an upstream session")
	}
	if refuse != nil {
		c.mu.Unlock()
		return &Error{Op: op, Server: c.server, Err: refuse}
	}
	c.busy = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.busy = false
		c.mu.Unlock()
	}()

	if err := ctx.Err(); err != nil {
		return &Error{Op: op, Server: c.server, Err: err} // nothing sent
	}
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	c.raw.begin(deadline)
	stop := context.AfterFunc(ctx, c.raw.interrupt)
	err := fn()
	stop()
	interrupted, active, ioErr := c.raw.end()
	if err == nil {
		return nil
	}

	var se *smtp.SMTPError
	if errors.As(err, &se) {
		if se.Code >= 400 && se.Code <= 599 {
			if se.Code == 421 {
				c.broken.Store(true) // the upstream is closing the session
			}
			return se
		}
		// A positive reply where another was expected: out of step.
		c.broken.Store(true)
		return &Error{Op: op, Server: c.server, Err: fmt.Errorf("unexpected reply %s", describe(se))}
	}
	if ioErr == nil && !interrupted && !active && !c.broken.Load() {
		// Refused by go-smtp before anything was sent: still in step.
		return &Error{Op: op, Server: c.server, Err: err}
	}
	c.broken.Store(true)
	if cerr := ctxErr(ctx); cerr != nil {
		err = fmt.Errorf("%w (%w)", cerr, err)
	}
	return &Error{Op: op, Server: c.server, Err: err}
}

// ctxErr is ctx.Err(), or DeadlineExceeded as soon as the deadline has
// passed (the connection's deadline, set to the same instant, may fire
// before the context's own timer).
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// checkLine refuses CR and LF in command arguments (go-smtp does too, but
// checking first keeps the session out of it).
func checkLine(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return errors.New("address contains CR or LF")
	}
	return nil
}
