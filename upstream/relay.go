// Package upstream is the gateway's client side: the session to the
// internal mail server(s) that the gateway opens while the client's session
// is still open (SPEC §1, in-session proxy, no local queue).
//
// A Relay holds the configured servers and their health. Open tries them in
// order, skipping servers that failed recently (for retry_after) unless all
// of them did, and returns a Conn: one SMTP session, introduced with the
// gateway's own hostname, over TLS as configured (STARTTLS is required,
// never silently skipped, when the mode is starttls).
//
// Every Conn call is bounded by the context's deadline and by the command
// timeout, and a cancelled context aborts it. Replies from the upstream come
// back as *smtp.SMTPError, unchanged, so refusals can be relayed verbatim;
// everything else (network errors, timeouts) is a different error type and
// marks the Conn broken. ReplyFor turns any error into the reply the
// gateway should give its client.
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"mailgate/config"
)

// Defaults for timeouts left at zero in the config.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultCommandTimeout = 5 * time.Minute
	DefaultRetryAfter     = 30 * time.Second
	// quitTimeout bounds the QUIT exchange in Conn.Close.
	quitTimeout = 5 * time.Second
)

// ErrUnavailable is matched (errors.Is) by the error of an Open that found
// no usable upstream server.
var ErrUnavailable = errors.New("upstream unavailable")

// OpenError is the error of a failed Open. It lists every attempt.
type OpenError struct {
	Attempts []AttemptError
	// Err, if set, is why Open stopped trying (e.g. the context ended).
	Err error
}

// AttemptError is one server's failure during Open.
type AttemptError struct {
	Server string
	Err    error
}

func (e *OpenError) Error() string {
	var b strings.Builder
	b.WriteString(ErrUnavailable.Error())
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	for i, a := range e.Attempts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(a.Server + ": " + a.Err.Error())
	}
	return b.String()
}

// Unwrap gives ErrUnavailable, the stop reason and every attempt's error.
// Attempt errors never include an *smtp.SMTPError (an upstream's 421 banner
// must not be mistaken for a reply to relay).
func (e *OpenError) Unwrap() []error {
	errs := []error{ErrUnavailable}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	for _, a := range e.Attempts {
		errs = append(errs, a.Err)
	}
	return errs
}

// ServerStatus is the health of one upstream server, for metrics and
// readiness checks. It may hold internal details: never show it to SMTP
// clients.
type ServerStatus struct {
	Address string
	TLS     config.TLSMode
	// Up is false while the server is skipped after a failure.
	Up bool
	// DownUntil is when a down server becomes eligible again.
	DownUntil time.Time
	// LastError is the last Open failure ("" after a success).
	LastError string
	// LastLatency is how long the last successful connect, greeting, EHLO
	// and TLS setup took.
	LastLatency time.Duration
	// LastAttempt is when the server was last tried.
	LastAttempt time.Time
	// ConsecutiveFailures counts Open failures since the last success.
	ConsecutiveFailures int
}

type server struct {
	cfg     config.UpstreamServer
	mode    config.TLSMode
	tlsConf *tls.Config // nil for mode none

	// guarded by Relay.mu
	st ServerStatus
}

// Relay opens sessions to the configured upstream servers. It is safe for
// concurrent use.
type Relay struct {
	helo           string
	connectTimeout time.Duration
	commandTimeout time.Duration
	retryAfter     time.Duration
	log            *slog.Logger

	// dial is net.Dialer.DialContext; replaceable in tests.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	maxIdle     int
	idleTimeout time.Duration

	mu      sync.Mutex
	servers []*server
	idle    []idleConn // oldest first

	// OnOpen, if set, is told of every attempt of Open at a server: how
	// long it took and its error (nil: the session is open). Attempts cut
	// short by the caller's context are not reported. Set it before the
	// Relay is used (metrics).
	OnOpen func(server string, latency time.Duration, err error)
}

// New checks cfg, loads the CA files and prepares the TLS configurations.
// helo is the name the gateway introduces itself with (its hostname).
func New(cfg config.Upstream, helo string, log *slog.Logger) (*Relay, error) {
	if helo == "" || strings.ContainsAny(helo, " \t\r\n") {
		return nil, fmt.Errorf("upstream: invalid HELO name %q", helo)
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("upstream: no servers configured")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{
		helo:           helo,
		connectTimeout: orDefault(cfg.ConnectTimeout.D(), DefaultConnectTimeout),
		commandTimeout: orDefault(cfg.CommandTimeout.D(), DefaultCommandTimeout),
		retryAfter:     orDefault(cfg.RetryAfter.D(), DefaultRetryAfter),
		maxIdle:        cfg.IdleSessions,
		idleTimeout:    orDefault(cfg.IdleTimeout.D(), DefaultIdleTimeout),
		log:            log,
	}
	if r.maxIdle <= 0 {
		r.maxIdle = DefaultMaxIdle
	}
	r.dial = (&net.Dialer{}).DialContext
	for i, sc := range cfg.Servers {
		s, err := newServer(sc)
		if err != nil {
			return nil, fmt.Errorf("upstream: servers[%d] (%s): %w", i, sc.Address, err)
		}
		r.servers = append(r.servers, s)
	}
	return r, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func newServer(sc config.UpstreamServer) (*server, error) {
	host, _, err := net.SplitHostPort(sc.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	mode := sc.TLS
	if mode == "" {
		mode = config.TLSStartTLS // secure default
	}
	s := &server{cfg: sc, mode: mode}
	s.st = ServerStatus{Address: sc.Address, TLS: mode, Up: true}
	switch mode {
	case config.TLSNone:
		return s, nil
	case config.TLSStartTLS, config.TLSImplicit:
	default:
		return nil, fmt.Errorf("unknown tls mode %q (want none, starttls or implicit)", sc.TLS)
	}
	tc := &tls.Config{
		ServerName:         sc.ServerName,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: sc.InsecureSkipVerify,
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	if sc.CA != "" {
		pem, err := os.ReadFile(sc.CA)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca: no PEM certificates in %s", sc.CA)
		}
		tc.RootCAs = pool
	}
	s.tlsConf = tc
	return s, nil
}

// Status reports every server's health, in configured order.
func (r *Relay) Status() []ServerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	out := make([]ServerStatus, len(r.servers))
	for i, s := range r.servers {
		st := s.st
		st.Up = !now.Before(st.DownUntil)
		out[i] = st
	}
	return out
}

// order returns the servers to try: those not marked down, in configured
// order, then (as a last resort) the ones that are.
func (r *Relay) order() []*server {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var up, down []*server
	for _, s := range r.servers {
		if now.Before(s.st.DownUntil) {
			down = append(down, s)
		} else {
			up = append(up, s)
		}
	}
	return append(up, down...)
}

func (r *Relay) noteSuccess(s *server, start time.Time, latency time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.st.Up = true
	s.st.DownUntil = time.Time{}
	s.st.LastError = ""
	s.st.LastLatency = latency
	s.st.LastAttempt = start
	s.st.ConsecutiveFailures = 0
}

func (r *Relay) noteFailure(s *server, start time.Time, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.st.Up = false
	s.st.DownUntil = time.Now().Add(r.retryAfter)
	s.st.LastError = err.Error()
	s.st.LastAttempt = start
	s.st.ConsecutiveFailures++
}

// Open starts a session on the first server that works: servers not marked
// down, in configured order, then the ones that are. A server that fails to
// connect, greet, EHLO or (when configured) STARTTLS is marked down for
// retry_after. connect_timeout bounds each attempt, the context bounds them
// all. The error of a failed Open matches ErrUnavailable and lists every
// attempt (for logs only: never show it to clients).
func (r *Relay) Open(ctx context.Context) (*Conn, error) {
	oe := &OpenError{}
	for _, s := range r.order() {
		if err := ctxErr(ctx); err != nil {
			oe.Err = err
			break
		}
		start := time.Now()
		c, err := r.open(ctx, s)
		if err == nil {
			latency := time.Since(start)
			r.noteSuccess(s, start, latency)
			if r.OnOpen != nil {
				r.OnOpen(s.cfg.Address, latency, nil)
			}
			r.log.Debug("upstream session opened", "upstream", s.cfg.Address, "latency", latency, "tls", c.tlsState != nil)
			return c, nil
		}
		if cerr := ctxErr(ctx); cerr != nil {
			// Our caller gave up: that says nothing about the server.
			oe.Attempts = append(oe.Attempts, AttemptError{Server: s.cfg.Address, Err: err})
			oe.Err = cerr
			break
		}
		r.noteFailure(s, start, err)
		if r.OnOpen != nil {
			r.OnOpen(s.cfg.Address, time.Since(start), err)
		}
		r.log.Warn("upstream server failed", "upstream", s.cfg.Address, "error", err)
		oe.Attempts = append(oe.Attempts, AttemptError{Server: s.cfg.Address, Err: err})
	}
	return nil, oe
}

// open makes one attempt at s. Its error never wraps an *smtp.SMTPError.
func (r *Relay) open(ctx context.Context, s *server) (conn *Conn, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.connectTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	nc, err := r.dial(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return nil, err
	}
	lc := newLimitConn(nc)
	lc.begin(deadline)
	stop := context.AfterFunc(ctx, lc.interrupt)
	defer func() {
		stop()
		lc.end()
		if err != nil {
			lc.Close()
		}
	}()

	var (
		smtpConn net.Conn = lc
		tlsState *tls.ConnectionState
	)
	switch s.mode {
	case config.TLSImplicit:
		tc := tls.Client(lc, s.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		st := tc.ConnectionState()
		smtpConn, tlsState = tc, &st
	case config.TLSStartTLS:
		tc, err := r.startTLS(ctx, lc, s)
		if err != nil {
			return nil, err
		}
		st := tc.ConnectionState()
		tlsState = &st
		smtpConn = &greetedConn{Conn: tc, pending: []byte("220 TLS session ready\r\n")}
	}

	cl := smtp.NewClient(smtpConn)
	cl.CommandTimeout = r.connectTimeout
	cl.SubmissionTimeout = r.connectTimeout
	if err := cl.Hello(r.helo); err != nil {
		cl.Close()
		return nil, fmt.Errorf("greeting/EHLO: %w", stringifySMTP(err))
	}
	cl.CommandTimeout = r.commandTimeout
	cl.SubmissionTimeout = r.commandTimeout

	c := &Conn{
		server:   s.cfg.Address,
		raw:      lc,
		wire:     smtpConn,
		cl:       cl,
		tlsState: tlsState,
		timeout:  r.commandTimeout,
		ext:      make(map[string]string),
	}
	for _, name := range knownExtensions {
		if ok, param := cl.Extension(name); ok {
			c.ext[name] = param
		}
	}
	return c, nil
}

// startTLS does the plaintext part of a STARTTLS session itself: read the
// greeting, EHLO with our name, require STARTTLS, and switch to TLS.
func (r *Relay) startTLS(ctx context.Context, lc *limitConn, s *server) (*tls.Conn, error) {
	br := bufio.NewReader(lc)
	tr := textproto.NewReader(br)
	tw := textproto.NewWriter(bufio.NewWriter(lc))

	if _, _, err := tr.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("greeting: %w", stringifyProto(err))
	}
	if err := tw.PrintfLine("EHLO %s", r.helo); err != nil {
		return nil, err
	}
	_, msg, err := tr.ReadResponse(250)
	if err != nil {
		return nil, fmt.Errorf("EHLO: %w", stringifyProto(err))
	}
	offered := false
	for _, line := range strings.Split(msg, "\n")[1:] {
		kw, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if strings.EqualFold(kw, "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		return nil, errors.New("STARTTLS required but not offered by the server")
	}
	if err := tw.PrintfLine("STARTTLS"); err != nil {
		return nil, err
	}
	if _, _, err := tr.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("STARTTLS: %w", stringifyProto(err))
	}
	if br.Buffered() > 0 {
		// Anything after the 220 in plaintext would be read as if it came
		// over TLS (response injection): refuse.
		return nil, errors.New("STARTTLS: server sent data after its 220 reply")
	}
	tc := tls.Client(lc, s.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("STARTTLS handshake: %w", err)
	}
	return tc, nil
}

// stringifyProto turns an SMTP reply error into an error that is not one
// (Open's errors are about servers, not replies to relay).
func stringifyProto(err error) error {
	var pe *textproto.Error
	if errors.As(err, &pe) {
		return fmt.Errorf("server replied %d %s", pe.Code, oneLine(pe.Msg))
	}
	return err
}

func stringifySMTP(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Errorf("server replied %s", describe(se))
	}
	return err
}

func describe(se *smtp.SMTPError) string {
	s := fmt.Sprintf("%d", se.Code)
	if se.EnhancedCode != smtp.EnhancedCodeNotSet && se.EnhancedCode != smtp.NoEnhancedCode {
		s += fmt.Sprintf(" %d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return s + " " + oneLine(se.Message)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " / ") }

// knownExtensions are the EHLO keywords Conn.EHLOExtension can report
// (go-smtp keeps its list private).
var knownExtensions = []string{
	"8BITMIME", "AUTH", "BINARYMIME", "CHUNKING", "DELIVERBY", "DSN",
	"ENHANCEDSTATUSCODES", "ETRN", "LIMITS", "MT-PRIORITY", "PIPELINING",
	"REQUIRETLS", "RRVS", "SIZE", "SMTPUTF8", "STARTTLS", "VRFY", "XCLIENT",
	"XFORWARD",
}
