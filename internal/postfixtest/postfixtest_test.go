package postfixtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// requirePostfix skips when Postfix cannot run here, except in CI
// (CI=true), where a missing Postfix is a failure.
func requirePostfix(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but Postfix is unavailable: %v", err)
		}
		t.Skipf("Postfix unavailable: %v", err)
	}
}

func dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := smtp.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

func TestDeliverAndRejectUnknown(t *testing.T) {
	requirePostfix(t)
	inst := Start(t, Options{
		Domains: []string{"example.com"},
		Users:   []string{"alice", "bob@example.com"},
	})
	t.Logf("postfix at %s in %s", inst.Addr, inst.Dir)

	c := dial(t, inst.Addr)
	if err := c.Mail("sender@example.net", nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}

	// Unknown user: 550 5.1.1 at RCPT, the transaction stays usable.
	err := c.Rcpt("nobody@example.com", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("RCPT unknown user: got %v, want an SMTP 550 error", err)
	}
	if se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) || !strings.Contains(se.Message, "User unknown") {
		t.Fatalf("RCPT unknown user: got %d %v %q, want 550 5.1.1 ... User unknown", se.Code, se.EnhancedCode, se.Message)
	}
	t.Logf("unknown user: %d %v %s", se.Code, se.EnhancedCode, se.Message)

	// Relaying is refused.
	err = c.Rcpt("someone@elsewhere.example", nil)
	if !errors.As(err, &se) || se.Code/100 != 5 {
		t.Fatalf("RCPT to a foreign domain: got %v, want 5xx (relay denied)", err)
	}

	if err := c.Rcpt("alice@example.com", nil); err != nil {
		t.Fatalf("RCPT alice: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	fmt.Fprintf(w, "From: sender@example.net\r\nTo: alice@example.com\r\nSubject: test\r\n\r\nhello %s\r\n", marker)
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}

	msgs, err := inst.WaitDelivered("alice@example.com", 1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || !bytes.Contains(msgs[0], []byte(marker)) {
		t.Fatalf("delivered %d message(s), want 1 containing %q:\n%s", len(msgs), marker, bytes.Join(msgs, []byte("\n----\n")))
	}
	if !bytes.Contains(msgs[0], []byte("Delivered-To: alice@example.com")) {
		t.Errorf("no Delivered-To header:\n%s", msgs[0])
	}
	if n, err := inst.QueueSize(); err != nil || n != 0 {
		t.Errorf("queue size = %d, %v; want 0", n, err)
	}

	// bob exists (full-address entry), nobody else got mail.
	if _, ok := inst.Maildir("bob@example.com"); !ok {
		t.Error("bob@example.com has no Maildir")
	}
	if _, err := inst.WaitDelivered("nobody@example.com", 1, time.Millisecond); err == nil {
		t.Error("WaitDelivered for an unknown user succeeded")
	}
}

// TestRelayMode checks mode 2: everything from 127.0.0.1 is relayed to
// RelayHost. A tiny in-test SMTP listener plays the next hop.
func TestRelayMode(t *testing.T) {
	requirePostfix(t)
	got := make(chan string, 1)
	sink := startSink(t, got)
	inst := Start(t, Options{RelayHost: sink})

	c := dial(t, inst.Addr)
	if err := c.SendMail("a@example.net", []string{"user@example.com"}, strings.NewReader("Subject: relay\r\n\r\nrelayed body\r\n")); err != nil {
		t.Fatalf("send: %v", err)
	}
	select {
	case data := <-got:
		if !strings.Contains(data, "relayed body") {
			t.Fatalf("next hop got %q", data)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("nothing relayed within 30s\n%s", inst.Log())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := inst.QueueSize()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue still holds %d message(s)\n%s", n, inst.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startSink is a minimal SMTP server accepting one message and sending
// its data to got.
func startSink(t *testing.T, got chan<- string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveSink(conn, got)
		}
	}()
	return l.Addr().String()
}

func serveSink(conn net.Conn, got chan<- string) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	readLine := func() (string, bool) {
		for {
			if i := bytes.Index(buf, []byte("\r\n")); i >= 0 {
				line := string(buf[:i])
				buf = buf[i+2:]
				return line, true
			}
			n, err := conn.Read(tmp)
			if err != nil {
				return "", false
			}
			buf = append(buf, tmp[:n]...)
		}
	}
	fmt.Fprintf(conn, "220 sink ESMTP\r\n")
	for {
		line, ok := readLine()
		if !ok {
			return
		}
		cmd := strings.ToUpper(line)
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			fmt.Fprintf(conn, "250 sink\r\n")
		case strings.HasPrefix(cmd, "DATA"):
			fmt.Fprintf(conn, "354 go\r\n")
			var data strings.Builder
			for {
				l, ok := readLine()
				if !ok {
					return
				}
				if l == "." {
					break
				}
				data.WriteString(l + "\n")
			}
			select {
			case got <- data.String():
			default:
			}
			fmt.Fprintf(conn, "250 2.0.0 queued\r\n")
		case strings.HasPrefix(cmd, "QUIT"):
			fmt.Fprintf(conn, "221 bye\r\n")
			return
		default:
			fmt.Fprintf(conn, "250 ok\r\n")
		}
	}
}

// TestPortInUse: a port that is taken fails with Postfix's own log line.
func TestPortInUse(t *testing.T) {
	requirePostfix(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	inst, err := Launch(Options{Port: l.Addr().(*net.TCPAddr).Port})
	if err == nil {
		inst.Stop()
		t.Fatal("Launch on a port in use succeeded")
	}
	if !errors.Is(err, errBind) || !strings.Contains(err.Error(), "fatal: bind") {
		t.Fatalf("got %v, want a bind error with the maillog", err)
	}
}
