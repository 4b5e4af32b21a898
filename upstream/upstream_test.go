package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailgate/config"
	"mailgate/internal/recorder"
)

const helo = "gw.example.com"

// transcript collects recorder logs safely.
type transcript struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (tr *transcript) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	tr.mu.Lock()
	tr.lines = append(tr.lines, line)
	tr.mu.Unlock()
	tr.t.Log(line)
}

func (tr *transcript) count(substr string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, l := range tr.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func startRec(t *testing.T, opts recorder.Options) (*recorder.Server, *transcript) {
	t.Helper()
	tr := &transcript{t: t}
	opts.Logf = tr.logf
	s, err := recorder.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, tr
}

func plain(addr string) config.UpstreamServer {
	return config.UpstreamServer{Address: addr, TLS: config.TLSNone}
}

func upCfg(servers ...config.UpstreamServer) config.Upstream {
	return config.Upstream{
		Servers:        servers,
		ConnectTimeout: config.Duration(500 * time.Millisecond),
		CommandTimeout: config.Duration(500 * time.Millisecond),
		RetryAfter:     config.Duration(time.Minute),
	}
}

func newRelay(t *testing.T, cfg config.Upstream) *Relay {
	t.Helper()
	r, err := New(cfg, helo, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func open(t *testing.T, r *Relay) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedAddr is a local address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// scripted runs handle for every connection to a raw TCP listener.
func scripted(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

func ctx5s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func send(t *testing.T, c *Conn, from string, to []string, body string) error {
	t.Helper()
	ctx := ctx5s(t)
	if err := c.Mail(ctx, from, nil); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(ctx, rcpt, nil); err != nil {
			return err
		}
	}
	return c.Data(ctx, strings.NewReader(body))
}

func TestRelayDelivers(t *testing.T) {
	rec, tr := startRec(t, recorder.Options{})
	r := newRelay(t, upCfg(plain(rec.Addr())))
	c := open(t, r)
	if c.Server() != rec.Addr() {
		t.Errorf("Server() = %q", c.Server())
	}
	if _, ok := c.TLSState(); ok {
		t.Error("TLS on a plain session")
	}
	if ok, size := c.EHLOExtension("size"); !ok || size == "" {
		t.Errorf("SIZE extension: %v %q", ok, size)
	}
	body := "From: a@example.org\r\nSubject: test\r\n\r\n.leading dot\r\nbody\r\n"
	if err := send(t, c, "a@example.org", []string{"b@example.com", "c@example.com"}, body); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.LastDataReply(), "queued as") {
		t.Errorf("LastDataReply() = %q", c.LastDataReply())
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	msgs, err := rec.WaitMessages(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.Helo != helo || m.From != "a@example.org" || strings.Join(m.Rcpts, " ") != "b@example.com c@example.com" {
		t.Errorf("envelope %+v", m)
	}
	if string(m.Data) != body {
		t.Errorf("data %q, want %q", m.Data, body)
	}
	if n := tr.count("localhost"); n != 0 {
		t.Errorf("%d transcript lines mention localhost", n)
	}
	if tr.count("C: QUIT") != 1 {
		t.Error("no QUIT")
	}
	st := r.Status()
	if len(st) != 1 || !st[0].Up || st[0].LastError != "" || st[0].LastLatency <= 0 {
		t.Errorf("status %+v", st)
	}
	if !c.Broken() {
		// a closed Conn can't be reused either
		t.Error("closed Conn not reported broken")
	}
	if err := c.Noop(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Noop after Close: %v", err)
	}
}

func TestResetAndSecondMessage(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	ctx := ctx5s(t)
	if err := c.Mail(ctx, "a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := send(t, c, "a@example.org", []string{"b@example.com"}, fmt.Sprintf("m%d\r\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := rec.WaitMessages(2, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(msgs[1].Data) != "m1\r\n" || msgs[1].Helo != helo {
		t.Errorf("second message %+v", msgs[1])
	}
}

// The upstream is vulnerable to SMTP smuggling; whatever bare CR/LF tricks
// reach Data, it must only ever see one message.
func TestDataNeverSmuggles(t *testing.T) {
	for _, term := range []string{"\r.\r", "\n.\n", "\r\n.\r", "\n.\r\n", "\r.\n", "\r.\r\n"} {
		name := strings.NewReplacer("\r", "CR", "\n", "LF").Replace(term)
		t.Run(name, func(t *testing.T) {
			rec, _ := startRec(t, recorder.Options{Lenient: true})
			c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
			body := "Subject: x\r\n\r\nhello" + term + "MAIL FROM:<x@evil.example>\r\nRCPT TO:<y@example.com>\r\nDATA\r\nsmuggled\r\n.\r\nend\r"
			if err := send(t, c, "a@example.org", []string{"b@example.com"}, body); err != nil {
				t.Fatal(err)
			}
			c.Close()
			rec.Close()
			msgs := rec.Messages()
			if len(msgs) != 1 {
				t.Fatalf("upstream saw %d messages: %+v", len(msgs), msgs)
			}
			data := string(msgs[0].Data)
			if !strings.Contains(data, "smuggled") || !strings.HasSuffix(data, "end\r\n") {
				t.Errorf("data %q", data)
			}
			if strings.ContainsAny(strings.ReplaceAll(data, "\r\n", ""), "\r\n") {
				t.Errorf("bare CR or LF in %q", data)
			}
		})
	}
}

func TestRcptRefusalVerbatim(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{RejectRcpt: func(rcpt string) string {
		if rcpt == "nobody@example.com" {
			return "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table"
		}
		return ""
	}})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	ctx := ctx5s(t)
	if err := c.Mail(ctx, "a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt(ctx, "nobody@example.com", nil)
	se, ok := err.(*smtp.SMTPError)
	if !ok {
		t.Fatalf("got %T %v, want *smtp.SMTPError", err, err)
	}
	wantText := "<nobody@example.com>: Recipient address rejected: User unknown in local recipient table"
	if se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) || se.Message != wantText {
		t.Errorf("got %+v", se)
	}
	code, enh, text := ReplyFor(err)
	if code != 550 || enh != [3]int{5, 1, 1} || text != wantText {
		t.Errorf("ReplyFor: %d %v %q", code, enh, text)
	}
	if Temporary(err) {
		t.Error("550 is Temporary")
	}
	if c.Broken() {
		t.Error("broken after a refusal")
	}
	if err := c.Rcpt(ctx, "b@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Data(ctx, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	msgs, _ := rec.WaitMessages(1, 2*time.Second)
	if len(msgs) != 1 || len(msgs[0].Rcpts) != 1 {
		t.Errorf("messages %+v", msgs)
	}
}

func TestDataRefusalVerbatim(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{DataReply: func([]byte) string { return "554 5.7.1 Message content rejected" }})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	err := send(t, c, "a@example.org", []string{"b@example.com"}, "x\r\n")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 || se.Message != "Message content rejected" {
		t.Fatalf("got %v", err)
	}
	if c.Broken() {
		t.Error("broken after a refusal")
	}
}

func Test421IsBrokenAndNotRelayed(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{RejectRcpt: func(string) string {
		return "421 4.3.2 mail.internal Service shutting down"
	}})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	err := send(t, c, "a@example.org", []string{"b@example.com"}, "x\r\n")
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 421 {
		t.Fatalf("got %v", err)
	}
	if !c.Broken() {
		t.Error("not broken after 421")
	}
	code, enh, text := ReplyFor(err)
	if code != 451 || enh != [3]int{4, 4, 1} || strings.Contains(text, "internal") {
		t.Errorf("ReplyFor: %d %v %q", code, enh, text)
	}
}

func TestFailoverConnectionRefused(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{})
	dead := closedAddr(t)
	r := newRelay(t, upCfg(plain(dead), plain(rec.Addr())))
	c := open(t, r)
	if c.Server() != rec.Addr() {
		t.Fatalf("used %s", c.Server())
	}
	st := r.Status()
	if st[0].Up || st[0].LastError == "" || st[0].ConsecutiveFailures != 1 || !st[1].Up {
		t.Errorf("status %+v", st)
	}
}

func TestFailover421Banner(t *testing.T) {
	bad, _ := startRec(t, recorder.Options{Fault: recorder.FaultRefuseBanner})
	good, _ := startRec(t, recorder.Options{})
	r := newRelay(t, upCfg(plain(bad.Addr()), plain(good.Addr())))
	c := open(t, r)
	if c.Server() != good.Addr() {
		t.Fatalf("used %s", c.Server())
	}
	if st := r.Status(); !strings.Contains(st[0].LastError, "421") {
		t.Errorf("status %+v", st[0])
	}
}

func TestFailoverNoBanner(t *testing.T) {
	bad, _ := startRec(t, recorder.Options{Fault: recorder.FaultNoBanner})
	good, _ := startRec(t, recorder.Options{})
	cfg := upCfg(plain(bad.Addr()), plain(good.Addr()))
	cfg.ConnectTimeout = config.Duration(300 * time.Millisecond)
	cfg.CommandTimeout = config.Duration(10 * time.Second)
	r := newRelay(t, cfg)
	start := time.Now()
	c := open(t, r)
	el := time.Since(start)
	if c.Server() != good.Addr() {
		t.Fatalf("used %s", c.Server())
	}
	if el < 300*time.Millisecond || el > 2*time.Second {
		t.Errorf("took %v, want about connect_timeout (300ms)", el)
	}
}

func TestAllDown(t *testing.T) {
	bad, _ := startRec(t, recorder.Options{Fault: recorder.FaultRefuseBanner})
	r := newRelay(t, upCfg(plain(closedAddr(t)), plain(bad.Addr())))
	start := time.Now()
	c, err := r.Open(ctx5s(t))
	if err == nil {
		c.Close()
		t.Fatal("Open succeeded")
	}
	if time.Since(start) > time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("%v is not ErrUnavailable", err)
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		t.Errorf("Open error exposes an SMTPError: %v", se)
	}
	var oe *OpenError
	if !errors.As(err, &oe) || len(oe.Attempts) != 2 {
		t.Errorf("attempts: %v", err)
	}
	if code, enh, text := ReplyFor(err); code != 451 || enh != [3]int{4, 4, 1} || text != UnavailableText {
		t.Errorf("ReplyFor: %d %v %q", code, enh, text)
	}
	if !Temporary(err) {
		t.Error("not Temporary")
	}
	// Both are down now; they are still tried, in order.
	bad.SetFault(recorder.FaultNone)
	c = open(t, r)
	if c.Server() != bad.Addr() {
		t.Errorf("used %s", c.Server())
	}
}

func TestDownServerSkippedUntilRetryAfter(t *testing.T) {
	a, _ := startRec(t, recorder.Options{Fault: recorder.FaultRefuseBanner})
	b, _ := startRec(t, recorder.Options{})
	cfg := upCfg(plain(a.Addr()), plain(b.Addr()))
	cfg.RetryAfter = config.Duration(300 * time.Millisecond)
	r := newRelay(t, cfg)
	if c := open(t, r); c.Server() != b.Addr() {
		t.Fatalf("used %s", c.Server())
	}
	a.SetFault(recorder.FaultNone)
	if c := open(t, r); c.Server() != b.Addr() {
		t.Fatalf("used %s", c.Server())
	}
	if n := a.Sessions(); n != 1 {
		t.Errorf("down server tried %d times, want 1", n)
	}
	time.Sleep(350 * time.Millisecond)
	if c := open(t, r); c.Server() != a.Addr() {
		t.Fatalf("used %s after retry_after", c.Server())
	}
	if st := r.Status(); !st[0].Up || st[0].LastError != "" {
		t.Errorf("status %+v", st[0])
	}
}

func TestOpenRespectsContext(t *testing.T) {
	bad, _ := startRec(t, recorder.Options{Fault: recorder.FaultNoBanner})
	cfg := upCfg(plain(bad.Addr()))
	cfg.ConnectTimeout = config.Duration(10 * time.Second)
	r := newRelay(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Open(ctx)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %v", el)
	}
	if st := r.Status(); !st[0].Up {
		t.Error("server marked down because the caller gave up")
	}
}

func TestHELOFallback(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{Fault: recorder.FaultNoEHLO})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	if err := send(t, c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	msgs, _ := rec.WaitMessages(1, 2*time.Second)
	if len(msgs) != 1 || msgs[0].Helo != helo {
		t.Errorf("messages %+v", msgs)
	}
}

// --- TLS ---

type tlsEnv struct {
	pki    *recorder.PKI
	caFile string
}

func newTLSEnv(t *testing.T) tlsEnv {
	t.Helper()
	pki, err := recorder.NewPKI("mail.internal", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pki.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return tlsEnv{pki: pki, caFile: caFile}
}

func TestSTARTTLSVerified(t *testing.T) {
	env := newTLSEnv(t)
	rec, tr := startRec(t, recorder.Options{TLSConfig: env.pki.ServerTLSConfig(), RequireTLS: true})
	r := newRelay(t, upCfg(config.UpstreamServer{Address: rec.Addr(), TLS: config.TLSStartTLS, CA: env.caFile, ServerName: "mail.internal"}))
	c := open(t, r)
	st, ok := c.TLSState()
	if !ok || st.Version < tls.VersionTLS12 || st.ServerName != "mail.internal" {
		t.Fatalf("TLS state %v %+v", ok, st)
	}
	if ok, _ := c.EHLOExtension("STARTTLS"); ok {
		t.Error("extensions are from the plaintext EHLO")
	}
	if err := send(t, c, "a@example.org", []string{"b@example.com"}, tlsBody); err != nil {
		t.Fatal(err)
	}
	msgs, err := rec.WaitMessages(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !msgs[0].TLS || msgs[0].Helo != helo || string(msgs[0].Data) != tlsBody {
		t.Errorf("message %+v", msgs[0])
	}
	if n := tr.count("C: EHLO " + helo); n != 2 {
		t.Errorf("EHLO %s sent %d times, want 2 (before and after STARTTLS)", helo, n)
	}
	if n := tr.count("localhost"); n != 0 {
		t.Errorf("%d transcript lines mention localhost", n)
	}
}

func TestSTARTTLSAddressHostAsServerName(t *testing.T) {
	env := newTLSEnv(t)
	rec, _ := startRec(t, recorder.Options{TLSConfig: env.pki.ServerTLSConfig()})
	// No server_name: the address host (127.0.0.1, an IP SAN) is verified.
	c := open(t, newRelay(t, upCfg(config.UpstreamServer{Address: rec.Addr(), TLS: config.TLSStartTLS, CA: env.caFile})))
	if _, ok := c.TLSState(); !ok {
		t.Fatal("no TLS")
	}
}

func TestSTARTTLSVerificationFailures(t *testing.T) {
	env := newTLSEnv(t)
	rec, _ := startRec(t, recorder.Options{TLSConfig: env.pki.ServerTLSConfig()})
	for name, sc := range map[string]config.UpstreamServer{
		"wrong server_name": {Address: rec.Addr(), TLS: config.TLSStartTLS, CA: env.caFile, ServerName: "other.internal"},
		"unknown CA":        {Address: rec.Addr(), TLS: config.TLSStartTLS, ServerName: "mail.internal"},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRelay(t, upCfg(sc))
			c, err := r.Open(ctx5s(t))
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("got %v", err)
			}
		})
	}
}

func TestSTARTTLSInsecureSkipVerify(t *testing.T) {
	env := newTLSEnv(t)
	rec, _ := startRec(t, recorder.Options{TLSConfig: env.pki.ServerTLSConfig()})
	c := open(t, newRelay(t, upCfg(config.UpstreamServer{Address: rec.Addr(), TLS: config.TLSStartTLS, ServerName: "whatever", InsecureSkipVerify: true})))
	if _, ok := c.TLSState(); !ok {
		t.Fatal("no TLS")
	}
	if err := send(t, c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
}

func TestSTARTTLSRequiredNotOffered(t *testing.T) {
	for name, opts := range map[string]recorder.Options{
		"not advertised": {},
		"no EHLO":        {Fault: recorder.FaultNoEHLO},
	} {
		t.Run(name, func(t *testing.T) {
			rec, tr := startRec(t, opts)
			r := newRelay(t, upCfg(config.UpstreamServer{Address: rec.Addr(), TLS: config.TLSStartTLS, InsecureSkipVerify: true}))
			c, err := r.Open(ctx5s(t))
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded: silent downgrade")
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("got %v", err)
			}
			if tr.count("C: MAIL") != 0 {
				t.Error("MAIL sent in plaintext")
			}
		})
	}
}

func TestSTARTTLSDefaultMode(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{})
	r := newRelay(t, upCfg(config.UpstreamServer{Address: rec.Addr()})) // tls: "" = starttls
	if _, err := r.Open(ctx5s(t)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("got %v", err)
	}
}

func TestSTARTTLSResponseInjection(t *testing.T) {
	addr := scripted(t, func(c net.Conn, br *bufio.Reader) {
		io.WriteString(c, "220 evil ESMTP\r\n")
		br.ReadString('\n')
		io.WriteString(c, "250-evil\r\n250 STARTTLS\r\n")
		br.ReadString('\n')
		io.WriteString(c, "220 go ahead\r\n250 injected\r\n")
		io.Copy(io.Discard, br)
	})
	r := newRelay(t, upCfg(config.UpstreamServer{Address: addr, TLS: config.TLSStartTLS, InsecureSkipVerify: true}))
	if _, err := r.Open(ctx5s(t)); err == nil || !strings.Contains(err.Error(), "after its 220") {
		t.Errorf("got %v", err)
	}
}

// tlsBody is sent over TLS: the message goes to the TLS connection, not
// the TCP one under it, dot lines included.
var tlsBody = "Subject: tls\r\n\r\n" + strings.Repeat(".a dotted line\r\nand a plain one\r\n", 3000)

func TestImplicitTLS(t *testing.T) {
	env := newTLSEnv(t)
	rec, _ := startRec(t, recorder.Options{TLSConfig: env.pki.ServerTLSConfig(), ImplicitTLS: true})
	c := open(t, newRelay(t, upCfg(config.UpstreamServer{Address: rec.Addr(), TLS: config.TLSImplicit, CA: env.caFile, ServerName: "mail.internal"})))
	if _, ok := c.TLSState(); !ok {
		t.Fatal("no TLS")
	}
	if err := send(t, c, "a@example.org", []string{"b@example.com"}, tlsBody); err != nil {
		t.Fatal(err)
	}
	msgs, _ := rec.WaitMessages(1, 2*time.Second)
	if len(msgs) != 1 || !msgs[0].TLS || msgs[0].Helo != helo || string(msgs[0].Data) != tlsBody {
		t.Errorf("messages %+v", msgs)
	}
}

func TestImplicitTLSAgainstPlainServerTimesOut(t *testing.T) {
	// A plaintext server greets first; the TLS handshake must fail within
	// connect_timeout, not hang.
	rec, _ := startRec(t, recorder.Options{Fault: recorder.FaultNoBanner})
	r := newRelay(t, upCfg(config.UpstreamServer{Address: rec.Addr(), TLS: config.TLSImplicit, InsecureSkipVerify: true}))
	start := time.Now()
	if _, err := r.Open(ctx5s(t)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("got %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %v", el)
	}
}

// --- failures during the session ---

func checkNetFailure(t *testing.T, c *Conn, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if _, ok := err.(*smtp.SMTPError); ok {
		t.Fatalf("got an SMTPError: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("got %T %v, want *Error", err, err)
	}
	if !c.Broken() {
		t.Error("not Broken")
	}
	if code, enh, _ := ReplyFor(err); code != 451 || enh != [3]int{4, 4, 1} {
		t.Errorf("ReplyFor: %d %v", code, enh)
	}
	if !Temporary(err) {
		t.Error("not Temporary")
	}
	if err := c.Noop(context.Background()); !errors.Is(err, ErrBroken) {
		t.Errorf("Noop on a broken Conn: %v", err)
	}
	start := time.Now()
	c.Close()
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Errorf("Close of a broken Conn took %v", el)
	}
}

func TestHangAtDataEndTimesOut(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{Fault: recorder.FaultHangAtDataEnd})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr())))) // command timeout 500ms
	start := time.Now()
	err := send(t, c, "a@example.org", []string{"b@example.com"}, "x\r\n")
	el := time.Since(start)
	if el < 400*time.Millisecond || el > 2*time.Second {
		t.Errorf("took %v, want about the command timeout", el)
	}
	var e *Error
	if !errors.As(err, &e) || !e.Timeout() {
		t.Errorf("got %v, want a timeout", err)
	}
	checkNetFailure(t, c, err)
}

func TestResetMidData(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{Fault: recorder.FaultResetMidData})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	err := send(t, c, "a@example.org", []string{"b@example.com"}, "Subject: x\r\n\r\n"+strings.Repeat("line\r\n", 100000))
	checkNetFailure(t, c, err)
}

func TestCloseAfterRcpt(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{Fault: recorder.FaultCloseAfterRcpt})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	err := send(t, c, "a@example.org", []string{"b@example.com"}, "x\r\n")
	checkNetFailure(t, c, err)
}

func TestContextCancelAbortsHangingCall(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{Fault: recorder.FaultHangAtRcpt})
	cfg := upCfg(plain(rec.Addr()))
	cfg.CommandTimeout = config.Duration(time.Minute)
	c := open(t, newRelay(t, cfg))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Mail(ctx, "a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := c.Rcpt(ctx, "b@example.com", nil)
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %v", el)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	var e *Error
	if errors.As(err, &e) && e.Timeout() {
		t.Error("cancellation reported as a timeout")
	}
	checkNetFailure(t, c, err)
}

func TestContextDeadlineBoundsData(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{Fault: recorder.FaultHangAtDataEnd})
	cfg := upCfg(plain(rec.Addr()))
	cfg.CommandTimeout = config.Duration(time.Minute)
	c := open(t, newRelay(t, cfg))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Mail(ctx, "a@example.org", nil)
	if err == nil {
		err = c.Rcpt(ctx, "b@example.com", nil)
	}
	if err == nil {
		err = c.Data(ctx, strings.NewReader("x\r\n"))
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %v", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v", err)
	}
	checkNetFailure(t, c, err)
}

func TestCancelledContextSendsNothing(t *testing.T) {
	rec, tr := startRec(t, recorder.Options{})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Mail(ctx, "a@example.org", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
	if c.Broken() {
		t.Error("broken though nothing was sent")
	}
	if tr.count("C: MAIL") != 0 {
		t.Error("MAIL sent")
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("spool file vanished")
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = 'x'
		if i%70 == 69 {
			p[i] = '\n'
		}
	}
	r.n -= n
	return n, nil
}

func TestMessageReadErrorNeverDelivers(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{Lenient: true})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	ctx := ctx5s(t)
	if err := c.Mail(ctx, "a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(ctx, "b@example.com", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Data(ctx, &failingReader{n: 10000})
	if err == nil || !strings.Contains(err.Error(), "spool file vanished") {
		t.Fatalf("got %v", err)
	}
	checkNetFailure(t, c, err)
	rec.Close()
	if n := len(rec.Messages()); n != 0 {
		t.Errorf("upstream recorded %d messages", n)
	}
}

func TestCloseAbortsCallInProgress(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{Fault: recorder.FaultHangAtRcpt})
	cfg := upCfg(plain(rec.Addr()))
	cfg.CommandTimeout = config.Duration(time.Minute)
	c := open(t, newRelay(t, cfg))
	ctx := context.Background()
	if err := c.Mail(ctx, "a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, func() { c.Close() })
	start := time.Now()
	err := c.Rcpt(ctx, "b@example.com", nil)
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %v", el)
	}
	if err == nil || !c.Broken() {
		t.Errorf("got %v, broken %v", err, c.Broken())
	}
}

func TestOutOfStepReply(t *testing.T) {
	addr := scripted(t, func(c net.Conn, br *bufio.Reader) {
		io.WriteString(c, "220 odd ESMTP\r\n")
		br.ReadString('\n')
		io.WriteString(c, "250 odd\r\n")
		br.ReadString('\n') // MAIL
		io.WriteString(c, "250 ok\r\n")
		br.ReadString('\n') // RCPT
		io.WriteString(c, "354 go on\r\n")
		io.Copy(io.Discard, br)
	})
	c := open(t, newRelay(t, upCfg(plain(addr))))
	err := send(t, c, "a@example.org", []string{"b@example.com"}, "x\r\n")
	checkNetFailure(t, c, err)
}

func TestLocalRefusalKeepsSession(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	ctx := ctx5s(t)
	if err := c.Mail(ctx, "a@example.org", &smtp.MailOptions{UTF8: true}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("SMTPUTF8: %v", err)
	}
	if err := c.Mail(ctx, "a@example.org\r\nRCPT TO:<x>", nil); err == nil {
		t.Error("CRLF in address accepted")
	}
	if err := c.Mail(ctx, "a@example.org", &smtp.MailOptions{Return: "bogus"}); err != nil {
		// the recorder does not advertise DSN, so RET is dropped
		t.Errorf("RET: %v", err)
	}
	if c.Broken() {
		t.Error("broken by local refusals")
	}
}

// --- New, ReplyFor ---

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for name, tc := range map[string]struct {
		cfg  config.Upstream
		helo string
	}{
		"no servers":    {config.Upstream{}, helo},
		"empty helo":    {upCfg(plain("127.0.0.1:25")), ""},
		"helo with LF":  {upCfg(plain("127.0.0.1:25")), "a\nb"},
		"no port":       {upCfg(plain("127.0.0.1")), helo},
		"bad tls mode":  {upCfg(config.UpstreamServer{Address: "127.0.0.1:25", TLS: "maybe"}), helo},
		"missing CA":    {upCfg(config.UpstreamServer{Address: "127.0.0.1:25", TLS: config.TLSStartTLS, CA: filepath.Join(dir, "nope.pem")}), helo},
		"CA is not PEM": {upCfg(config.UpstreamServer{Address: "127.0.0.1:25", TLS: config.TLSImplicit, CA: notPEM}), helo},
	} {
		if _, err := New(tc.cfg, tc.helo, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	r, err := New(config.Upstream{Servers: []config.UpstreamServer{plain("10.0.0.5:25")}}, helo, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.connectTimeout != DefaultConnectTimeout || r.commandTimeout != DefaultCommandTimeout || r.retryAfter != DefaultRetryAfter {
		t.Error("defaults not applied")
	}
}

func TestReplyFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		enh  [3]int
		text string
	}{
		{&smtp.SMTPError{Code: 550, Message: "no"}, 550, [3]int{5, 0, 0}, "no"},
		{&smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}, 452, [3]int{4, 5, 3}, "Too many recipients"},
		{&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{4, 1, 1}, Message: "x"}, 550, [3]int{5, 0, 0}, "x"},
		{fmt.Errorf("wrapped: %w", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "line1\nline2\x00"}), 554, [3]int{5, 7, 1}, "line1\nline2?"},
		{&smtp.SMTPError{Code: 250, Message: "ok"}, 451, [3]int{4, 4, 1}, UnavailableText},
		{&smtp.SMTPError{Code: 421, Message: "bye"}, 451, [3]int{4, 4, 1}, UnavailableText},
		{errors.New("dial tcp 10.0.0.5:25: connection refused"), 451, [3]int{4, 4, 1}, UnavailableText},
		{&OpenError{Attempts: []AttemptError{{"a", errors.New("x")}}}, 451, [3]int{4, 4, 1}, UnavailableText},
	} {
		code, enh, text := ReplyFor(tc.err)
		if code != tc.code || enh != tc.enh || text != tc.text {
			t.Errorf("ReplyFor(%v) = %d %v %q, want %d %v %q", tc.err, code, enh, text, tc.code, tc.enh, tc.text)
		}
	}
	if Temporary(nil) || !Temporary(&smtp.SMTPError{Code: 450}) || Temporary(&smtp.SMTPError{Code: 550}) || !Temporary(io.EOF) {
		t.Error("Temporary")
	}
}

func TestDotEncoder(t *testing.T) {
	for in, want := range map[string]string{
		"":              "\r\n",
		"a\r\nb":        "a\r\nb\r\n",
		"a\r\n":         "a\r\n",
		"a\rb":          "a\r\nb\r\n",
		"a\r":           "a\r\n",
		"\r\r\n":        "\r\n\r\n",
		"a\nb":          "a\r\nb\r\n",
		".a\r\n..\r\n.": "..a\r\n...\r\n..\r\n",
		"x\r.\r\ny\r.":  "x\r\n..\r\ny\r\n..\r\n",
		"x\n.\n":        "x\r\n..\r\n",
		"a.b\r\n \r\n.": "a.b\r\n \r\n..\r\n",
	} {
		if got := encodeInSteps(in, 1); got != want {
			t.Errorf("%q byte by byte → %q, want %q", in, got, want)
		}
		if got := encodeInSteps(in, len(in)+1); got != want {
			t.Errorf("%q in one piece → %q, want %q", in, got, want)
		}
	}
}

func encodeInSteps(in string, step int) string {
	var e dotEncoder
	var out []byte
	for i := 0; i < len(in); i += step {
		out = e.encode(out, []byte(in[i:min(i+step, len(in))]))
	}
	return string(e.finish(out))
}

// refDATA is the specification of dotEncoder: what go-smtp's DotWriter
// sends for the message once every CR not followed by LF is made CRLF
// (DotWriter makes bare LFs CRLF, stuffs leading dots and ends the
// message with a line end), without the final ".\r\n".
func refDATA(in string) string {
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		b.WriteByte(in[i])
		if in[i] == '\r' && (i+1 == len(in) || in[i+1] != '\n') {
			b.WriteByte('\n')
		}
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	dw := textproto.NewWriter(bw).DotWriter()
	io.WriteString(dw, b.String())
	dw.Close()
	return strings.TrimSuffix(out.String(), ".\r\n")
}

// FuzzDotEncoder: any input, cut into pieces anywhere, is encoded as
// go-smtp's DotWriter would send it.
func FuzzDotEncoder(f *testing.F) {
	f.Add("a\r\nb\rc\r", uint8(3))
	f.Add("\r\r\n\r", uint8(1))
	f.Add(".\n.\r.\r\n.", uint8(2))
	f.Add("", uint8(0))
	f.Fuzz(func(t *testing.T, in string, cut uint8) {
		step := int(cut)%7 + 1
		if got, want := encodeInSteps(in, step), refDATA(in); got != want {
			t.Fatalf("%q (cut %d) → %q, want %q", in, step, got, want)
		}
	})
}

// countingWriter counts the writes it gets.
type countingWriter struct {
	strings.Builder
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) { c.writes++; return c.Builder.Write(p) }

// A message goes upstream in 32 KB writes, not one per line or per 4 KB:
// the write deadline is refreshed per write, and that was a tenth of the
// relay's CPU when it was per line.
func TestDataWholeChunks(t *testing.T) {
	rec, _ := startRec(t, recorder.Options{})
	c := open(t, newRelay(t, upCfg(plain(rec.Addr()))))
	var cw countingWriter
	c.wire = &countingConn{Conn: c.wire, w: &cw}
	body := "Subject: x\r\n\r\n" + strings.Repeat("a line of the message, of 40 bytes....\r\n", 8000) // 320 KB
	if err := send(t, c, "a@example.org", []string{"b@example.com"}, body); err != nil {
		t.Fatal(err)
	}
	c.Close()
	rec.Close()
	if msgs := rec.Messages(); len(msgs) != 1 || string(msgs[0].Data) != body {
		t.Fatalf("upstream got %d messages", len(msgs))
	}
	if max := len(body)/(32<<10) + 2; cw.writes > max {
		t.Errorf("%d writes for %d bytes, want at most %d", cw.writes, len(body), max)
	}
}

// countingConn counts the writes made to a connection.
type countingConn struct {
	net.Conn
	w *countingWriter
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.w.writes++
	return c.Conn.Write(p)
}
