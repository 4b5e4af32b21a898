// Package clamav refuses messages in which ClamAV finds a virus (SPEC §4
// data, §5): the message is streamed to clamd (INSTREAM) before it goes
// upstream, and a virus is refused with 554 5.7.1 and its name. clamd
// decodes MIME and unpacks archives itself, so an attachment, base64 or
// zipped, is scanned as what it contains.
//
// YAML (filters.clamav), with the defaults:
//
//	clamav:
//	  address: unix:/run/clamav/clamd.ctl   # or tcp:host:port, or host:port
//	  on_error: tempfail  # clamd down, slow or failing: tempfail | accept
//	  max_size: 25MB      # scan at most this much of a message (keep it <= clamd's StreamMaxLength)
//	  timeout: 60s        # one scan, including the wait for a free connection
//	  connections: 8      # most scans at once
//	  mode: enforce       # or shadow: log what would be refused
//
// Replies:
//
//	554 5.7.1 Message refused: virus found (<signature>)
//	451 4.3.0 Virus scanner unavailable, try again later   (on_error: tempfail)
//
// With on_error: accept, a message clamd could not scan is delivered
// unscanned: each one is logged at WARN and its decision's reason starts
// with "unscanned". The filter is of kind Policy: a virus is refused
// even for whitelisted senders and authenticated users.
package clamav

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"mailgate/internal/clamd"
	"mailgate/pipeline"
)

// Failure policies for a clamd that gives no verdict.
const (
	OnErrorTempfail = "tempfail"
	OnErrorAccept   = "accept"
)

// Defaults for zero values in Config (SPEC §3).
const (
	DefaultMaxSize     = 25 << 20
	DefaultTimeout     = 60 * time.Second
	DefaultConnections = 8
)

// Config is the virus-scanning policy.
type Config struct {
	// Address of clamd: unix:/path, tcp:host:port or host:port.
	Address string
	// OnError is the policy when clamd gives no verdict (down, slow, an
	// ERROR reply): "tempfail" (default) or "accept".
	OnError string
	// MaxSize: only the first MaxSize bytes of a larger message are
	// scanned (clamd refuses streams over its StreamMaxLength).
	MaxSize int64
	// Timeout bounds one scan, the wait for a free connection included.
	Timeout time.Duration
	// Connections is the most scans at once.
	Connections int
	// Log receives the warnings; nil discards them.
	Log *slog.Logger
}

// Filter is the virus scan.
type Filter struct {
	c      Config
	clamd  *clamd.Client
	accept bool
}

// New validates c and returns the filter. It does not contact clamd: the
// gateway may start before it.
func New(c Config) (*Filter, error) {
	if c.OnError == "" {
		c.OnError = OnErrorTempfail
	}
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.OnError != OnErrorTempfail && c.OnError != OnErrorAccept:
		return nil, fmt.Errorf("clamav: on_error %q: want tempfail or accept", c.OnError)
	case c.MaxSize < 0, c.Timeout < 0, c.Connections < 0:
		return nil, errors.New("clamav: negative max_size, timeout or connections")
	}
	cl, err := clamd.New(c.Address, c.Connections)
	if err != nil {
		return nil, fmt.Errorf("clamav: %w", err)
	}
	return &Filter{c: c, clamd: cl, accept: c.OnError == OnErrorAccept}, nil
}

func (*Filter) Name() string        { return "clamav" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

var unavailable = pipeline.Defer(451, [3]int{4, 3, 0}, "Virus scanner unavailable, try again later", "")

// Data scans the message.
func (f *Filter) Data(ctx context.Context, s *pipeline.Session, t *pipeline.Transaction, m *pipeline.Message) pipeline.Verdict {
	ctx, cancel := context.WithTimeout(ctx, f.c.Timeout)
	defer cancel()
	size := m.Size()
	partial := size > f.c.MaxSize
	res, err := f.clamd.Scan(ctx, io.LimitReader(m.Reader(), f.c.MaxSize))
	if err != nil {
		return f.failed(s, err)
	}
	if res.Infected {
		return pipeline.Refuse(554, [3]int{5, 7, 1}, "Message refused: virus found ("+Clean(res.Signature)+")",
			"virus found: "+Clean(res.Signature))
	}
	if partial {
		return pipeline.PassBecause(fmt.Sprintf("clean in the first %d of %d bytes (max_size)", res.Bytes, size))
	}
	return pipeline.PassBecause("clean")
}

// failed applies the failure policy (SPEC §5).
func (f *Filter) failed(s *pipeline.Session, err error) pipeline.Verdict {
	if errors.Is(err, clamd.ErrSizeLimit) {
		// Every larger message would fail the same way until an
		// administrator acts.
		f.c.Log.Error("clamav: clamd refused the stream: set clamd's StreamMaxLength to at least filters.clamav.max_size",
			"session", s.ID, "max_size", f.c.MaxSize, "clamd", f.clamd.String(), "err", err)
	}
	if f.accept {
		f.c.Log.Warn("clamav: clamd gave no verdict, message delivered UNSCANNED (on_error: accept)",
			"session", s.ID, "clamd", f.clamd.String(), "err", err)
		return pipeline.PassBecause("unscanned: " + err.Error())
	}
	return unavailable.WithReason("clamd unavailable: " + err.Error())
}

// maxSignature bounds the virus name in a reply.
const maxSignature = 100

// Clean makes a signature name safe for a reply: letters, digits and
// . - _ : / + @ # ! are kept, anything else becomes '_', and long names
// are cut. clamd's names are plain, but a reply must not carry
// whatever a misbehaving scanner sends.
func Clean(sig string) string {
	var b strings.Builder
	for i := 0; i < len(sig) && b.Len() < maxSignature; i++ {
		c := sig[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte(".-_:/+@#!", c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

// Ping reports whether clamd answers (PING), for health checks.
func (f *Filter) Ping(ctx context.Context) error { return f.clamd.Ping(ctx) }

// Ensure the filter implements the stage it runs at.
var _ pipeline.DataFilter = (*Filter)(nil)

// Close ends the client's idle sessions with clamd (a reload's old
// generation, shutdown).
func (f *Filter) Close() error { return f.clamd.Close() }
