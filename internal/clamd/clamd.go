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
}

// New returns a client for clamd at address (unix:/path, tcp:host:port or
// host:port) that runs at most connections scans at once (0: the
// default). It does not connect: clamd may start after the gateway.
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
	c := &Client{network: network, address: addr, slots: make(chan struct{}, connections)}
	c.bufs.New = func() any { b := make([]byte, 4+ChunkSize); return &b }
	return c, nil
}

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
func (c *Client) Scan(ctx context.Context, r io.Reader) (Result, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("clamd: no free connection (all %d busy): %w", cap(c.slots), ctx.Err())
	}
	defer func() { <-c.slots }()

	var d net.Dialer
	conn, err := d.DialContext(ctx, c.network, c.address)
	if err != nil {
		return Result{}, fmt.Errorf("clamd: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled session (client gone, gateway stopping) ends the scan
	// at once, not at the deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	res, err := c.instream(conn, r)
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

// instream runs one zINSTREAM command on conn.
func (c *Client) instream(conn net.Conn, r io.Reader) (Result, error) {
	var sent int64
	if _, err := io.WriteString(conn, "zINSTREAM\x00"); err != nil {
		return Result{}, fmt.Errorf("clamd: %w", err)
	}
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	for {
		n, rerr := io.ReadFull(r, buf[4:])
		if n > 0 {
			binary.BigEndian.PutUint32(buf, uint32(n))
			if _, err := conn.Write(buf[:4+n]); err != nil {
				return c.closedEarly(conn, sent, err)
			}
			sent += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return Result{Bytes: sent}, fmt.Errorf("clamd: reading the message: %w", rerr)
		}
	}
	if _, err := conn.Write([]byte{0, 0, 0, 0}); err != nil {
		return c.closedEarly(conn, sent, err)
	}
	reply, err := readReply(conn)
	if err != nil {
		return Result{Bytes: sent}, fmt.Errorf("clamd: reading the reply after %d bytes: %w", sent, err)
	}
	res, err := ParseReply(reply)
	res.Bytes = sent
	return res, err
}

// closedEarly handles a write that failed mid-stream: clamd closes the
// connection after its size-limit reply, so the reply, if it arrived,
// says why.
func (c *Client) closedEarly(conn net.Conn, sent int64, werr error) (Result, error) {
	res := Result{Bytes: sent}
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		return res, fmt.Errorf("clamd: sending the message: %w", werr)
	}
	if reply, err := readReply(conn); err == nil || reply != "" {
		if _, perr := ParseReply(reply); perr != nil {
			return res, perr
		}
	}
	return res, fmt.Errorf("clamd: connection closed after %d bytes sent (%w): "+
		"if clamd logged \"INSTREAM: Size limit reached\", its StreamMaxLength is below the size sent", sent, werr)
}

// readReply reads one NUL-terminated reply (z-commands), or up to EOF.
func readReply(conn net.Conn) (string, error) {
	buf := make([]byte, 0, 128)
	tmp := make([]byte, 512)
	for {
		n, err := conn.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if i := bytes.IndexByte(buf, 0); i >= 0 {
			return string(buf[:i]), nil
		}
		if len(buf) > maxReply {
			return string(buf[:maxReply]), fmt.Errorf("reply longer than %d bytes", maxReply)
		}
		if err == io.EOF && len(buf) > 0 {
			return string(buf), nil
		}
		if err != nil {
			return string(buf), err
		}
	}
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
