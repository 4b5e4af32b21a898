package spamd

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"mailgate/internal/spamdtest"
	"mailgate/internal/spool"
	"mailgate/pipeline"
)

const (
	gtube = "From: spammer@example.net\r\nTo: bob@example.com\r\nSubject: offer\r\n\r\n" + spamdtest.GTUBE + "\r\n"
)

// ham is an ordinary message, dated now (SpamAssassin scores old dates).
var ham = "From: alice@example.net\r\nTo: bob@example.com\r\nSubject: lunch\r\n" +
	"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <20261123.1@example.net>\r\n\r\n" +
	"Hello Bob,\r\n\r\nshall we have lunch on Tuesday?\r\n\r\nAlice\r\n"

func newFilter(t *testing.T, c Config) *Filter {
	t.Helper()
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// message spools text the way the gateway does; threshold 0 puts it on
// disk.
func message(t *testing.T, text string, threshold int64) *pipeline.Message {
	t.Helper()
	m := spool.New(threshold, 64<<20, t.TempDir())
	t.Cleanup(func() { m.Close() })
	if _, err := m.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	return m
}

func session() *pipeline.Session {
	// A public address (SpamAssassin scores documentation ones as
	// illegal) with a confirmed name.
	return &pipeline.Session{ID: "test", Helo: "mail.example.net", ClientHostname: "mail.example.net",
		Extended: true, Client: netip.MustParseAddrPort("93.184.215.14:40000")}
}

// check runs the filter on text and returns the verdict and the
// transaction (its headers).
func check(t *testing.T, f *Filter, text string) (pipeline.Verdict, *pipeline.Transaction) {
	t.Helper()
	s := session()
	// The gateway's Received, as the pipeline sets it before DATA.
	tx := &pipeline.Transaction{}
	tx.Received = pipeline.ReceivedField("mx.gateway.test", s, tx, "test.1", time.Now())
	return f.Data(context.Background(), s, tx, message(t, text, 64<<10)), tx
}

func wantReply(t *testing.T, what string, v pipeline.Verdict, prefix string) {
	t.Helper()
	if got := v.Reply.String(); v.Action == pipeline.Continue || !strings.HasPrefix(got, prefix) {
		t.Fatalf("%s: %v %q (reason %q), want %q", what, v.Action, got, v.Reason, prefix)
	}
}

func wantPass(t *testing.T, what string, v pipeline.Verdict, reason string) {
	t.Helper()
	if v.Action != pipeline.Continue || !strings.Contains(v.Reason, reason) {
		t.Fatalf("%s: %v %q (reason %q), want a pass because %q", what, v.Action, v.Reply.String(), v.Reason, reason)
	}
}

// header returns the added field name (unfolded value), "" if absent.
func header(tx *pipeline.Transaction, name string) string {
	for _, h := range tx.AddHeaders {
		if n, v, _ := strings.Cut(h, ":"); strings.EqualFold(n, name) {
			v = strings.ReplaceAll(strings.ReplaceAll(v, "\r\n\t", " "), "\r\n", "")
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// The filter against a real spamd (one for the package: it takes seconds
// to start). The spamd-down cases come last: they stop it.
func TestSpamd(t *testing.T) {
	sd := spamdtest.Start(t)
	defer func() {
		if t.Failed() {
			t.Logf("spamd log:\n%s", sd.Log())
		}
	}()
	addrs := []string{sd.Addr(), "unix:" + sd.Socket()}

	t.Run("gtube refused", func(t *testing.T) {
		for _, a := range addrs {
			f := newFilter(t, Config{Address: a, RejectScore: 10, TagScore: 5})
			v, tx := check(t, f, gtube)
			wantReply(t, a, v, "550 5.7.1 Message refused as spam (score 100")
			if v.Action != pipeline.Reject || !strings.Contains(v.Reason, ">= reject_score 10 (GTUBE") {
				t.Errorf("%s: %v, reason %q", a, v.Action, v.Reason)
			}
			// Flagged as well, for mode: shadow (refusal not applied).
			if header(tx, "X-Spam-Flag") != "YES" || !strings.HasPrefix(header(tx, "X-Spam-Status"), "Yes, score=100") {
				t.Errorf("%s: refused message not flagged: %q", a, tx.AddHeaders)
			}
		}
	})
	t.Run("ham", func(t *testing.T) {
		f := newFilter(t, Config{Address: sd.Addr(), RejectScore: 10})
		v, tx := check(t, f, ham)
		wantPass(t, "ham", v, "< tag_score 5")
		st := header(tx, "X-Spam-Status")
		if !strings.HasPrefix(st, "No, score=") || !strings.Contains(st, " required=5.0 tests=") {
			t.Errorf("X-Spam-Status: %q", st)
		}
		if sc := header(tx, "X-Spam-Score"); sc == "" || !strings.Contains(st, "score="+sc+" ") {
			t.Errorf("X-Spam-Score %q does not match X-Spam-Status %q", sc, st)
		}
		if fl := header(tx, "X-Spam-Flag"); fl != "" {
			t.Errorf("ham flagged: %q", fl)
		}
		// Our Received field gave SpamAssassin the relay.
		if strings.Contains(st, "NO_RELAYS") || strings.Contains(st, "NO_RECEIVED") {
			t.Errorf("spamd saw no relay: %q", st)
		}
	})
	t.Run("gtube tagged", func(t *testing.T) {
		// reject_score 0: never refuse, only tag.
		f := newFilter(t, Config{Address: sd.Addr(), TagScore: 3})
		v, tx := check(t, f, gtube)
		wantPass(t, "gtube", v, ">= tag_score 3: tagged (GTUBE")
		if fl := header(tx, "X-Spam-Flag"); fl != "YES" {
			t.Errorf("X-Spam-Flag %q", fl)
		}
		st := header(tx, "X-Spam-Status")
		if !strings.HasPrefix(st, "Yes, score=100") || !strings.Contains(st, " required=3.0 tests=GTUBE,") {
			t.Errorf("X-Spam-Status %q", st)
		}
		if !strings.HasPrefix(header(tx, "X-Spam-Score"), "100") {
			t.Errorf("X-Spam-Score %q", header(tx, "X-Spam-Score"))
		}
		for _, h := range tx.AddHeaders {
			for _, line := range strings.Split(strings.TrimSuffix(h, "\r\n"), "\r\n") {
				if len(line) > 78 {
					t.Errorf("line of %d octets: %q", len(line), line)
				}
			}
		}
	})
	t.Run("on disk", func(t *testing.T) {
		f := newFilter(t, Config{Address: sd.Addr(), RejectScore: 10})
		tx := &pipeline.Transaction{}
		m := message(t, gtube, 0)
		if !m.OnDisk() {
			t.Fatal("message not on disk")
		}
		wantReply(t, "on disk", f.Data(context.Background(), session(), tx, m), "550 5.7.1 ")
	})
	t.Run("forged verdict removed", func(t *testing.T) {
		f := newFilter(t, Config{Address: sd.Addr(), RejectScore: 10})
		forged := "X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\n\tWHITELISTED\r\nx-spam-score: -100\r\n" + ham
		v, tx := check(t, f, forged)
		wantPass(t, "forged", v, "tag_score")
		r := tx.MessageReader(message(t, forged, 64<<10))
		got, _ := io.ReadAll(r)
		r.Close()
		if string(got) != ham {
			t.Errorf("forged fields kept:\n%s", got)
		}
	})
	t.Run("over max_size", func(t *testing.T) {
		// What spamd would be sent: the message under our Received.
		size := int64(len(gtube) + len(pipeline.ReceivedField("mx.gateway.test", session(), &pipeline.Transaction{}, "test.1", time.Now())))
		f := newFilter(t, Config{Address: sd.Addr(), RejectScore: 10, MaxSize: size - 1})
		v, tx := check(t, f, gtube)
		wantPass(t, "big", v, "not scored: over max_size")
		if len(tx.AddHeaders) != 0 {
			t.Errorf("headers on an unscored message: %q", tx.AddHeaders)
		}
		f = newFilter(t, Config{Address: sd.Addr(), RejectScore: 10, MaxSize: size})
		v, _ = check(t, f, gtube)
		wantReply(t, "at the limit", v, "550 5.7.1 ")
	})
	t.Run("authenticated", func(t *testing.T) {
		f := newFilter(t, Config{Address: sd.Addr(), RejectScore: 10})
		s := session()
		s.AuthUser = "alice"
		wantPass(t, "authenticated", f.Data(context.Background(), s, &pipeline.Transaction{}, message(t, gtube, 1<<10)), "authenticated")
	})
	t.Run("spamd stopped", func(t *testing.T) {
		sd.Stop()
		for _, a := range addrs {
			var logs bytes.Buffer
			f := newFilter(t, Config{Address: a, RejectScore: 10, OnError: OnErrorAccept,
				Log: slog.New(slog.NewTextHandler(&logs, nil))})
			v, tx := check(t, f, gtube)
			wantPass(t, a+" accept", v, "spamd unavailable: ")
			if len(tx.AddHeaders) != 0 {
				t.Errorf("%s: headers on an unscored message: %q", a, tx.AddHeaders)
			}
			if !strings.Contains(logs.String(), "level=WARN msg=\"spamd unavailable, message not scored\"") {
				t.Errorf("%s: not logged: %q", a, logs.String())
			}

			f = newFilter(t, Config{Address: a, RejectScore: 10, OnError: OnErrorTempfail})
			v, _ = check(t, f, gtube)
			wantReply(t, a+" tempfail", v, "451 4.7.1 Spam check unavailable, try again later")
			if v.Action != pipeline.Tempfail || !strings.HasPrefix(v.Reason, "spamd unavailable: ") {
				t.Errorf("%s: %v, reason %q", a, v.Action, v.Reason)
			}
		}
	})
}

// A spamd that never answers: the timeout turns into the failure policy.
func TestTimeout(t *testing.T) {
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
	f := newFilter(t, Config{Address: ln.Addr().String(), Timeout: 300 * time.Millisecond, OnError: OnErrorTempfail})
	start := time.Now()
	v, _ := check(t, f, gtube)
	wantReply(t, "slow spamd", v, "451 4.7.1 Spam check unavailable, try again later")
	if !strings.Contains(v.Reason, "deadline exceeded") {
		t.Errorf("reason %q", v.Reason)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v", el)
	}
}

func TestNew(t *testing.T) {
	for _, c := range []Config{
		{},
		{Address: "unix:relative"},
		{Address: "127.0.0.1:783", OnError: "bounce"},
		{Address: "127.0.0.1:783", RejectScore: -1},
		{Address: "127.0.0.1:783", MaxSize: -1},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	f, err := New(Config{Address: "127.0.0.1:783"})
	if err != nil {
		t.Fatal(err)
	}
	if f.c.TagScore != 5 || f.c.MaxSize != 512<<10 || f.c.Timeout != 30*time.Second || f.c.OnError != OnErrorAccept {
		t.Errorf("defaults: %+v", f.c)
	}
	if f.Name() != "spamd" || f.Kind() != pipeline.Antispam {
		t.Errorf("%s %v", f.Name(), f.Kind())
	}
}

// X-Spam-Status is SpamAssassin's format, folded between rule names.
func TestStatusHeader(t *testing.T) {
	f := newFilter(t, Config{Address: "127.0.0.1:783", TagScore: 5})
	if got := f.status("No", "0.1", nil); got != "X-Spam-Status: No, score=0.1 required=5.0 tests=none\r\n" {
		t.Errorf("%q", got)
	}
	if got := f.status("Yes", "7.3", []string{"SYM1", "SYM2"}); got != "X-Spam-Status: Yes, score=7.3 required=5.0 tests=SYM1,SYM2\r\n" {
		t.Errorf("%q", got)
	}
	var many []string
	for range 20 {
		many = append(many, "SOME_LONG_RULE_NAME")
	}
	got := f.status("Yes", "1005.2", many)
	lines := strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n")
	if len(lines) < 3 {
		t.Fatalf("not folded: %q", got)
	}
	for i, l := range lines {
		if len(l) > 78 || i > 0 && !strings.HasPrefix(l, "\t") {
			t.Errorf("line %d: %q", i, l)
		}
	}
	unfolded := strings.ReplaceAll(got, "\r\n\t", "")
	if want := "tests=" + strings.Join(many, ",") + "\r\n"; !strings.HasSuffix(unfolded, want) {
		t.Errorf("unfolded %q", unfolded)
	}
	for v, want := range map[float64]string{-0.04: "0.0", 7.25: "7.2", 1005.2: "1005.2", -1.5: "-1.5"} {
		if got := formatScore(v); got != want {
			t.Errorf("formatScore(%g) = %s, want %s", v, got, want)
		}
	}
}
