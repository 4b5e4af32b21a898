// Package spamc is a client for SpamAssassin's spamd, speaking the
// SPAMC/1.5 protocol of spamc(1): PING, CHECK and SYMBOLS, over TCP or a
// unix socket, with every connection bounded by the caller's context.
//
// A request is a command line, headers, a blank line and the message:
//
//	SYMBOLS SPAMC/1.5
//	Content-length: 1234
//	User: nobody          (optional: whose preferences spamd applies)
//
//	<message>
//
// and spamd answers
//
//	SPAMD/1.1 0 EX_OK
//	Content-length: 27
//	Spam: True ; 1005.2 / 5.0
//
//	GTUBE,MISSING_DATE,NO_RELAYS
//
// (CHECK has no body). A non-zero code is a sysexits(3) EX_* error,
// returned as *Error.
//
// Like spamc, a message larger than MaxSize is not sent at all
// (ErrTooLarge): spamd would only score a truncated copy, and big
// messages are rarely spam and expensive to scan.
package spamc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxSize is spamc's default limit (512 KB).
const DefaultMaxSize = 512 << 10

// ErrTooLarge means the message is over MaxSize and was not sent.
var ErrTooLarge = errors.New("spamc: message over max size, not scored")

// Config says where spamd is and what to send it.
type Config struct {
	// Address is host:port or tcp:host:port for TCP, unix:/path for a
	// unix socket.
	Address string
	// User, if set, is sent as the User header: spamd applies that
	// user's preferences (with per-user config enabled).
	User string
	// MaxSize: larger messages are not sent (ErrTooLarge). 0 means
	// DefaultMaxSize; negative means no limit.
	MaxSize int64
	// DialTimeout bounds the connection attempt when the context has no
	// earlier deadline (default 5s).
	DialTimeout time.Duration
}

// Client talks to one spamd. It is safe for concurrent use: every request
// has its own connection, as spamd serves one request per connection.
type Client struct {
	network, address string
	user             string
	maxSize          int64
	dialTimeout      time.Duration
}

// New checks c and returns a client. It does not connect.
func New(c Config) (*Client, error) {
	network, address, err := splitAddress(c.Address)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(c.User, "\r\n") {
		return nil, errors.New("spamc: user name contains a line break")
	}
	cl := &Client{network: network, address: address, user: c.User, maxSize: c.MaxSize, dialTimeout: c.DialTimeout}
	if cl.maxSize == 0 {
		cl.maxSize = DefaultMaxSize
	}
	if cl.dialTimeout <= 0 {
		cl.dialTimeout = 5 * time.Second
	}
	return cl, nil
}

func splitAddress(a string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(a, "unix:"):
		p := strings.TrimPrefix(a, "unix:")
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("spamc: %q: a unix socket needs an absolute path", a)
		}
		return "unix", p, nil
	case a == "":
		return "", "", errors.New("spamc: no address (want host:port or unix:/path)")
	}
	a = strings.TrimPrefix(a, "tcp:")
	if _, _, err := net.SplitHostPort(a); err != nil {
		return "", "", fmt.Errorf("spamc: %q: %v", a, err)
	}
	return "tcp", a, nil
}

// String names the spamd for logs: "tcp:127.0.0.1:783", "unix:/run/spamd.sock".
func (c *Client) String() string { return c.network + ":" + c.address }

// MaxSize is the largest message sent (negative: no limit).
func (c *Client) MaxSize() int64 { return c.maxSize }

// Result is spamd's verdict on one message.
type Result struct {
	// Spam is spamd's own opinion (score at or above its required score).
	Spam bool
	// Score is the message's score; Threshold is spamd's required score.
	Score, Threshold float64
	// Symbols are the names of the rules that hit (SYMBOLS only).
	Symbols []string
}

// Error is an EX_* error code from spamd.
type Error struct {
	Code int    // sysexits(3) code, e.g. 76
	Text string // spamd's text, e.g. "Bad header line: (Content-Length mismatch ...)"
}

func (e *Error) Error() string {
	return fmt.Sprintf("spamd: %s (%d): %s", ExitName(e.Code), e.Code, e.Text)
}

var exitNames = map[int]string{
	0: "EX_OK", 64: "EX_USAGE", 65: "EX_DATAERR", 66: "EX_NOINPUT", 67: "EX_NOUSER",
	68: "EX_NOHOST", 69: "EX_UNAVAILABLE", 70: "EX_SOFTWARE", 71: "EX_OSERR",
	72: "EX_OSFILE", 73: "EX_CANTCREAT", 74: "EX_IOERR", 75: "EX_TEMPFAIL",
	76: "EX_PROTOCOL", 77: "EX_NOPERM", 78: "EX_CONFIG", 79: "EX_TIMEOUT",
}

// ExitName returns the sysexits name of code ("EX_PROTOCOL"), or "EX_<n>".
func ExitName(code int) string {
	if n, ok := exitNames[code]; ok {
		return n
	}
	return "EX_" + strconv.Itoa(code)
}

// Ping checks that spamd answers (PING → PONG).
func (c *Client) Ping(ctx context.Context) error {
	conn, stop, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer stop()
	if _, err := io.WriteString(conn, "PING SPAMC/1.5\r\n\r\n"); err != nil {
		return c.ioError(ctx, "sending PING", err)
	}
	br := bufio.NewReaderSize(conn, 1024)
	line, err := readLine(br)
	if err != nil {
		return c.ioError(ctx, "reading the PING reply", err)
	}
	code, text, err := parseStatus(line)
	if err != nil {
		return err
	}
	if code != 0 {
		return &Error{Code: code, Text: text}
	}
	if text != "PONG" {
		return fmt.Errorf("spamc: PING answered %q, want PONG", text)
	}
	return nil
}

// Check asks spamd for the score of a message (CHECK). size is the
// message's exact length in bytes, or negative if unknown: then the
// message is read into memory, up to MaxSize.
func (c *Client) Check(ctx context.Context, msg io.Reader, size int64) (*Result, error) {
	return c.do(ctx, "CHECK", msg, size)
}

// Symbols is Check with the names of the rules that hit (SYMBOLS).
func (c *Client) Symbols(ctx context.Context, msg io.Reader, size int64) (*Result, error) {
	return c.do(ctx, "SYMBOLS", msg, size)
}

func (c *Client) do(ctx context.Context, method string, msg io.Reader, size int64) (*Result, error) {
	if size < 0 {
		// Unknown size: read one byte more than allowed to tell a
		// message at the limit from one over it, like spamc.
		limit := c.maxSize
		if limit < 0 {
			limit = 1<<63 - 2
		}
		data, err := io.ReadAll(io.LimitReader(msg, limit+1))
		if err != nil {
			return nil, fmt.Errorf("spamc: reading the message: %w", err)
		}
		msg, size = bytes.NewReader(data), int64(len(data))
	}
	if c.maxSize >= 0 && size > c.maxSize {
		return nil, ErrTooLarge
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	conn, stop, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()

	var head strings.Builder
	fmt.Fprintf(&head, "%s SPAMC/1.5\r\nContent-length: %d\r\n", method, size)
	if c.user != "" {
		fmt.Fprintf(&head, "User: %s\r\n", c.user)
	}
	head.WriteString("\r\n")
	bw := &trackWriter{w: bufio.NewWriterSize(conn, 32<<10)}
	_, werr := io.WriteString(bw, head.String())
	if werr == nil {
		n, err := io.CopyN(bw, msg, size)
		if err != nil && bw.err == nil {
			// Our side failed, not spamd's: no reply is coming.
			if err == io.EOF {
				err = fmt.Errorf("message shorter than its size: %d of %d bytes", n, size)
			}
			return nil, fmt.Errorf("spamc: reading the message: %w", err)
		}
		werr = err
	}
	if werr == nil {
		werr = bw.w.Flush()
	}
	if werr == nil {
		// Half-close, as spamc does: spamd reads the message line by
		// line, and a last line without a line break would otherwise
		// leave it waiting for one.
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			werr = cw.CloseWrite()
		}
	}
	br := bufio.NewReaderSize(conn, 4096)
	res, rerr := ParseResponse(br, method == "SYMBOLS")
	var se *Error
	switch {
	case errors.As(rerr, &se):
		// spamd's own explanation beats our broken pipe.
		return nil, rerr
	case werr != nil:
		return nil, c.ioError(ctx, "sending the message", werr)
	case rerr != nil:
		return nil, c.ioError(ctx, "reading the reply", rerr)
	}
	return res, nil
}

// dial connects, with the context's deadline on the whole exchange and
// the connection closed when the context is cancelled. stop releases it.
func (c *Client) dial(ctx context.Context) (net.Conn, func(), error) {
	dctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, c.network, c.address)
	if err != nil {
		return nil, nil, c.ioError(ctx, "connecting", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	unwatch := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return conn, func() { unwatch(); conn.Close() }, nil
}

// ioError names what failed and where; a context that ended is the cause
// worth reporting.
func (c *Client) ioError(ctx context.Context, what string, err error) error {
	cerr := ctx.Err()
	var ne net.Error
	if dl, has := ctx.Deadline(); cerr == nil && has && !time.Now().Before(dl) && errors.As(err, &ne) && ne.Timeout() {
		// The connection's deadline is the context's: it may fire a
		// moment before the context notices.
		cerr = context.DeadlineExceeded
	}
	if cerr != nil {
		return fmt.Errorf("spamc: %s %s: %w (%v)", what, c, cerr, err)
	}
	return fmt.Errorf("spamc: %s %s: %w", what, c, err)
}

// trackWriter tells the connection's write errors from the message
// source's read errors.
type trackWriter struct {
	w   *bufio.Writer
	err error
}

func (t *trackWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil {
		t.err = err
	}
	return n, err
}
