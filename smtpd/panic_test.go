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

type panicOnMail struct{ acceptAll }

func (panicOnMail) Mail(context.Context, Path, MailParams) *Reply { panic("bug in a filter") }

// A panic in one session ends that session with a 421; the server goes on
// serving others.
func TestPanicIsolated(t *testing.T) {
	srv := NewServer(Config{Name: "t", Hostname: "mx.test", MaxLineLength: 512, MaxMessageSize: 1 << 20,
		GreetingTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second},
		func(ConnInfo) Handler { return panicOnMail{} }, slog.New(slog.DiscardHandler))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		c.Write([]byte("EHLO x.example\r\nMAIL FROM:<a@b.example>\r\n"))
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			last = line
		}
		if !strings.HasPrefix(last, "421 4.3.0") {
			t.Errorf("session %d: last reply %q, want 421 4.3.0", i, last)
		}
		c.Close()
	}
}

// A message that cannot be stored (its spool file cannot be made or
// written: a full disk) is never taken: 421 4.3.0, and the handler never
// sees it.
func TestSpoolFailure(t *testing.T) {
	srv := NewServer(Config{Name: "t", Hostname: "mx.test", MaxLineLength: 512, MaxMessageSize: 1 << 20,
		SpoolThreshold: 1 << 10, SpoolDir: t.TempDir() + "/missing",
		GreetingTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second},
		func(ConnInfo) Handler { return acceptAll{} }, slog.New(slog.DiscardHandler))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	c.Write([]byte("EHLO x.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"))
	c.Write([]byte("Subject: big\r\n\r\n" + strings.Repeat("a line of the message\r\n", 200) + ".\r\n"))
	var last string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		last = line
	}
	if !strings.HasPrefix(last, "421 4.3.0") {
		t.Errorf("last reply %q, want 421 4.3.0", last)
	}
}
