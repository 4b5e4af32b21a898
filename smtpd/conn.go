package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"

	"mailgate/internal/mailaddr"
	"mailgate/internal/spool"
)

// maxAuthLine is RFC 4954 §4's minimum for AUTH continuation lines.
const maxAuthLine = 12288

type conn struct {
	srv        *Server
	cfg        *Config
	newHandler func(ConnInfo) Handler
	h          Handler

	nc  net.Conn // the current connection: plain, or *tls.Conn
	raw net.Conn // the TCP connection; never changes, safe for drain/abort
	dr  deadlineReader
	rd  *bufio.Reader
	wr  *bufio.Writer

	start    time.Time
	helo     string
	tls      bool
	authUser string
	inTxn    bool
	rcpts    int
	messages int

	commands, errors, authFailures int
	end                            string

	draining atomic.Bool
	busy     atomic.Bool // in a transaction (MAIL to end of DATA): a drain lets it finish
}

// deadlineReader sets a read deadline before every read: an idle timeout,
// capped by a hard deadline (for DATA). go-smtp's single ReadTimeout could
// not do this.
type deadlineReader struct {
	c    *conn
	idle time.Duration
	hard time.Time
	set  time.Time // the deadline last set on the connection
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	now := time.Now()
	dl := now.Add(d.idle)
	if !d.hard.IsZero() && d.hard.Before(dl) {
		dl = d.hard
	}
	// While draining, the deadline is always set: drain may have moved it
	// to "now" behind our back just as a transaction started (busy), and
	// that transaction must be allowed to finish.
	draining := d.c.draining.Load()
	if draining && !d.c.busy.Load() {
		dl = now
	}
	// Moving a deadline costs a runtime timer update: skip it while the
	// one set is still close enough (within a tenth of the idle timeout).
	if diff := dl.Sub(d.set); draining || diff < 0 || diff > d.idle/10 || !d.hard.IsZero() && dl.Equal(d.hard) {
		_ = d.c.nc.SetReadDeadline(dl)
		d.set = dl
	}
	return d.c.nc.Read(p)
}

func newConn(s *Server, nc net.Conn) *conn {
	st := s.cur.Load()
	if s.proxy != nil {
		nc = &proxyConn{Conn: nc} // its header is read in serve, not in Accept
	}
	c := &conn{srv: s, cfg: &st.cfg, newHandler: st.newHandler, nc: nc, raw: nc, start: time.Now()}
	c.dr.c = c
	c.dr.idle = st.cfg.GreetingTimeout
	c.rd = bufio.NewReaderSize(&c.dr, max(4096, st.cfg.MaxLineLength+2))
	c.wr = bufio.NewWriterSize(nc, 1024)
	return c
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// drain asks the connection to close with a 421 at its next command; a
// transaction in progress (MAIL given) is let finish its message first,
// up to the shutdown deadline. Nothing is lost: a transaction cut before
// the end of DATA was never acknowledged.
func (c *conn) drain() {
	c.draining.Store(true)
	if !c.busy.Load() {
		// On the TCP connection: a TLS connection reads through it.
		_ = c.raw.SetReadDeadline(time.Now())
		if c.busy.Load() {
			// A transaction started meanwhile: undo, so it can finish;
			// while draining, its reads set their deadlines themselves.
			_ = c.raw.SetReadDeadline(time.Time{})
		}
	}
}

// abort closes the connection now (shutdown deadline reached).
func (c *conn) abort() { _ = c.raw.Close() }

func (c *conn) serve() {
	stats := Stats{}
	defer func() {
		if r := recover(); r != nil {
			c.srv.log.Error("panic in SMTP session", "listener", c.cfg.Name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.end = "internal error"
			c.reply(replyLocalError)
		}
		_ = c.nc.Close()
		if c.h != nil {
			stats.Commands, stats.Errors, stats.End = c.commands, c.errors, c.end
			stats.Duration, stats.TLS = time.Since(c.start), c.tls
			c.h.Close(stats)
		}
	}()

	info, ok := c.connInfo() // reads the PROXY header on a PROXY listener
	if !ok {
		return
	}
	c.h = c.newHandler(info)

	if c.cfg.TLSMode == TLSImplicit {
		if !c.handshake() {
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommandTimeout)
	refusal := c.h.Connect(ctx)
	cancel()
	if refusal != nil {
		refusal.Close = true
		c.end = "refused at connect"
		c.reply(*refusal)
		return
	}
	if p, ok := c.h.(Pregreeter); ok {
		if wait := p.PregreetWait(); wait > 0 && !c.pregreetPassed(p, wait) {
			return
		}
	}
	c.reply(Reply{Code: 220, Text: c.cfg.Hostname + " ESMTP"})

	for {
		line, tooLong, err := c.readLine(c.cfg.MaxLineLength)
		if err != nil {
			c.readFailed(err)
			return
		}
		c.dr.idle = c.cfg.CommandTimeout
		c.commands++
		if c.cfg.MaxCommands > 0 && c.commands > c.cfg.MaxCommands {
			c.end = "too many commands"
			c.reply(replyTooManyCmds)
			return
		}
		if tooLong {
			if c.protocolError(replyLineTooLong) {
				return
			}
			continue
		}
		if c.handle(line) {
			return
		}
		if c.draining.Load() && !c.busy.Load() {
			c.end = "shutdown"
			c.reply(replyShutdown)
			return
		}
	}
}

// pregreetPassed holds the banner back for wait and reports whether the
// session may go on: a client that talks meanwhile is judged by the
// handler, one that hangs up is gone.
func (c *conn) pregreetPassed(p Pregreeter, wait time.Duration) bool {
	c.dr.hard = time.Now().Add(wait)
	_, err := c.rd.Peek(1)
	c.dr.hard = time.Time{}
	var ne net.Error
	switch {
	case err == nil:
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommandTimeout)
		refusal := p.Pregreet(ctx)
		cancel()
		if refusal != nil {
			refusal.Close = true
			c.end = "refused at connect: pregreet"
			c.reply(*refusal)
			return false
		}
		return true
	case errors.As(err, &ne) && ne.Timeout() && !c.draining.Load():
		return true
	}
	c.readFailed(err)
	return false
}

// readFailed ends the session after a read error.
func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		if c.draining.Load() {
			c.end = "shutdown"
			c.reply(replyShutdown)
			return
		}
		c.end = "timeout"
		c.reply(replyTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		c.end = "client closed"
	default:
		c.end = "read error"
	}
}

// readLine reads one line of at most limit octets including CRLF. A longer
// line is read to its end and reported as tooLong.
func (c *conn) readLine(limit int) (line []byte, tooLong bool, err error) {
	line, err = c.rd.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		for err == bufio.ErrBufferFull {
			_, err = c.rd.ReadSlice('\n')
		}
		return nil, err == nil, err
	}
	if err != nil {
		return nil, false, err
	}
	if len(line) > limit {
		return nil, true, nil
	}
	line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
	return line, false, nil
}

// reply writes r; it flushes unless more pipelined commands are waiting.
func (c *conn) reply(r Reply) {
	lines := strings.Split(r.Text, "\n")
	code := strconv.Itoa(r.Code)
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		c.wr.WriteString(code)
		c.wr.WriteString(sep)
		if r.Enhanced != [3]int{} {
			c.wr.WriteString(enhanced(r.Enhanced))
			if l != "" {
				c.wr.WriteByte(' ')
			}
		}
		c.wr.WriteString(strings.TrimRight(l, "\r"))
		c.wr.WriteString("\r\n")
	}
	if r.Close || !c.commandWaiting() {
		c.flush()
	}
}

// commandWaiting reports whether a whole pipelined command line is already
// buffered: only then may a reply wait to be sent with the next one.
func (c *conn) commandWaiting() bool {
	n := c.rd.Buffered()
	if n == 0 {
		return false
	}
	b, _ := c.rd.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

func (c *conn) flush() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.CommandTimeout))
	_ = c.wr.Flush()
}

// protocolError replies r and counts an error; it reports whether the
// connection must close because max_errors was exceeded.
func (c *conn) protocolError(r Reply) bool {
	c.errors++
	if c.cfg.MaxErrors > 0 && c.errors > c.cfg.MaxErrors {
		c.end = "too many errors"
		c.reply(replyTooManyErrors)
		return true
	}
	c.reply(r)
	return false
}

// send replies with r (nil: def) and reports whether to close.
func (c *conn) send(r *Reply, def Reply) bool {
	if r == nil {
		r = &def
	}
	c.reply(*r)
	if r.Close {
		c.end = "closed by policy: " + r.String()
	}
	return r.Close
}

// handle runs one command and reports whether the connection must close.
func (c *conn) handle(line []byte) bool {
	for _, b := range line {
		if b < 0x20 && b != '\t' || b == 0x7f {
			return c.protocolError(replyBadChars)
		}
	}
	verb, arg, _ := strings.Cut(string(line), " ")
	verb = strings.ToUpper(verb)
	switch verb {
	case "HELO", "EHLO":
		return c.hello(arg, verb == "EHLO")
	case "MAIL":
		return c.mail(arg)
	case "RCPT":
		return c.rcpt(arg)
	case "DATA":
		return c.data(arg)
	case "RSET":
		c.resetTxn()
		c.reply(replyOK)
	case "NOOP":
		c.reply(replyOK)
	case "QUIT":
		c.end = "quit"
		c.reply(replyBye)
		return true
	case "VRFY":
		c.reply(replyVrfy)
	case "EXPN", "HELP", "TURN", "ETRN", "ATRN", "BDAT", "SEND", "SOML", "SAML", "VERB", "XCLIENT", "XFORWARD":
		c.reply(replyNotImpl)
	case "STARTTLS":
		return c.startTLS(arg)
	case "AUTH":
		return c.auth(arg)
	case "GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "USER":
		// A web or POP client talking to the SMTP port: Postfix's
		// smtpd_forbidden_commands. Nothing good follows.
		c.end = "not an SMTP client"
		c.reply(replyNotSMTP)
		return true
	default:
		return c.protocolError(replyUnknown)
	}
	return false
}

func (c *conn) ctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func (c *conn) hello(arg string, extended bool) bool {
	// Only the first word counts; some clients add more.
	fields := strings.Fields(arg)
	if len(fields) == 0 || len(fields[0]) > 255 {
		return c.protocolError(replyHeloSyntax)
	}
	name := fields[0]
	c.resetTxn()
	ctx, cancel := c.ctx(c.cfg.CommandTimeout)
	defer cancel()
	if r := c.h.Helo(ctx, name, extended); r != nil && !r.Positive() {
		return c.send(r, Reply{})
	}
	c.helo = name
	if !extended {
		c.reply(Reply{Code: 250, Text: c.cfg.Hostname})
		return false
	}
	ext := []string{c.cfg.Hostname, "PIPELINING"}
	if c.cfg.MaxMessageSize > 0 {
		ext = append(ext, "SIZE "+strconv.FormatInt(c.cfg.MaxMessageSize, 10))
	}
	ext = append(ext, "8BITMIME", "ENHANCEDSTATUSCODES")
	if c.cfg.TLSMode == TLSStartTLS && !c.tls {
		ext = append(ext, "STARTTLS")
	}
	if c.authOffered() {
		ext = append(ext, "AUTH "+strings.Join(c.cfg.AuthMechanisms, " "))
	}
	c.reply(Reply{Code: 250, Text: strings.Join(ext, "\n")})
	return false
}

// authOffered: AUTH is only ever offered over TLS.
func (c *conn) authOffered() bool {
	return c.tls && c.cfg.AuthMode != AuthOff && c.authUser == "" && len(c.cfg.AuthMechanisms) > 0
}

func (c *conn) resetTxn() {
	if c.inTxn {
		c.h.Reset()
	}
	c.inTxn, c.rcpts = false, 0
	c.busy.Store(false)
}

// cutPrefixFold is strings.CutPrefix, ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func (c *conn) mail(arg string) bool {
	switch {
	case c.helo == "":
		return c.protocolError(replyHeloFirst)
	case c.inTxn:
		return c.protocolError(replyNested)
	case c.cfg.AuthMode == AuthRequired && c.authUser == "":
		if !c.tls {
			c.reply(replyTLSFirst)
		} else {
			c.reply(replyAuthRequired)
		}
		return false
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		return c.protocolError(replyMailSyntax)
	}
	from, paramText, err := mailaddr.ParsePath(rest)
	if err != nil {
		return c.protocolError(replyBadSender)
	}
	if !from.Null && from.Domain == "" {
		c.reply(replyNeedFQDN)
		return false
	}
	var params MailParams
	for _, p := range strings.Fields(paramText) {
		key, val, _ := strings.Cut(p, "=")
		switch strings.ToUpper(key) {
		case "SIZE":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 {
				return c.protocolError(replyBadSize)
			}
			params.Size = n
		case "BODY":
			v := strings.ToUpper(val)
			if v != "7BIT" && v != "8BITMIME" {
				return c.protocolError(replyBadParam)
			}
			params.Body = v
		case "AUTH":
			// RFC 4954 §5: the AUTH= parameter may be ignored.
		default:
			return c.protocolError(replyBadParam)
		}
	}
	ctx, cancel := c.ctx(c.cfg.CommandTimeout)
	defer cancel()
	r := c.h.Mail(ctx, from, params)
	if r == nil || r.Positive() {
		c.inTxn = true
		c.busy.Store(true)
	}
	return c.send(r, Reply{Code: 250, Enhanced: [3]int{2, 1, 0}, Text: "Sender ok"})
}

func (c *conn) rcpt(arg string) bool {
	if !c.inTxn {
		return c.protocolError(replyNeedMail)
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		return c.protocolError(replyRcptSyntax)
	}
	to, params, err := mailaddr.ParsePath(rest)
	if err != nil || to.Null {
		return c.protocolError(replyBadRcpt)
	}
	if params != "" {
		return c.protocolError(replyBadParam)
	}
	ctx, cancel := c.ctx(c.cfg.CommandTimeout)
	defer cancel()
	r := c.h.Rcpt(ctx, to)
	if r == nil || r.Positive() {
		c.rcpts++
	}
	return c.send(r, Reply{Code: 250, Enhanced: [3]int{2, 1, 5}, Text: "Recipient ok"})
}

func (c *conn) data(arg string) bool {
	switch {
	case arg != "":
		return c.protocolError(replyNoArgs)
	case !c.inTxn:
		return c.protocolError(replyNeedMail)
	case c.rcpts == 0:
		return c.protocolError(replyNeedRcpt)
	}
	ctx, cancel := c.ctx(c.cfg.CommandTimeout)
	r := c.h.DataStart(ctx)
	cancel()
	if r != nil && !r.Positive() {
		closeConn := c.send(r, Reply{})
		c.resetTxn()
		return closeConn
	}
	c.busy.Store(true)
	defer c.busy.Store(false)
	c.reply(replyData)
	c.flush()

	c.dr.hard = time.Now().Add(c.cfg.DataTimeout)
	msg := spool.New(c.cfg.SpoolThreshold, c.cfg.MaxMessageSize, c.cfg.SpoolDir)
	res, err := readData(c.rd, msg)
	if err == nil {
		err = msg.Flush() // a full disk is heard of now, not by a filter
	}
	c.dr.hard = time.Time{}
	if err != nil {
		_ = msg.Close()
		c.resetTxn()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.end = "timeout in DATA"
			c.reply(replyTimeout)
		} else if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
			c.end = "client closed in DATA"
		} else {
			c.end = "error in DATA"
			c.srv.log.Warn("reading DATA failed", "listener", c.cfg.Name, "err", err)
			c.reply(replyLocalError)
		}
		return true
	}
	dctx, dcancel := c.ctx(c.cfg.DataTimeout)
	final := c.h.Data(dctx, msg, res)
	dcancel()
	_ = msg.Close()
	c.resetTxn()
	if final.Positive() {
		c.messages++
	}
	c.reply(final)
	if final.Close {
		c.end = "closed by policy: " + final.String()
	}
	return final.Close
}

func (c *conn) startTLS(arg string) bool {
	switch {
	case c.cfg.TLSMode != TLSStartTLS || c.cfg.TLSConfig == nil || c.tls:
		return c.protocolError(replyNoTLS)
	case arg != "":
		return c.protocolError(replyNoArgs)
	}
	c.reply(replyStartTLS)
	c.flush()
	// Anything the client pipelined after STARTTLS was sent in clear text
	// and must not be taken as coming over TLS (CVE-2011-0411).
	if n := c.rd.Buffered(); n > 0 {
		_, _ = c.rd.Discard(n)
	}
	if !c.handshake() {
		return true
	}
	c.helo, c.authUser = "", ""
	c.resetTxn()
	return false
}

// handshake runs a server TLS handshake and switches the connection to it.
func (c *conn) handshake() bool {
	tc := tls.Server(c.nc, c.cfg.TLSConfig)
	_ = tc.SetDeadline(time.Now().Add(c.cfg.CommandTimeout))
	if err := tc.Handshake(); err != nil {
		c.end = "TLS handshake failed"
		c.srv.log.Debug("TLS handshake failed", "listener", c.cfg.Name, "err", err)
		return false
	}
	_ = tc.SetDeadline(time.Time{})
	c.dr.set = time.Time{} // the deadline was cleared: set it on the next read
	c.nc = tc
	c.tls = true
	c.rd.Reset(&c.dr)
	c.wr.Reset(tc)
	c.h.TLSStarted(tc.ConnectionState())
	return true
}

func (c *conn) auth(arg string) bool {
	switch {
	case c.cfg.AuthMode == AuthOff || c.cfg.Authenticator == nil:
		return c.protocolError(replyNoAuth)
	case !c.tls:
		c.reply(replyTLSFirst)
		return false
	case c.helo == "":
		return c.protocolError(replyHeloFirst)
	case c.authUser != "":
		return c.protocolError(replyAuthDone)
	case c.inTxn:
		return c.protocolError(replyAuthInTxn)
	}
	mech, initial, hasInitial := strings.Cut(strings.TrimSpace(arg), " ")
	mech = strings.ToUpper(mech)
	offered := false
	for _, m := range c.cfg.AuthMechanisms {
		offered = offered || m == mech
	}
	if !offered {
		return c.protocolError(replyAuthMech)
	}
	ctx, cancel := c.ctx(c.cfg.CommandTimeout)
	r := c.h.AuthStart(ctx)
	cancel()
	if r != nil && !r.Positive() {
		return c.send(r, Reply{})
	}

	var user, pass string
	var st authStatus
	var resp []byte
	switch mech {
	case "PLAIN":
		if resp, st = c.authResponse("", initial, hasInitial); st == authOK {
			// go-sasl parses "authzid NUL authcid NUL passwd"; an authzid
			// other than the user is refused (no acting as someone else).
			srv := sasl.NewPlainServer(func(identity, username, password string) error {
				if identity != "" && identity != username {
					return errors.New("authzid differs")
				}
				user, pass = username, password
				return nil
			})
			if _, _, err := srv.Next(resp); err != nil {
				user, pass = "", ""
			}
		}
	case "LOGIN":
		if resp, st = c.authResponse("Username:", initial, hasInitial); st == authOK {
			user = string(resp)
			if resp, st = c.authResponse("Password:", "", false); st == authOK {
				pass = string(resp)
			}
		}
	}
	switch st {
	case authClosed:
		return true
	case authCancelled:
		return c.protocolError(replyAuthCancel)
	case authUndecodable:
		return c.protocolError(replyAuthB64)
	}
	if user != "" && c.cfg.Authenticator.Verify(user, pass) {
		c.authUser = user
		c.h.Authenticated(user)
		c.reply(replyAuthOK)
		return false
	}
	c.authFailures++
	c.h.AuthFailed(user)
	if c.authFailures >= c.cfg.MaxAuthFailures {
		c.end = "too many authentication failures"
		c.reply(replyAuthTooMany)
		return true
	}
	c.reply(replyAuthFailed)
	return false
}

type authStatus int

const (
	authOK authStatus = iota
	authCancelled
	authUndecodable
	authClosed
)

// authResponse gets one SASL response: the initial response if given,
// else the answer to a 334 challenge.
func (c *conn) authResponse(challenge, initial string, hasInitial bool) ([]byte, authStatus) {
	line := initial
	if !hasInitial {
		c.reply(Reply{Code: 334, Text: base64.StdEncoding.EncodeToString([]byte(challenge))})
		c.flush()
		b, tooLong, err := c.readLine(maxAuthLine)
		if err != nil {
			c.readFailed(err)
			return nil, authClosed
		}
		if tooLong {
			return nil, authUndecodable
		}
		line = string(b)
	}
	switch line = strings.TrimSpace(line); line {
	case "*":
		return nil, authCancelled
	case "=":
		return []byte{}, authOK
	}
	dec, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, authUndecodable
	}
	return dec, authOK
}

// newID returns a short random session id, like an MTA's queue id.
func newID() string {
	const alphabet = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
	var b [12]byte
	n := rand.Uint64()
	for i := range b {
		b[i] = alphabet[n%uint64(len(alphabet))]
		n /= uint64(len(alphabet))
	}
	return string(b[:])
}
