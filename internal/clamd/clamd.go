// Package clamd is a client for ClamAV's daemon, clamd: it streams a
// message with the INSTREAM command and reads the verdict.
//
// Scans are our own small INSTREAM client rather than ScanReader of
// github.com/baruwa-enterprise/clamd (v1.0.1), which the gateway cannot use
// as it is:
//   - its context bounds only the dial; the scan itself is bounded by an
//     idle timeout re-armed for every 1 KiB chunk and reply line, so a
//     slow clamd holds a session long past its deadline, and a cancelled
//     session cannot stop it;
//   - a "stream: … ERROR" reply comes back as Status "ERROR" with a nil
//     error, so a caller that only checks the error takes it for clean;
//   - past clamd's StreamMaxLength, clamd replies and closes, and the
//     client reports only "broken pipe" from its next write;
//   - it writes 1 KiB chunks, one write and flush each (25,000 system
//     calls for a 25 MB message);
//   - it refuses to build a client for a unix socket that does not exist
//     yet, so a gateway started before clamd would fail.
//
// Here every scan holds a connection deadline taken from its context (and
// a cancelled context ends it at once), an ERROR reply is an error, a
// size-limit breakage is reported as ErrSizeLimit, chunks are 64 KiB, and
// at most Connections scans run at once: the rest wait for a slot within
// their deadline. The library still serves PING and VERSION, which are
// one short command each (see Ping).
//
// Scans reuse their connections through clamd's session mode
// (zIDSESSION, one request at a time), not a dial and an accept per
// message: after an OK or FOUND reply a session goes back to a pool of
// at most Connections, after any error it is closed. A session idle past
// MaxIdle, or found closed by clamd, is not reused; if one breaks before
// clamd replies (a restart), the scan starts over once on a new
// connection (see Scan). Close ends the idle sessions.
package clamd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ChunkSize is the INSTREAM chunk size: large enough that a 25 MB
// message is a few hundred writes, small enough to stay far below any
// clamd StreamMaxLength.
const ChunkSize = 64 << 10

// maxReply bounds a reply read from clamd (real replies are one short
// line).
const maxReply = 4 << 10

// DefaultConnections is the concurrency bound when New is given 0.
const DefaultConnections = 8

// ErrSizeLimit is clamd's refusal of a stream longer than its
// StreamMaxLength. It is a configuration error: the gateway's max_size
// must not exceed clamd's StreamMaxLength.
var ErrSizeLimit = errors.New("clamd: INSTREAM size limit exceeded: the stream is longer than clamd's StreamMaxLength")

// ReplyError is an ERROR reply from clamd ("stream: <reason> ERROR"):
// clamd could not scan the stream.
type ReplyError struct {
	Msg string // clamd's reason, without the trailing "ERROR"
}

func (e *ReplyError) Error() string { return "clamd: scan error: " + e.Msg }

// Result is the outcome of a scan that clamd completed.
type Result struct {
	// Infected is true when clamd found a virus; Signature is its name
	// as clamd reports it (not sanitized: it is clamd's text).
	Infected  bool
	Signature string
	// Bytes is how much of the stream was sent.
	Bytes int64
}

// Client talks to one clamd. It is safe for concurrent use.
type Client struct {
	network, address string
	// slots is the semaphore of concurrent scans.
	slots chan struct{}
	bufs  sync.Pool

	// Set by New; tests change them.
	dial      func(ctx context.Context, network, address string) (net.Conn, error)
	maxIdle   time.Duration // MaxIdle
	checkIdle bool          // look at an idle session before reusing it (idleOpen)

	mu     sync.Mutex
	idle   []*session // the pool, most recently used last
	closed bool       // Close was called: no more pooling
}

// New returns a client for clamd at address (unix:/path, tcp:host:port or
// host:port) that runs at most connections scans at once (0: the
// default), and keeps up to that many sessions open between scans. It
// does not connect: clamd may start after the gateway.
func New(address string, connections int) (*Client, error) {
	network, addr, err := ParseAddress(address)
	if err != nil {
		return nil, err
	}
	if connections == 0 {
		connections = DefaultConnections
	}
	if connections < 0 {
		return nil, fmt.Errorf("clamd: %d connections", connections)
	}
	var d net.Dialer
	c := &Client{network: network, address: addr, slots: make(chan struct{}, connections),
		dial: d.DialContext, maxIdle: MaxIdle, checkIdle: true}
	// Room for the commands, a chunk with its length, and the end of
	// stream mark: each write is one slice of it (see instream).
	c.bufs.New = func() any { b := make([]byte, chunkAt+ChunkSize+4); return &b }
	return c, nil
}

// chunkAt is where a chunk's bytes go in a write buffer: after the
// longest command and the chunk's length.
var chunkAt = len(cmdSession) + 4

// ParseAddress splits unix:/path, tcp:host:port and host:port into a
// network and an address for net.Dial.
func ParseAddress(address string) (network, addr string, err error) {
	if p, ok := strings.CutPrefix(address, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("clamd: address %q: a unix socket needs an absolute path", address)
		}
		return "unix", p, nil
	}
	hp := strings.TrimPrefix(address, "tcp:")
	if _, port, err := net.SplitHostPort(hp); err != nil || port == "" {
		return "", "", fmt.Errorf("clamd: address %q: want unix:/path, tcp:host:port or host:port", address)
	}
	return "tcp", hp, nil
}

// String is the address as given to New, for logs.
func (c *Client) String() string {
	if c.network == "unix" {
		return "unix:" + c.address
	}
	return "tcp:" + c.address
}

// Scan streams r to clamd and returns its verdict. ctx bounds everything:
// the wait for a free connection, the dial, the stream and the reply.
// Any failure to get a verdict is an error: a refused or dropped
// connection, a timeout, an ERROR reply (*ReplyError), the size limit
// (ErrSizeLimit), a reply that cannot be read.
//
// A session reused from the pool may turn out to be one clamd has
// closed (a restart): if it breaks before clamd says a word, the scan
// starts over once on a new connection, within ctx, provided r can be
// read again: nothing of it was read yet, or it is an io.Seeker or an
// *io.LimitedReader over one, which are rewound to where they were.
func (c *Client) Scan(ctx context.Context, r io.Reader) (Result, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("clamd: no free connection (all %d busy): %w", cap(c.slots), ctx.Err())
	}
	defer func() { <-c.slots }()

	s, err := c.session(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("clamd: %w", err)
	}
	m := newReplay(r)
	res, err := c.scanOn(ctx, s, m)
	if err != nil && s.reused && stale(ctx, err) {
		if !m.again() {
			return res, fmt.Errorf("%w (on a pooled session, which clamd may have closed: "+
				"the message cannot be read again for a new one)", err)
		}
		if s, err = c.open(ctx); err != nil {
			return Result{}, fmt.Errorf("clamd: a pooled session was closed, and a new one failed: %w", err)
		}
		res, err = c.scanOn(ctx, s, m)
	}
	if err != nil {
		// The connection's deadline and the context's may fire in either
		// order: both mean the scan ran out of time.
		cause := ctx.Err()
		if cause == nil && errors.Is(err, os.ErrDeadlineExceeded) {
			cause = context.DeadlineExceeded
		}
		if cause != nil {
			err = fmt.Errorf("clamd: no verdict after %d bytes sent: %w (%s)", res.Bytes, cause,
				strings.TrimPrefix(err.Error(), "clamd: "))
		}
	}
	return res, err
}

// scanOn runs one INSTREAM on s within ctx, then puts s back in the pool
// if it is ready for another request (an OK or FOUND reply), or closes
// it: after an error, clamd's side of it is not worth trusting.
func (c *Client) scanOn(ctx context.Context, s *session, r io.Reader) (Result, error) {
	dl, _ := ctx.Deadline() // none: the zero time clears a pooled session's last one
	_ = s.conn.SetDeadline(dl)
	// A cancelled session (client gone, gateway stopping) ends the scan
	// at once, not at the deadline.
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetDeadline(time.Unix(1, 0)) })
	res, keep, err := c.instream(s, r)
	// stop fails once the cancellation has fired (or is firing): the
	// session's deadline is then in the past, or about to be.
	if stop() && keep {
		c.put(s)
	} else {
		_ = s.conn.Close()
	}
	return res, err
}

// silentError is a failure of the connection before clamd said a word:
// on a session reused from the pool, the way one that clamd had already
// closed fails.
type silentError struct{ error }

func (e silentError) Unwrap() error { return e.error }

// stale reports whether a scan that failed with err on a pooled session
// may start over on a new one: the connection broke before any reply,
// and not for lack of time.
func stale(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return false
	}
	return errors.As(err, new(silentError))
}

// instream sends r to clamd as the next request of session s and reads
// the verdict. keep reports the session ready for its next request.
func (c *Client) instream(s *session, r io.Reader) (res Result, keep bool, err error) {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	cmd := cmdInstream
	if s.id == 0 {
		cmd = cmdSession
	}
	s.id++
	// Each write sends buf[start:end]: the command if it is not sent yet,
	// a chunk after its length, and after the last chunk the zero length
	// that ends the stream. A small message is a single write.
	start := chunkAt - 4 - len(cmd)
	copy(buf[start:], cmd)
	var sent int64
	for {
		n, rerr := io.ReadFull(r, buf[chunkAt:chunkAt+ChunkSize])
		last := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
		if rerr != nil && !last {
			return Result{Bytes: sent}, false, fmt.Errorf("clamd: reading the message: %w", rerr)
		}
		binary.BigEndian.PutUint32(buf[chunkAt-4:], uint32(n)) // 0: the end
		end := chunkAt + n
		if last && n > 0 {
			binary.BigEndian.PutUint32(buf[end:], 0)
			end += 4
		}
		if _, err := s.conn.Write(buf[start:end]); err != nil {
			res, err := c.closedEarly(s, sent, err)
			return res, false, err
		}
		sent += int64(n)
		if last {
			break
		}
		start = chunkAt - 4
	}
	reply, done, err := readReply(s.conn)
	if err != nil {
		err = fmt.Errorf("clamd: reading the reply after %d bytes: %w", sent, err)
		if reply == "" {
			err = silentError{err}
		}
		return Result{Bytes: sent}, false, err
	}
	res, err = parseSessionReply(reply, s.id)
	res.Bytes = sent
	return res, done && err == nil, err
}

// closedEarly handles a write that failed mid-stream: clamd closes the
// connection after its size-limit reply, so the reply, if it arrived,
// says why.
func (c *Client) closedEarly(s *session, sent int64, werr error) (Result, error) {
	res := Result{Bytes: sent}
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		return res, fmt.Errorf("clamd: sending the message: %w", werr)
	}
	reply, _, err := readReply(s.conn)
	if err == nil || reply != "" {
		if _, perr := parseSessionReply(reply, s.id); perr != nil {
			return res, perr
		}
	}
	err = fmt.Errorf("clamd: connection closed after %d bytes sent (%w): "+
		"if clamd logged \"INSTREAM: Size limit reached\", its StreamMaxLength is below the size sent", sent, werr)
	if reply == "" {
		err = silentError{err}
	}
	return res, err
}

// readReply reads one NUL-terminated reply (z-commands), or up to EOF.
// done reports a reply that ended with its NUL and nothing after it:
// the session is ready for another request.
func readReply(conn net.Conn) (reply string, done bool, err error) {
	buf := make([]byte, 0, 128)
	var tmp [512]byte
	for {
		n, err := conn.Read(tmp[:])
		buf = append(buf, tmp[:n]...)
		if i := bytes.IndexByte(buf, 0); i >= 0 {
			return string(buf[:i]), i == len(buf)-1, nil
		}
		if len(buf) > maxReply {
			return string(buf[:maxReply]), false, fmt.Errorf("reply longer than %d bytes", maxReply)
		}
		if err == io.EOF && len(buf) > 0 {
			return string(buf), false, nil
		}
		if err != nil {
			return string(buf), false, err
		}
	}
}

// parseSessionReply parses the reply to request id of a session:
// "<id>: <reply>", the reply as ParseReply reads it.
func parseSessionReply(reply string, id int) (Result, error) {
	num, body, ok := strings.Cut(reply, ": ")
	if !ok || num != strconv.Itoa(id) {
		return Result{}, fmt.Errorf("%w, not numbered %d as the session's request", unexpected(reply), id)
	}
	return ParseReply(body)
}

// ParseReply reads one INSTREAM reply:
//
//	stream: OK                                  clean
//	stream: <signature> FOUND                   a virus
//	stream: <signature>(<md5>:<size>) FOUND     ditto, ExtendedDetectionInfo
//	INSTREAM size limit exceeded. ERROR         ErrSizeLimit
//	<anything> ERROR                            *ReplyError
//
// Anything else is an error: an unknown reply is never taken for clean.
// A trailing NUL or newline (z- or n-command) is ignored.
func ParseReply(reply string) (Result, error) {
	s := strings.TrimRight(reply, "\x00\r\n")
	if s == "ERROR" || strings.HasSuffix(s, " ERROR") {
		msg := strings.TrimSpace(strings.TrimSuffix(s, "ERROR"))
		if strings.Contains(msg, "size limit exceeded") {
			return Result{}, ErrSizeLimit
		}
		if msg == "" {
			msg = "no reason given"
		}
		return Result{}, &ReplyError{Msg: msg}
	}
	body, ok := strings.CutPrefix(s, "stream: ")
	if !ok {
		return Result{}, unexpected(reply)
	}
	if body == "OK" {
		return Result{}, nil
	}
	sig, ok := strings.CutSuffix(body, " FOUND")
	sig = strings.TrimSpace(stripDetectionInfo(sig))
	if !ok || sig == "" {
		return Result{}, unexpected(reply)
	}
	return Result{Infected: true, Signature: sig}, nil
}

// stripDetectionInfo removes the "(<hash>:<size>)" that clamd appends to
// a signature name with ExtendedDetectionInfo.
func stripDetectionInfo(sig string) string {
	i := strings.LastIndexByte(sig, '(')
	if i < 0 || !strings.HasSuffix(sig, ")") {
		return sig
	}
	hash, size, ok := strings.Cut(sig[i+1:len(sig)-1], ":")
	if !ok || hash == "" || size == "" || strings.Trim(hash, "0123456789abcdefABCDEF") != "" ||
		strings.Trim(size, "0123456789") != "" {
		return sig
	}
	return sig[:i]
}

func unexpected(reply string) error {
	if len(reply) > 80 {
		reply = reply[:80] + "…"
	}
	return fmt.Errorf("clamd: unexpected reply %q", reply)
}
