package clamav

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"mailgate/internal/clamdtest"
	"mailgate/internal/spool"
	"mailgate/pipeline"
)

func newFilter(t *testing.T, c Config) *Filter {
	t.Helper()
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// message spools text the way the gateway does (small in memory, larger
// on disk).
func message(t *testing.T, text string) *pipeline.Message {
	t.Helper()
	m := spool.New(64<<10, 64<<20, t.TempDir())
	t.Cleanup(func() { m.Close() })
	if _, err := m.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	return m
}

func scan(f *Filter, m *pipeline.Message) pipeline.Verdict {
	return f.Data(context.Background(), &pipeline.Session{ID: "test"}, &pipeline.Transaction{}, m)
}

func wantReply(t *testing.T, what string, v pipeline.Verdict, reply string) {
	t.Helper()
	if got := v.Reply.String(); v.Action == pipeline.Continue || got != reply {
		t.Fatalf("%s: %v %q (reason %q), want %q", what, v.Action, got, v.Reason, reply)
	}
}

func wantPass(t *testing.T, what string, v pipeline.Verdict, reason string) {
	t.Helper()
	if v.Action != pipeline.Continue || !strings.Contains(v.Reason, reason) {
		t.Fatalf("%s: %v %q (reason %q), want a pass because %q", what, v.Action, v.Reply.String(), v.Reason, reason)
	}
}

var virusReply = "554 5.7.1 Message refused: virus found (" + clamdtest.Signature + ")"

const unavailableReply = "451 4.3.0 Virus scanner unavailable, try again later"

// The test messages against a real clamd, over both sockets: the virus
// plain, base64-attached and zipped is refused with its name; clean mail
// passes.
func TestMessages(t *testing.T) {
	d := clamdtest.Start(t)
	for _, addr := range []string{d.Unix(), d.TCP()} {
		f := newFilter(t, Config{Address: addr, Timeout: 10 * time.Second})
		for _, m := range clamdtest.Messages() {
			v := scan(f, message(t, m.Text))
			if m.Virus {
				wantReply(t, addr+" "+m.Name, v, virusReply)
				if v.Action != pipeline.Reject || v.Reason != "virus found: "+clamdtest.Signature {
					t.Errorf("%s: %v, reason %q", m.Name, v.Action, v.Reason)
				}
			} else {
				wantPass(t, addr+" "+m.Name, v, "clean")
			}
		}
	}
}

// A message on disk (past the spool threshold) is scanned whole.
func TestLargeMessage(t *testing.T) {
	d := clamdtest.Start(t)
	f := newFilter(t, Config{Address: d.Unix(), Timeout: 10 * time.Second})
	head := "Subject: big\r\n\r\n" + strings.Repeat("Filler line of a long message.\r\n", 30000)
	m := message(t, head+clamdtest.EICAR()+"\r\n")
	if !m.OnDisk() {
		t.Fatal("not spooled to disk")
	}
	wantReply(t, "virus at the end of 900 KB", scan(f, m), virusReply)
}

// Past max_size only the first max_size bytes are scanned: the verdict
// says so.
func TestMaxSize(t *testing.T) {
	d := clamdtest.Start(t)
	f := newFilter(t, Config{Address: d.Unix(), MaxSize: 64 << 10, Timeout: 10 * time.Second})
	filler := strings.Repeat("x", 100<<10)
	wantReply(t, "virus in the first max_size bytes", scan(f, message(t, "Subject: a\r\n\r\n"+clamdtest.EICAR()+"\r\n"+filler)), virusReply)
	v := scan(f, message(t, "Subject: a\r\n\r\n"+filler+clamdtest.EICAR()+"\r\n"))
	wantPass(t, "virus past max_size", v, "clean in the first 65536 of")
}

// max_size above clamd's StreamMaxLength is an administrator's error: the
// message is deferred, and the log says what to change.
func TestStreamMaxLength(t *testing.T) {
	d := clamdtest.StartWith(t, clamdtest.Options{StreamMaxLength: 256 << 10})
	var logs bytes.Buffer
	f := newFilter(t, Config{Address: d.Unix(), MaxSize: 1 << 20, Timeout: 10 * time.Second,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	v := scan(f, message(t, "Subject: a\r\n\r\n"+strings.Repeat("x", 512<<10)))
	wantReply(t, "over StreamMaxLength", v, unavailableReply)
	if !strings.Contains(v.Reason, "StreamMaxLength") {
		t.Errorf("reason %q", v.Reason)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "StreamMaxLength to at least filters.clamav.max_size") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// clamd down, hung or too slow: 451 4.3.0 (on_error: tempfail), or
// delivered unscanned with a warning (on_error: accept).
func TestClamdFailure(t *testing.T) {
	d := clamdtest.Start(t)
	msg := clamdtest.Messages()[0].Text
	for _, addr := range []string{d.Unix(), d.TCP()} {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		strict := newFilter(t, Config{Address: addr, Timeout: 300 * time.Millisecond, Log: log})
		lenient := newFilter(t, Config{Address: addr, Timeout: 300 * time.Millisecond, OnError: OnErrorAccept, Log: log})

		wantReply(t, addr+" up", scan(strict, message(t, clamdtest.EICAR())), virusReply)

		d.Stop()
		v := scan(strict, message(t, msg))
		wantReply(t, addr+" killed", v, unavailableReply)
		if !strings.HasPrefix(v.Reason, "clamd unavailable: ") {
			t.Errorf("reason %q", v.Reason)
		}
		wantPass(t, addr+" killed, on_error accept", scan(lenient, message(t, clamdtest.EICAR())), "unscanned: ")
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "UNSCANNED") {
			t.Errorf("no warning for an unscanned message:\n%s", logs.String())
		}

		d.Start()
		d.Pause()
		start := time.Now()
		wantReply(t, addr+" hung", scan(strict, message(t, msg)), unavailableReply)
		if time.Since(start) > 2*time.Second {
			t.Errorf("hung clamd held the message %v with a 300ms timeout", time.Since(start))
		}
		wantPass(t, addr+" hung, on_error accept", scan(lenient, message(t, msg)), "unscanned: ")
		d.Resume()

		wantReply(t, addr+" back", scan(strict, message(t, clamdtest.EICAR())), virusReply)
	}
}

// A virus is refused even when an earlier filter whitelisted the sender.
func TestWhitelistedSender(t *testing.T) {
	d := clamdtest.Start(t)
	f := newFilter(t, Config{Address: d.Unix(), Timeout: 10 * time.Second})
	p := pipeline.New(pipeline.Entry{Filter: allowAll{}, Mode: pipeline.Enforce}, pipeline.Entry{Filter: f, Mode: pipeline.Enforce})
	tx := &pipeline.Transaction{}
	v := p.Data(context.Background(), &pipeline.Session{ID: "test"}, tx, message(t, clamdtest.EICAR()))
	wantReply(t, "whitelisted", v, virusReply)
	if !tx.Whitelisted {
		t.Error("the allow filter did not run")
	}
	// A whitelisted session (relay network, authenticated user) too.
	v = p.Data(context.Background(), &pipeline.Session{ID: "test", Whitelisted: true}, &pipeline.Transaction{}, message(t, clamdtest.EICAR()))
	wantReply(t, "whitelisted session", v, virusReply)
}

type allowAll struct{}

func (allowAll) Name() string        { return "allow" }
func (allowAll) Kind() pipeline.Kind { return pipeline.Antispam }
func (allowAll) Data(context.Context, *pipeline.Session, *pipeline.Transaction, *pipeline.Message) pipeline.Verdict {
	return pipeline.Whitelist("test")
}

func TestNew(t *testing.T) {
	for _, bad := range []Config{
		{Address: ""},
		{Address: "unix:relative"},
		{Address: "127.0.0.1:3310", OnError: "ignore"},
		{Address: "127.0.0.1:3310", MaxSize: -1},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	f := newFilter(t, Config{Address: "unix:/nonexistent/clamd.sock"})
	if f.c.OnError != OnErrorTempfail || f.c.MaxSize != DefaultMaxSize || f.c.Timeout != DefaultTimeout || f.c.Connections != DefaultConnections {
		t.Errorf("defaults: %+v", f.c)
	}
	if f.Name() != "clamav" || f.Kind() != pipeline.Policy {
		t.Errorf("%s %v", f.Name(), f.Kind())
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"Win.Test.EICAR_HDB-1":           "Win.Test.EICAR_HDB-1",
		"Mailgate.Test.EICAR.UNOFFICIAL": "Mailgate.Test.EICAR.UNOFFICIAL",
		"a b\r\n250 ok":                  "a_b__250_ok",
		"(x)<script>":                    "_x__script_",
		"":                               "unknown",
		strings.Repeat("A", 300):         strings.Repeat("A", 100),
	} {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzClean: whatever clamd sends, the reply text stays one short line of
// harmless characters.
func FuzzClean(f *testing.F) {
	f.Add("Win.Test.EICAR_HDB-1")
	f.Add("x\r\n.\r\nMAIL FROM:<a@b>")
	f.Fuzz(func(t *testing.T, sig string) {
		c := Clean(sig)
		if c == "" || len(c) > maxSignature || strings.ContainsAny(c, " \r\n\t()<>\x00") {
			t.Fatalf("Clean(%q) = %q", sig, c)
		}
	})
}
