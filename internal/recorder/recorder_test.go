package recorder

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawConn is a line-oriented raw SMTP client for tests.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatalf("write %q: %v", s, err)
	}
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (r *rawConn) reply() (string, error) {
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return line, err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) >= 4 && line[3] == '-' {
			continue
		}
		return line, nil
	}
}

func (r *rawConn) expect(code string) string {
	r.t.Helper()
	line, err := r.reply()
	if err != nil {
		r.t.Fatalf("reading reply (want %s): %v", code, err)
	}
	if !strings.HasPrefix(line, code) {
		r.t.Fatalf("reply %q, want %s", line, code)
	}
	return line
}

func (r *rawConn) cmd(line, code string) string {
	r.t.Helper()
	r.send(line + "\r\n")
	return r.expect(code)
}

func TestDeliveryWithGoSMTPClient(t *testing.T) {
	s := start(t, Options{Hostname: "upstream.test"})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cl := smtp.NewClient(c)
	defer cl.Close()
	if err := cl.Hello("gw.example.com"); err != nil {
		t.Fatal(err)
	}
	if ok, v := cl.Extension("SIZE"); !ok || v == "" {
		t.Errorf("SIZE not advertised: %v %q", ok, v)
	}
	if ok, _ := cl.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised without a TLSConfig")
	}
	body := "From: a@example.org\r\nSubject: hi\r\n\r\n.leading dot\r\n..two dots\r\nlast\r\n"
	if err := cl.SendMail("a@example.org", []string{"b@example.com", "c@example.com"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if err := cl.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitMessages(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.Helo != "gw.example.com" || m.From != "a@example.org" || strings.Join(m.Rcpts, ",") != "b@example.com,c@example.com" || m.TLS {
		t.Errorf("envelope: %+v", m)
	}
	if string(m.Data) != body {
		t.Errorf("data %q, want %q", m.Data, body)
	}
	if s.Sessions() != 1 {
		t.Errorf("Sessions() = %d", s.Sessions())
	}
}

func TestRejectHooksAndDataReply(t *testing.T) {
	s := start(t, Options{
		RejectMail: func(from string) string {
			if from == "bad@example.org" {
				return "550 5.7.1 Sender refused"
			}
			return ""
		},
		RejectRcpt: func(rcpt string) string {
			if strings.HasPrefix(rcpt, "nobody@") {
				return "550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown"
			}
			return ""
		},
		DataReply: func(msg []byte) string {
			if strings.Contains(string(msg), "tempfail") {
				return "451 4.3.0 Try later"
			}
			return "250 2.0.0 Ok: fine"
		},
	})
	r := dialRaw(t, s.Addr())
	r.expect("220")
	r.cmd("EHLO gw.example.com", "250")
	r.cmd("MAIL FROM:<bad@example.org>", "550 5.7.1")
	r.cmd("MAIL FROM:<good@example.org> BODY=8BITMIME SIZE=100", "250")
	line := r.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1")
	if line != "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown" {
		t.Errorf("reply %q", line)
	}
	r.cmd("DATA", "554")
	r.cmd("RCPT TO:<x@example.com>", "250")
	r.cmd("DATA", "354")
	r.send("tempfail\r\n.\r\n")
	r.expect("451 4.3.0")
	r.cmd("MAIL FROM:<>", "250")
	r.cmd("RCPT TO:<x@example.com>", "250")
	r.cmd("DATA", "354")
	r.send("ok\r\n.\r\n")
	r.expect("250 2.0.0 Ok: fine")
	r.cmd("RSET", "250")
	r.cmd("NOOP", "250")
	r.cmd("VRFY x", "252")
	r.cmd("EXPN x", "502")
	r.cmd("QUIT", "221")
	msgs := s.Messages()
	if len(msgs) != 1 || msgs[0].From != "" || string(msgs[0].Data) != "ok\r\n" {
		t.Fatalf("messages %+v", msgs)
	}
}

func TestSTARTTLS(t *testing.T) {
	pki, err := NewPKI("mail.internal", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, Options{TLSConfig: pki.ServerTLSConfig(), RequireTLS: true})

	// Before STARTTLS, MAIL is refused.
	r := dialRaw(t, s.Addr())
	r.expect("220")
	r.send("EHLO gw.example.com\r\n")
	var sawSTARTTLS bool
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, "STARTTLS") {
			sawSTARTTLS = true
		}
		if line[3] == ' ' {
			break
		}
	}
	if !sawSTARTTLS {
		t.Error("STARTTLS not advertised")
	}
	r.cmd("MAIL FROM:<a@example.org>", "530")

	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := smtp.NewClientStartTLS(c, pki.ClientTLSConfig("mail.internal"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, ok := cl.TLSConnectionState(); !ok {
		t.Fatal("no TLS")
	}
	if ok, _ := cl.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised again after STARTTLS")
	}
	if err := cl.SendMail("a@example.org", []string{"b@example.com"}, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	cl.Quit()
	msgs, err := s.WaitMessages(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !msgs[0].TLS {
		t.Error("message not marked TLS")
	}
}

func TestImplicitTLS(t *testing.T) {
	pki, err := NewPKI("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, Options{TLSConfig: pki.ServerTLSConfig(), ImplicitTLS: true})
	c, err := tls.Dial("tcp", s.Addr(), pki.ClientTLSConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	cl := smtp.NewClient(c)
	defer cl.Close()
	if err := cl.Hello("gw.example.com"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := cl.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised on implicit TLS")
	}
	if err := cl.SendMail("a@example.org", []string{"b@example.com"}, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitMessages(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !msgs[0].TLS {
		t.Error("message not marked TLS")
	}
}

const smugglingPayload = "From: a@example.org\r\n\r\nhello\r\n.\nMAIL FROM:<x@evil.example>\r\nRCPT TO:<y@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n"

// smuggle sends a transaction whose data is payload in one write, then
// returns the replies that came back: want of them, or fewer after a while.
func smuggle(t *testing.T, s *Server, payload string, want int) []string {
	t.Helper()
	r := dialRaw(t, s.Addr())
	r.expect("220")
	r.cmd("EHLO client.example.org", "250")
	r.cmd("MAIL FROM:<a@example.org>", "250")
	r.cmd("RCPT TO:<b@example.com>", "250")
	r.cmd("DATA", "354")
	r.send(payload)
	var replies []string
	r.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for len(replies) < want {
		line, err := r.reply()
		if err != nil {
			break
		}
		replies = append(replies, line)
	}
	return replies
}

func TestLenientRecordsSmuggledMessage(t *testing.T) {
	s := start(t, Options{Lenient: true})
	replies := smuggle(t, s, smugglingPayload, 5)
	msgs, err := s.WaitMessages(2, 2*time.Second)
	if err != nil {
		t.Fatalf("%v (replies %q)", err, replies)
	}
	if string(msgs[0].Data) != "From: a@example.org\r\n\r\nhello\r\n" {
		t.Errorf("first message %q", msgs[0].Data)
	}
	if msgs[1].From != "x@evil.example" || msgs[1].Rcpts[0] != "y@example.com" || string(msgs[1].Data) != "smuggled\r\n" {
		t.Errorf("smuggled message %+v %q", msgs[1], msgs[1].Data)
	}
	// 250 (first), 250 MAIL, 250 RCPT, 354, 250 (second)
	if len(replies) != 5 {
		t.Errorf("replies %q", replies)
	}
}

func TestStrictDoesNotSplit(t *testing.T) {
	s := start(t, Options{})
	if replies := smuggle(t, s, smugglingPayload, 1); len(replies) != 1 || !strings.HasPrefix(replies[0], "250") {
		t.Fatalf("replies %q", replies)
	}
	msgs, err := s.WaitMessages(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(s.Messages()); n != 1 {
		t.Fatalf("%d messages", n)
	}
	if !strings.Contains(string(msgs[0].Data), "smuggled") {
		t.Errorf("data %q", msgs[0].Data)
	}
}

func TestLenientTerminators(t *testing.T) {
	for _, term := range []string{"\r\n.\r\n", "\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r.\n", "\r.\r\n"} {
		t.Run(strings.NewReplacer("\r", "CR", "\n", "LF").Replace(term), func(t *testing.T) {
			s := start(t, Options{Lenient: true})
			smuggle(t, s, "body"+term+"MAIL FROM:<x@evil.example>\r\nRCPT TO:<y@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n", 5)
			msgs, err := s.WaitMessages(2, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if msgs[1].From != "x@evil.example" {
				t.Errorf("second message %+v", msgs[1])
			}
		})
	}
}

func TestLenientUnstuffs(t *testing.T) {
	s := start(t, Options{Lenient: true})
	smuggle(t, s, "..a\r\nb\n..c\r\n.\r\n", 1)
	msgs, err := s.WaitMessages(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(msgs[0].Data) != ".a\r\nb\n.c\r\n" {
		t.Errorf("data %q", msgs[0].Data)
	}
}

func TestFaultRefuseBanner(t *testing.T) {
	s := start(t, Options{Fault: FaultRefuseBanner})
	r := dialRaw(t, s.Addr())
	r.expect("421 ")
	if _, err := r.br.ReadByte(); err != io.EOF {
		t.Errorf("connection not closed after 421: %v", err)
	}
}

func TestFaultNoBanner(t *testing.T) {
	s := start(t, Options{Fault: FaultNoBanner})
	r := dialRaw(t, s.Addr())
	r.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.br.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("got %v, want a timeout", err)
	}
	// Runtime change: the next session is greeted.
	s.SetFault(FaultNone)
	dialRaw(t, s.Addr()).expect("220")
	if s.Sessions() != 2 {
		t.Errorf("Sessions() = %d", s.Sessions())
	}
}

func TestFaultNoEHLO(t *testing.T) {
	s := start(t, Options{Fault: FaultNoEHLO})
	r := dialRaw(t, s.Addr())
	r.expect("220")
	r.cmd("EHLO gw.example.com", "502")
	r.cmd("HELO gw.example.com", "250")
}

func transaction(t *testing.T, s *Server) *rawConn {
	r := dialRaw(t, s.Addr())
	r.expect("220")
	r.cmd("EHLO gw.example.com", "250")
	r.cmd("MAIL FROM:<a@example.org>", "250")
	return r
}

func TestFaultHangAtRcpt(t *testing.T) {
	s := start(t, Options{Fault: FaultHangAtRcpt})
	r := transaction(t, s)
	r.send("RCPT TO:<b@example.com>\r\n")
	r.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.br.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("got %v, want a timeout", err)
	}
}

func TestFaultCloseAfterRcpt(t *testing.T) {
	s := start(t, Options{Fault: FaultCloseAfterRcpt})
	r := transaction(t, s)
	r.cmd("RCPT TO:<b@example.com>", "250")
	r.send("DATA\r\n")
	if _, err := r.br.ReadByte(); err == nil {
		t.Error("connection still open")
	}
}

func TestFaultResetMidData(t *testing.T) {
	s := start(t, Options{Fault: FaultResetMidData})
	r := transaction(t, s)
	r.cmd("RCPT TO:<b@example.com>", "250")
	r.cmd("DATA", "354")
	// Writes may fail already: the server resets while we send.
	io.WriteString(r.c, "Subject: x\r\n\r\n"+strings.Repeat("line\r\n", 1000))
	io.WriteString(r.c, ".\r\n")
	if line, err := r.reply(); err == nil {
		t.Errorf("got reply %q, want a closed connection", line)
	}
	if n := len(s.Messages()); n != 0 {
		t.Errorf("%d messages recorded", n)
	}
}

func TestFaultHangAtDataEnd(t *testing.T) {
	s := start(t, Options{})
	s.SetFault(FaultHangAtDataEnd)
	r := transaction(t, s)
	r.cmd("RCPT TO:<b@example.com>", "250")
	r.cmd("DATA", "354")
	r.send("x\r\n.\r\n")
	r.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.br.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("got %v, want a timeout", err)
	}
	if n := len(s.Messages()); n != 0 {
		t.Errorf("%d messages recorded", n)
	}
}

func TestTooBig(t *testing.T) {
	s := start(t, Options{MaxSize: 10})
	r := transaction(t, s)
	r.cmd("RCPT TO:<b@example.com>", "250")
	r.cmd("DATA", "354")
	r.send(strings.Repeat("x", 20) + "\r\n.\r\n")
	r.expect("552")
	r.cmd("NOOP", "250")
}

func TestLongCommandLine(t *testing.T) {
	s := start(t, Options{})
	r := dialRaw(t, s.Addr())
	r.expect("220")
	r.cmd("NOOP "+strings.Repeat("x", 10000), "500")
	r.cmd("NOOP", "250")
}

func TestCloseEndsHangingSessions(t *testing.T) {
	s, err := Start(Options{Fault: FaultNoBanner})
	if err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, s.Addr())
	// Make sure the session is accepted before Close.
	deadline := time.Now().Add(2 * time.Second)
	for s.Sessions() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close hangs")
	}
	if _, err := r.br.ReadByte(); err == nil {
		t.Error("connection still open")
	}
}
