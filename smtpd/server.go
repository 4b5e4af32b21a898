// Package smtpd is the gateway's SMTP server protocol engine.
//
// It is written for the gateway rather than taken from go-smtp's server,
// which cannot do what SPEC §4 asks (see docs/design.md): a connect stage
// before the banner, a 512-octet command line limit separate from
// 998-octet body lines, command and error limits, idle timeouts that hold
// during DATA, STARTTLS and AUTH only as configured, replies that never
// echo client input, and a DATA reader that defeats SMTP smuggling. The
// policy lives in the Handler; this package only speaks the protocol.
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// TLSMode is how a listener offers TLS.
type TLSMode int

const (
	TLSNone TLSMode = iota
	TLSStartTLS
	TLSImplicit
)

// AuthMode is whether a listener offers or requires AUTH.
type AuthMode int

const (
	AuthOff AuthMode = iota
	AuthOptional
	AuthRequired
)

// Authenticator checks credentials. It must take the same time for
// unknown users as for wrong passwords.
type Authenticator interface {
	Verify(user, password string) bool
}

// Config is what the engine needs to know about one listener.
type Config struct {
	Name      string // listener name, for logs
	Hostname  string
	TLSMode   TLSMode
	TLSConfig *tls.Config
	AuthMode  AuthMode
	// AuthMechanisms offered after TLS: "PLAIN", "LOGIN".
	AuthMechanisms  []string
	Authenticator   Authenticator
	MaxAuthFailures int

	MaxLineLength  int
	MaxCommands    int
	MaxErrors      int
	MaxMessageSize int64
	SpoolThreshold int64
	SpoolDir       string

	GreetingTimeout time.Duration
	CommandTimeout  time.Duration
	DataTimeout     time.Duration

	// Proxy, if set, makes the listener require a PROXY protocol header
	// from trusted load balancers (proxyproto.go). It belongs to the
	// listening socket: NewServer fixes it and Update leaves it as it was.
	Proxy *ProxyConfig
}

// ConnInfo describes a client connection to the Handler.
type ConnInfo struct {
	ID       string
	Listener string
	Remote   netip.AddrPort
	Local    netip.AddrPort
	// Proxy is the load balancer that sent a PROXY header (Remote and
	// Local are then the addresses it gave); zero otherwise.
	Proxy netip.AddrPort
}

// Handler is the policy side of one SMTP connection. A nil *Reply from a
// method means "the default positive reply".
type Handler interface {
	// Connect runs before the banner; a reply refuses the connection.
	Connect(ctx context.Context) *Reply
	// Helo is called for HELO/EHLO with the client's name.
	Helo(ctx context.Context, name string, extended bool) *Reply
	// TLSStarted is called after a STARTTLS handshake; the session state
	// is reset as RFC 3207 requires.
	TLSStarted(state tls.ConnectionState)
	// AuthStart is called when a client starts AUTH, before any
	// credentials are read or checked; a reply refuses it.
	AuthStart(ctx context.Context) *Reply
	// Authenticated is called after a successful AUTH.
	Authenticated(user string)
	// AuthFailed is called after each failed AUTH attempt.
	AuthFailed(user string)
	// Mail starts a transaction.
	Mail(ctx context.Context, from Path, params MailParams) *Reply
	// Rcpt adds a recipient.
	Rcpt(ctx context.Context, to Path) *Reply
	// DataStart is called at DATA before the 354.
	DataStart(ctx context.Context) *Reply
	// Data is called with the whole message; its reply is final.
	Data(ctx context.Context, msg *Message, res DataResult) Reply
	// Reset ends the current transaction (RSET, a new EHLO, after DATA).
	Reset()
	// Close is called once when the connection ends.
	Close(stats Stats)
}

// Pregreeter is implemented by Handlers that want pregreet detection
// (postscreen's "talks before the banner"): after Connect the engine holds
// the banner back for PregreetWait and calls Pregreet if the client sent
// anything meanwhile; a reply refuses the connection.
type Pregreeter interface {
	PregreetWait() time.Duration
	Pregreet(ctx context.Context) *Reply
}

// MailParams are the MAIL FROM parameters the engine accepted.
type MailParams struct {
	// Size is the declared SIZE=, 0 if none.
	Size int64
	// Body is "7BIT", "8BITMIME" or "" (not declared).
	Body string
}

// Stats summarises a finished connection for the session log.
type Stats struct {
	Commands int
	Errors   int
	// Reason the connection ended: "quit", "timeout", "client closed",
	// "too many errors", ...
	End      string
	Duration time.Duration
	TLS      bool
}

// Server serves SMTP on listeners with one Handler per connection.
type Server struct {
	// cur is what a newly accepted connection is served with; Update
	// swaps it (a configuration reload) without touching open sessions.
	cur   atomic.Pointer[settings]
	log   *slog.Logger
	proxy *ProxyConfig // Config.Proxy at NewServer; never updated

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup
}

// settings are a listener's configuration and handler factory; a
// connection keeps the ones current when it was accepted until it ends.
type settings struct {
	cfg        Config
	newHandler func(ConnInfo) Handler
}

func newSettings(cfg Config, newHandler func(ConnInfo) Handler) *settings {
	if cfg.MaxLineLength <= 0 {
		cfg.MaxLineLength = 512
	}
	return &settings{cfg: cfg, newHandler: newHandler}
}

// NewServer returns a server for one listener configuration.
func NewServer(cfg Config, newHandler func(ConnInfo) Handler, log *slog.Logger) *Server {
	s := &Server{log: log, proxy: cfg.Proxy, listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
	s.cur.Store(newSettings(cfg, newHandler))
	return s
}

// Update makes the connections accepted from now on use cfg and
// newHandler. Connections already open finish with the configuration and
// handler they started with, so a configuration reload drops no session.
func (s *Server) Update(cfg Config, newHandler func(ConnInfo) Handler) {
	s.cur.Store(newSettings(cfg, newHandler))
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("smtpd: server closed")

// Serve accepts connections on l until it is closed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			// Anything else (EMFILE, ECONNABORTED, ...) is treated as
			// temporary: never let one stop the listener.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed, retrying", "listener", s.cur.Load().cfg.Name, "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting, lets sessions finish until ctx is done, then
// closes the rest with a 421.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		_ = l.Close()
	}
	for c := range s.conns {
		c.drain()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.abort()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}
