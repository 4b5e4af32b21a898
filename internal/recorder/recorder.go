// Package recorder is a small, real SMTP server that records what it
// receives. It stands in for the internal "upstream" mail server in tests and
// in the demo.
//
// It speaks raw SMTP text over TCP (it deliberately does not use go-smtp's
// server) so that it can be lenient in the ways unpatched MTAs are: in
// Lenient mode a message ends at any end-of-data look-alike ("\n.\n",
// "\r.\r", "\r\n.\r", "\n.\r\n", ...) and whatever follows is parsed as
// further SMTP commands. That is exactly how SMTP smuggling works, so a
// smuggled MAIL/RCPT/DATA shows up as a second recorded message — which is
// how tests prove the gateway never lets one through.
//
// Faults (a 421 banner, no banner, a hang before the final reply, a reset in
// the middle of DATA, ...) can be injected, and changed at run time.
package recorder

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is a failure the server injects into new and running sessions.
type Fault int32

const (
	// FaultNone: behave normally.
	FaultNone Fault = iota
	// FaultRefuseBanner: greet with "421 4.3.2 ..." and close.
	FaultRefuseBanner
	// FaultNoBanner: accept the connection and never greet (the connection
	// stays open until the client or Close ends it).
	FaultNoBanner
	// FaultNoEHLO: answer EHLO with 502 (HELO still works), like a very old
	// server; STARTTLS is then impossible.
	FaultNoEHLO
	// FaultHangAtRcpt: read RCPT and never answer it.
	FaultHangAtRcpt
	// FaultCloseAfterRcpt: answer RCPT normally, then close the connection.
	FaultCloseAfterRcpt
	// FaultResetMidData: after the 354, read part of the data (one line),
	// then reset the TCP connection.
	FaultResetMidData
	// FaultHangAtDataEnd: read the whole message, then never answer the
	// final dot. Nothing is recorded.
	FaultHangAtDataEnd
)

var faultNames = [...]string{"none", "refuse-banner", "no-banner", "no-ehlo",
	"hang-at-rcpt", "close-after-rcpt", "reset-mid-data", "hang-at-data-end"}

func (f Fault) String() string {
	if f >= 0 && int(f) < len(faultNames) {
		return faultNames[f]
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Options configure a Server. The zero value is a plain, strict server on
// 127.0.0.1 with a random port.
type Options struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// Hostname in the banner and EHLO reply; default "recorder.invalid".
	Hostname string
	// TLSConfig, if set, makes the server offer STARTTLS (or, with
	// ImplicitTLS, speak TLS from the first byte).
	TLSConfig *tls.Config
	// ImplicitTLS wraps the listener in TLS (needs TLSConfig).
	ImplicitTLS bool
	// RequireTLS refuses MAIL before STARTTLS with 530 (needs TLSConfig).
	RequireTLS bool
	// Lenient ends DATA at a "." line preceded by CRLF, LF or CR and
	// terminated by CRLF, LF or CR — like unpatched MTAs vulnerable to SMTP
	// smuggling — and parses whatever follows as commands; empty command
	// lines are then ignored. Without Lenient only CRLF.CRLF ends DATA
	// (RFC 5321). In both modes a command line may end in a bare LF.
	Lenient bool
	// MaxSize is the largest message accepted (advertised with SIZE);
	// default 64 MiB. Larger ones are read to the end and refused with 552.
	MaxSize int64
	// RejectMail, if it returns a non-empty reply line (e.g.
	// "550 5.7.1 Sender refused"), answers MAIL FROM with it.
	RejectMail func(from string) string
	// RejectRcpt, if it returns a non-empty reply line (e.g.
	// "550 5.1.1 <x>: Recipient address rejected: User unknown"), refuses
	// that recipient with it.
	RejectRcpt func(rcpt string) string
	// DataReply chooses the reply to the final dot; default
	// "250 2.0.0 Ok: queued as <id>". A message is recorded only when the
	// reply starts with "2".
	DataReply func(msg []byte) string
	// Fault is the initial injected fault; see SetFault.
	Fault Fault
	// OnMessage, if set, is called (in the session's goroutine) for every
	// recorded message.
	OnMessage func(Message)
	// Logf, if set, receives the session transcripts ("C: ..." / "S: ...").
	Logf func(format string, args ...any)
}

// Message is one message the server accepted.
type Message struct {
	Helo  string   // the last HELO/EHLO argument of the session
	From  string   // MAIL FROM address, without angle brackets
	Rcpts []string // accepted RCPT TO addresses, without angle brackets
	// Data is the message exactly as received, after dot-unstuffing,
	// including the line ending before the terminating dot.
	Data       []byte
	TLS        bool // the session was encrypted when DATA ended
	RemoteAddr string
	Time       time.Time
}

func (m Message) clone() Message {
	m.Rcpts = append([]string(nil), m.Rcpts...)
	m.Data = append([]byte(nil), m.Data...)
	return m
}

// Server is a running recorder. Its methods are safe for concurrent use.
type Server struct {
	opts     Options
	ln       net.Listener
	fault    atomic.Int32
	sessions atomic.Int64
	seq      atomic.Uint64

	mu     sync.Mutex
	msgs   []Message
	notify chan struct{} // closed and replaced whenever a message is recorded
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start listens and serves in the background until Close.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Hostname == "" {
		opts.Hostname = "recorder.invalid"
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = 64 << 20
	}
	if (opts.ImplicitTLS || opts.RequireTLS) && opts.TLSConfig == nil {
		return nil, errors.New("recorder: ImplicitTLS and RequireTLS need a TLSConfig")
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, err
	}
	if opts.ImplicitTLS {
		ln = tls.NewListener(ln, opts.TLSConfig)
	}
	s := &Server{
		opts:   opts,
		ln:     ln,
		notify: make(chan struct{}),
		conns:  make(map[net.Conn]struct{}),
	}
	s.fault.Store(int32(opts.Fault))
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is the address the server listens on, "127.0.0.1:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SetFault changes the injected fault. It takes effect at the next point
// where that fault applies, in new and in running sessions.
func (s *Server) SetFault(f Fault) { s.fault.Store(int32(f)) }

func (s *Server) currentFault() Fault { return Fault(s.fault.Load()) }

// Sessions is the number of connections accepted so far.
func (s *Server) Sessions() int { return int(s.sessions.Load()) }

// Messages returns copies of the messages recorded so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = m.clone()
	}
	return out
}

// WaitMessages waits until at least n messages were recorded and returns
// them all, or returns what there is and an error after timeout.
func (s *Server) WaitMessages(n int, timeout time.Duration) ([]Message, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		have, ch := len(s.msgs), s.notify
		s.mu.Unlock()
		if have >= n {
			return s.Messages(), nil
		}
		select {
		case <-ch:
		case <-timer.C:
			msgs := s.Messages()
			return msgs, fmt.Errorf("recorder: %d messages after %v, want %d", len(msgs), timeout, n)
		}
	}
}

// Close stops listening, closes every open session and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.sessions.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(c)
		}()
	}
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m.clone())
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	if s.opts.OnMessage != nil {
		s.opts.OnMessage(m.clone())
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// maxCommandLine bounds a command line (generous: RFC 5321 says 512).
const maxCommandLine = 4096

var errLineTooLong = errors.New("line too long")

type session struct {
	s      *Server
	tcp    net.Conn // the accepted connection (for resets)
	conn   net.Conn // what we speak on (tcp, or TLS on top of it)
	br     *bufio.Reader
	tls    bool
	remote string

	helo   string
	inMail bool
	from   string
	rcpts  []string
}

func (s *Server) serve(c net.Conn) {
	ss := &session{s: s, tcp: c, conn: c, br: bufio.NewReaderSize(c, maxCommandLine), remote: c.RemoteAddr().String()}
	if tc, ok := c.(*tls.Conn); ok {
		ss.tls = true
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			s.logf("recorder %s: TLS handshake: %v", ss.remote, err)
			return
		}
		c.SetDeadline(time.Time{})
	}
	switch s.currentFault() {
	case FaultRefuseBanner:
		ss.reply("421 4.3.2 " + s.opts.Hostname + " Service not available, closing transmission channel")
		return
	case FaultNoBanner:
		ss.hang()
		return
	}
	ss.reply("220 " + s.opts.Hostname + " ESMTP recorder")
	for {
		line, err := ss.readLine()
		if errors.Is(err, errLineTooLong) {
			ss.reply("500 5.5.2 Error: line too long")
			continue
		}
		if err != nil {
			return
		}
		s.logf("recorder %s C: %s", ss.remote, line)
		if !ss.command(line) {
			return
		}
	}
}

// readLine reads one command line; it ends in CRLF (or, leniently, any LF)
// and is returned without the line ending.
func (ss *session) readLine() (string, error) {
	line, err := ss.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = ss.br.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return string(line), nil
}

func (ss *session) reply(line string) {
	ss.s.logf("recorder %s S: %s", ss.remote, strings.ReplaceAll(line, "\r\n", " | "))
	ss.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(ss.conn, line+"\r\n")
	ss.conn.SetWriteDeadline(time.Time{})
}

// hang reads and discards input until the client or Close ends the
// connection, never answering.
func (ss *session) hang() {
	io.Copy(io.Discard, ss.conn)
}

// reset closes the connection with a TCP RST.
func (ss *session) reset() {
	if tc, ok := ss.tcp.(*net.TCPConn); ok {
		tc.SetLinger(0)
	} else if tc, ok := ss.tcp.(*tls.Conn); ok {
		if nc, ok := tc.NetConn().(*net.TCPConn); ok {
			nc.SetLinger(0)
		}
	}
	ss.tcp.Close()
}

func (ss *session) resetTransaction() {
	ss.inMail = false
	ss.from = ""
	ss.rcpts = nil
}

// command runs one command; false ends the session.
func (ss *session) command(line string) bool {
	s := ss.s
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	arg = strings.TrimSpace(arg)
	switch verb {
	case "":
		if !s.opts.Lenient {
			ss.reply("500 5.5.2 Error: bad syntax")
		}
	case "EHLO", "HELO":
		if arg == "" {
			ss.reply("501 5.5.4 Syntax: " + verb + " hostname")
			return true
		}
		if verb == "EHLO" && s.currentFault() == FaultNoEHLO {
			ss.reply("502 5.5.1 Error: command not implemented")
			return true
		}
		ss.helo = arg
		ss.resetTransaction()
		if verb == "HELO" {
			ss.reply("250 " + s.opts.Hostname)
			return true
		}
		lines := []string{s.opts.Hostname, "PIPELINING", "SIZE " + strconv.FormatInt(s.opts.MaxSize, 10),
			"8BITMIME", "ENHANCEDSTATUSCODES"}
		if s.opts.TLSConfig != nil && !ss.tls {
			lines = append(lines, "STARTTLS")
		}
		var b strings.Builder
		for i, l := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			if i > 0 {
				b.WriteString("\r\n")
			}
			b.WriteString("250" + sep + l)
		}
		ss.reply(b.String())
	case "STARTTLS":
		if s.opts.TLSConfig == nil {
			ss.reply("502 5.5.1 Error: command not implemented")
			return true
		}
		if ss.tls {
			ss.reply("503 5.5.1 Error: TLS already active")
			return true
		}
		ss.reply("220 2.0.0 Ready to start TLS")
		tc := tls.Server(ss.conn, s.opts.TLSConfig)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			s.logf("recorder %s: STARTTLS handshake: %v", ss.remote, err)
			return false
		}
		tc.SetDeadline(time.Time{})
		ss.conn = tc
		ss.br = bufio.NewReaderSize(tc, maxCommandLine) // plaintext pipelined after STARTTLS is discarded
		ss.tls = true
		ss.helo = ""
		ss.resetTransaction()
	case "MAIL":
		if ss.helo == "" {
			ss.reply("503 5.5.1 Error: send HELO/EHLO first")
			return true
		}
		if s.opts.RequireTLS && !ss.tls {
			ss.reply("530 5.7.0 Must issue a STARTTLS command first")
			return true
		}
		if ss.inMail {
			ss.reply("503 5.5.1 Error: nested MAIL command")
			return true
		}
		addr, ok := parsePath(arg, "FROM:")
		if !ok {
			ss.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
			return true
		}
		if s.opts.RejectMail != nil {
			if r := s.opts.RejectMail(addr); r != "" {
				ss.reply(r)
				return true
			}
		}
		ss.inMail, ss.from, ss.rcpts = true, addr, nil
		ss.reply("250 2.1.0 Ok")
	case "RCPT":
		if !ss.inMail {
			ss.reply("503 5.5.1 Error: need MAIL command")
			return true
		}
		addr, ok := parsePath(arg, "TO:")
		if !ok || addr == "" {
			ss.reply("501 5.5.4 Syntax: RCPT TO:<address>")
			return true
		}
		if s.currentFault() == FaultHangAtRcpt {
			ss.hang()
			return false
		}
		if s.opts.RejectRcpt != nil {
			if r := s.opts.RejectRcpt(addr); r != "" {
				ss.reply(r)
				return true
			}
		}
		ss.rcpts = append(ss.rcpts, addr)
		ss.reply("250 2.1.5 Ok")
		if s.currentFault() == FaultCloseAfterRcpt {
			return false
		}
	case "DATA":
		if !ss.inMail {
			ss.reply("503 5.5.1 Error: need MAIL command")
			return true
		}
		if len(ss.rcpts) == 0 {
			ss.reply("554 5.5.1 Error: no valid recipients")
			return true
		}
		return ss.data()
	case "RSET":
		ss.resetTransaction()
		ss.reply("250 2.0.0 Ok")
	case "NOOP":
		ss.reply("250 2.0.0 Ok")
	case "VRFY":
		ss.reply("252 2.0.0 Cannot VRFY user")
	case "QUIT":
		ss.reply("221 2.0.0 Bye")
		return false
	default:
		ss.reply("502 5.5.2 Error: command not recognized")
	}
	return true
}

// parsePath extracts the address of "FROM:<a> PARAMS" / "TO:<a> PARAMS".
func parsePath(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if strings.HasPrefix(rest, "<") {
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return "", false
		}
		return rest[1:end], true
	}
	addr, _, _ := strings.Cut(rest, " ")
	return addr, addr != ""
}

func (ss *session) data() bool {
	s := ss.s
	ss.reply("354 End data with <CR><LF>.<CR><LF>")
	if s.currentFault() == FaultResetMidData {
		ss.br.ReadSlice('\n')
		ss.reset()
		return false
	}
	var (
		msg []byte
		err error
	)
	if s.opts.Lenient {
		msg, err = ss.readDataLenient()
	} else {
		msg, err = ss.readDataStrict()
	}
	tooBig := errors.Is(err, errTooBig)
	if err != nil && !tooBig {
		return false
	}
	s.logf("recorder %s C: <%d bytes of data>", ss.remote, len(msg))
	if s.currentFault() == FaultHangAtDataEnd {
		ss.hang()
		return false
	}
	if tooBig {
		ss.resetTransaction()
		ss.reply("552 5.3.4 Error: message file too big")
		return true
	}
	id := strings.ToUpper(strconv.FormatUint(0xA0000+s.seq.Add(1), 16))
	reply := "250 2.0.0 Ok: queued as " + id
	if s.opts.DataReply != nil {
		reply = s.opts.DataReply(msg)
	}
	if strings.HasPrefix(reply, "2") {
		s.record(Message{
			Helo: ss.helo, From: ss.from, Rcpts: ss.rcpts, Data: msg,
			TLS: ss.tls, RemoteAddr: ss.remote, Time: time.Now(),
		})
	}
	ss.resetTransaction()
	ss.reply(reply)
	return true
}

var errTooBig = errors.New("message too big")

// readDataStrict reads DATA the RFC 5321 way: lines end in CRLF, only a
// line "." after CRLF (or at the start) ends the message, and a leading dot
// is removed from other lines.
func (ss *session) readDataStrict() ([]byte, error) {
	var (
		msg     []byte
		prevEOL = true // at the start of the data, or after CRLF
		lastCR  bool   // the previous chunk ended in CR
		tooBig  bool
	)
	for {
		line, err := ss.br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		full := err == nil
		if prevEOL && full && string(line) == ".\r\n" {
			break
		}
		if prevEOL && len(line) > 0 && line[0] == '.' {
			line = line[1:]
		}
		prevEOL = full && (bytes.HasSuffix(line, []byte("\r\n")) || len(line) == 1 && lastCR)
		lastCR = len(line) > 0 && line[len(line)-1] == '\r'
		if int64(len(msg)+len(line)) > ss.s.opts.MaxSize {
			tooBig = true
			msg = msg[:0]
		}
		if !tooBig {
			msg = append(msg, line...)
		}
	}
	if tooBig {
		return nil, errTooBig
	}
	return msg, nil
}

// readDataLenient reads DATA like an MTA vulnerable to SMTP smuggling: a
// line start follows CRLF, LF or a bare CR; a "." at a line start followed
// by CR or LF ends the message; a "." at a line start followed by anything
// else is removed (unstuffed). After ".\r", a "\n" already received is
// consumed; otherwise the rest is left for the command parser.
func (ss *session) readDataLenient() ([]byte, error) {
	var (
		msg       []byte
		lineStart = true
		n         int64
	)
	for {
		b, err := ss.br.ReadByte()
		if err != nil {
			return nil, err
		}
		if lineStart && b == '.' {
			nb, err := ss.br.ReadByte()
			if err != nil {
				return nil, err
			}
			if nb == '\n' {
				break
			}
			if nb == '\r' {
				if ss.br.Buffered() > 0 {
					if p, _ := ss.br.Peek(1); p[0] == '\n' {
						ss.br.ReadByte()
					}
				}
				break
			}
			b = nb // unstuffed
		}
		n++
		if n <= ss.s.opts.MaxSize {
			msg = append(msg, b)
		}
		lineStart = b == '\n' || b == '\r'
	}
	if n > ss.s.opts.MaxSize {
		return nil, errTooBig
	}
	return msg, nil
}
