package spamc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"mailgate/internal/spamc"
	"mailgate/internal/spamdtest"
)

const (
	gtube = "From: spammer@example.net\r\nTo: bob@example.com\r\nSubject: offer\r\n\r\n" + spamdtest.GTUBE + "\r\n"
)

// ham is an ordinary message, dated now (SpamAssassin scores old dates).
var ham = "From: alice@example.net\r\nTo: bob@example.com\r\nSubject: lunch\r\n" +
	"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <20261123.1@example.net>\r\n\r\n" +
	"Hello Bob,\r\n\r\nshall we have lunch on Tuesday?\r\n\r\nAlice\r\n"

func newClient(t *testing.T, c spamc.Config) *spamc.Client {
	t.Helper()
	cl, err := spamc.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// The client against a real spamd, over TCP and a unix socket.
func TestSpamd(t *testing.T) {
	sd := spamdtest.Start(t)
	tcp := newClient(t, spamc.Config{Address: sd.Addr()})
	unix := newClient(t, spamc.Config{Address: "unix:" + sd.Socket()})
	defer func() {
		if t.Failed() {
			t.Logf("spamd log:\n%s", sd.Log())
		}
	}()

	t.Run("ping", func(t *testing.T) {
		for _, c := range []*spamc.Client{tcp, unix} {
			if err := c.Ping(ctx(t, 10*time.Second)); err != nil {
				t.Errorf("%s: %v", c, err)
			}
		}
	})
	t.Run("gtube symbols", func(t *testing.T) {
		for _, c := range []*spamc.Client{tcp, unix} {
			res, err := c.Symbols(ctx(t, 30*time.Second), strings.NewReader(gtube), int64(len(gtube)))
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			if !res.Spam || res.Score < 1000 || res.Threshold != 5 || !slices.Contains(res.Symbols, "GTUBE") {
				t.Errorf("%s: %+v, want spam >= 1000 / 5 with GTUBE", c, res)
			}
		}
	})
	t.Run("gtube check", func(t *testing.T) {
		res, err := tcp.Check(ctx(t, 30*time.Second), strings.NewReader(gtube), int64(len(gtube)))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Spam || res.Score < 1000 || res.Symbols != nil {
			t.Errorf("%+v, want spam >= 1000 without symbols", res)
		}
	})
	t.Run("ham", func(t *testing.T) {
		res, err := tcp.Symbols(ctx(t, 30*time.Second), strings.NewReader(ham), int64(len(ham)))
		if err != nil {
			t.Fatal(err)
		}
		if res.Spam || res.Score >= 5 {
			t.Errorf("%+v, want not spam", res)
		}
	})
	t.Run("unknown size", func(t *testing.T) {
		res, err := tcp.Symbols(ctx(t, 30*time.Second), strings.NewReader(gtube), -1)
		if err != nil || !res.Spam {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("no final line break", func(t *testing.T) {
		// spamd reads lines: without the half-close it would wait for
		// a line break forever.
		msg := strings.TrimSuffix(gtube, "\r\n")
		res, err := tcp.Symbols(ctx(t, 30*time.Second), strings.NewReader(msg), int64(len(msg)))
		if err != nil || !res.Spam {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("user", func(t *testing.T) {
		c := newClient(t, spamc.Config{Address: sd.Addr(), User: "mailgate"})
		res, err := c.Symbols(ctx(t, 30*time.Second), strings.NewReader(gtube), int64(len(gtube)))
		if err != nil || !res.Spam {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("protocol error", func(t *testing.T) {
		// spamd refuses a User header with control characters:
		// EX_PROTOCOL, with its text.
		c := newClient(t, spamc.Config{Address: sd.Addr(), User: "bad\x01user"})
		_, err := c.Symbols(ctx(t, 30*time.Second), strings.NewReader(gtube), int64(len(gtube)))
		var se *spamc.Error
		if !errors.As(err, &se) || se.Code != 76 || !strings.Contains(err.Error(), "EX_PROTOCOL") ||
			!strings.Contains(se.Text, "control chars") {
			t.Fatalf("got %v, want EX_PROTOCOL about control chars", err)
		}
	})
	t.Run("short message", func(t *testing.T) {
		_, err := tcp.Symbols(ctx(t, 30*time.Second), strings.NewReader(gtube), int64(len(gtube))+10)
		if err == nil || !strings.Contains(err.Error(), "shorter than its size") {
			t.Fatalf("got %v, want a size mismatch", err)
		}
	})
	t.Run("max size", func(t *testing.T) {
		c := newClient(t, spamc.Config{Address: sd.Addr(), MaxSize: int64(len(gtube))})
		if res, err := c.Symbols(ctx(t, 30*time.Second), strings.NewReader(gtube), int64(len(gtube))); err != nil || !res.Spam {
			t.Fatalf("at the limit: %+v, %v", res, err)
		}
		big := gtube + "x\r\n"
		if _, err := c.Symbols(ctx(t, 30*time.Second), strings.NewReader(big), int64(len(big))); err != spamc.ErrTooLarge {
			t.Fatalf("over the limit: %v, want ErrTooLarge", err)
		}
		if _, err := c.Symbols(ctx(t, 30*time.Second), strings.NewReader(big), -1); err != spamc.ErrTooLarge {
			t.Fatalf("over the limit, unknown size: %v, want ErrTooLarge", err)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		sd.Stop()
		for _, c := range []*spamc.Client{tcp, unix} {
			_, err := c.Symbols(ctx(t, 10*time.Second), strings.NewReader(gtube), int64(len(gtube)))
			if err == nil || !strings.Contains(err.Error(), "connecting") {
				t.Errorf("%s: %v, want a connection error", c, err)
			}
		}
	})
}

// A spamd that takes the message and never answers: the context's
// deadline ends the wait.
func TestDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hold := make(chan struct{})
	defer close(hold)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(io.Discard, c); <-hold }()
		}
	}()
	c := newClient(t, spamc.Config{Address: "tcp:" + ln.Addr().String()})
	start := time.Now()
	_, err = c.Symbols(ctx(t, 300*time.Millisecond), strings.NewReader(gtube), int64(len(gtube)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v", el)
	}

	// Cancelling (the client went away) ends it too.
	cctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	if err := c.Ping(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ping: got %v, want cancelled", err)
	}
}

func TestNewAddresses(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:783":        "tcp:127.0.0.1:783",
		"tcp:[::1]:783":        "tcp:[::1]:783",
		"unix:/run/spamd.sock": "unix:/run/spamd.sock",
		"spamd.internal:783":   "tcp:spamd.internal:783",
		"unix:relative/path":   "",
		"127.0.0.1":            "",
		"":                     "",
	} {
		c, err := spamc.New(spamc.Config{Address: addr})
		switch {
		case want == "" && err == nil:
			t.Errorf("%q: accepted as %s", addr, c)
		case want != "" && (err != nil || c.String() != want):
			t.Errorf("%q: %v %v, want %s", addr, c, err, want)
		}
	}
	if _, err := spamc.New(spamc.Config{Address: "127.0.0.1:783", User: "a\r\nb"}); err == nil {
		t.Error("a user name with CRLF was accepted")
	}
}
