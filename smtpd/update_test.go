package smtpd

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// refuseMail is a handler that refuses every sender.
type refuseMail struct{ acceptAll }

func (refuseMail) Mail(context.Context, Path, MailParams) *Reply {
	return &Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Sender refused"}
}

// Update changes what new connections get; a connection accepted before
// keeps its configuration and handler (a reload drops no session).
func TestUpdateKeepsOpenSessions(t *testing.T) {
	cfg := Config{Name: "t", Hostname: "old.test", MaxLineLength: 512, MaxMessageSize: 1 << 20,
		GreetingTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
	srv := NewServer(cfg, func(ConnInfo) Handler { return acceptAll{} }, slog.New(slog.DiscardHandler))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c, bufio.NewReader(c)
	}
	cmd := func(c net.Conn, r *bufio.Reader, line string) string {
		t.Helper()
		if line != "" {
			c.Write([]byte(line + "\r\n"))
		}
		var last string
		for {
			s, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", line, err)
			}
			last = s
			if len(s) < 4 || s[3] != '-' {
				return strings.TrimRight(last, "\r\n")
			}
		}
	}

	oldC, oldR := dial()
	defer oldC.Close()
	if got := cmd(oldC, oldR, ""); got != "220 old.test ESMTP" {
		t.Fatalf("banner %q", got)
	}
	cfg.Hostname = "new.test"
	srv.Update(cfg, func(ConnInfo) Handler { return refuseMail{} })

	newC, newR := dial()
	defer newC.Close()
	if got := cmd(newC, newR, ""); got != "220 new.test ESMTP" {
		t.Fatalf("new connection's banner %q, want new.test", got)
	}
	cmd(newC, newR, "EHLO a.example")
	if got := cmd(newC, newR, "MAIL FROM:<a@b.example>"); !strings.HasPrefix(got, "550 5.7.1") {
		t.Fatalf("new connection: MAIL got %q, want the new handler's 550", got)
	}

	cmd(oldC, oldR, "EHLO a.example")
	if got := cmd(oldC, oldR, "MAIL FROM:<a@b.example>"); !strings.HasPrefix(got, "250") {
		t.Fatalf("old connection: MAIL got %q, want the old handler's 250", got)
	}
	if got := cmd(oldC, oldR, "NOOP"); !strings.HasPrefix(got, "250") {
		t.Fatalf("old connection: NOOP got %q", got)
	}
}
