package rates

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"mailgate/internal/mailaddr"
	"mailgate/internal/redistest"
	"mailgate/internal/spool"
	"mailgate/internal/state"
	"mailgate/pipeline"
)

const (
	wantMessages = "452 4.7.1 Too many messages, slow down and try again later"
	wantRcpts    = "452 4.5.3 Too many recipients, slow down and try again later"
	wantSize     = "552 5.3.4 Message size exceeds the limit for this sender"
)

// step is one command of a client; the clock is advanced first.
type step struct {
	after time.Duration
	stage string // mail, rcpt or data
	ip    string
	from  string // "" is the null sender <>
	size  int64  // SIZE= at mail, the message's size at data
	auth  string
	want  string // the reply, "" for no refusal
}

func (st step) run(t *testing.T, ctx context.Context, f *Filter) pipeline.Verdict {
	t.Helper()
	from, err := mailaddr.Parse(st.from)
	if err != nil {
		t.Fatal(err)
	}
	s := &pipeline.Session{ID: "s1", Client: netip.AddrPortFrom(netip.MustParseAddr(st.ip), 40000), AuthUser: st.auth}
	tr := &pipeline.Transaction{From: from}
	switch st.stage {
	case "mail":
		tr.Size = st.size
		return f.Mail(ctx, s, tr)
	case "rcpt":
		return f.Rcpt(ctx, s, tr, mailaddr.Address{Local: "bob", Domain: "example.com"})
	case "data":
		m := spool.New(1<<16, 1<<30, t.TempDir())
		defer m.Close()
		m.Write(bytes.Repeat([]byte("x"), int(st.size)))
		return f.Data(ctx, s, tr, m)
	}
	t.Fatalf("bad stage %q", st.stage)
	return pipeline.Verdict{}
}

func check(t *testing.T, i int, st step, v pipeline.Verdict) {
	t.Helper()
	got := ""
	if v.Action != pipeline.Continue {
		got = v.Reply.String()
	}
	if got != st.want {
		t.Errorf("step %d (%s from %s <%s>): got %q (%s), want %q", i, st.stage, st.ip, st.from, got, v.Reason, st.want)
	}
}

func TestRates(t *testing.T) {
	const (
		alice = "alice@example.org"
		bob   = "Bob@example.org"
	)
	hour := time.Hour
	tests := []struct {
		name   string
		sender Limits
		client Limits
		steps  []step
	}{
		{"messages per sender", Limits{Messages: Rate{3, hour}}, Limits{}, []step{
			{0, "mail", "192.0.2.1", alice, 0, "", ""},
			{0, "mail", "192.0.2.2", alice, 0, "", ""},
			{0, "mail", "192.0.2.3", "ALICE@example.org", 0, "", ""},
			{0, "mail", "192.0.2.1", alice, 0, "", wantMessages},
			{0, "mail", "192.0.2.1", bob, 0, "", ""},
			// The null sender has no per-sender limit.
			{0, "mail", "192.0.2.1", "", 0, "", ""},
			{0, "mail", "192.0.2.1", "", 0, "", ""},
			{0, "mail", "192.0.2.1", "", 0, "", ""},
			{0, "mail", "192.0.2.1", "", 0, "", ""},
			// A new window.
			{hour, "mail", "192.0.2.1", alice, 0, "", ""},
		}},
		{"authenticated users are limited too", Limits{Messages: Rate{1, hour}}, Limits{}, []step{
			{0, "mail", "192.0.2.1", alice, 0, "alice", ""},
			{0, "mail", "192.0.2.1", alice, 0, "alice", wantMessages},
		}},
		{"messages per client IP", Limits{}, Limits{Messages: Rate{2, hour}}, []step{
			{0, "mail", "192.0.2.1", alice, 0, "", ""},
			{0, "mail", "192.0.2.1", "", 0, "", ""},
			{0, "mail", "192.0.2.1", bob, 0, "", wantMessages},
			{0, "mail", "192.0.2.2", bob, 0, "", ""},
			{59 * time.Minute, "mail", "192.0.2.1", bob, 0, "", wantMessages},
			{time.Minute, "mail", "192.0.2.1", bob, 0, "", ""},
		}},
		{"IPv6 clients are counted per /64", Limits{}, Limits{Messages: Rate{2, hour}}, []step{
			{0, "mail", "2001:db8::1", alice, 0, "", ""},
			{0, "mail", "2001:db8::2", alice, 0, "", ""},
			{0, "mail", "2001:db8::ffff:3", alice, 0, "", wantMessages},
			{0, "mail", "2001:db8:0:1::1", alice, 0, "", ""},
			// IPv4-mapped is the IPv4 address.
			{0, "mail", "::ffff:192.0.2.1", alice, 0, "", ""},
			{0, "mail", "192.0.2.1", alice, 0, "", ""},
			{0, "mail", "192.0.2.1", alice, 0, "", wantMessages},
		}},
		{"recipients per sender and per client", Limits{Recipients: Rate{3, hour}}, Limits{Recipients: Rate{4, hour}}, []step{
			{0, "rcpt", "192.0.2.1", alice, 0, "", ""},
			{0, "rcpt", "192.0.2.1", alice, 0, "", ""},
			{0, "rcpt", "192.0.2.1", alice, 0, "", ""},
			{0, "rcpt", "192.0.2.1", alice, 0, "", wantRcpts},
			{0, "rcpt", "192.0.2.1", bob, 0, "", wantRcpts}, // the client's 5th
			{0, "rcpt", "192.0.2.2", bob, 0, "", ""},
			// Messages are counted apart from recipients.
			{0, "mail", "192.0.2.1", alice, 0, "", ""},
		}},
		{"message size", Limits{MaxSize: 1000}, Limits{MaxSize: 5000}, []step{
			{0, "mail", "192.0.2.1", alice, 1000, "", ""},
			{0, "mail", "192.0.2.1", alice, 1001, "", wantSize},
			{0, "mail", "192.0.2.1", alice, 0, "", ""}, // no SIZE declared
			{0, "data", "192.0.2.1", alice, 1000, "", ""},
			{0, "data", "192.0.2.1", alice, 1001, "", wantSize},
			// The null sender: only the client's limit.
			{0, "mail", "192.0.2.1", "", 5000, "", ""},
			{0, "mail", "192.0.2.1", "", 5001, "", wantSize},
			{0, "data", "192.0.2.1", "", 4000, "", ""},
			{0, "data", "192.0.2.1", "", 5001, "", wantSize},
		}},
		{"the smaller size limit wins", Limits{MaxSize: 5000}, Limits{MaxSize: 1000}, []step{
			{0, "mail", "192.0.2.1", alice, 1001, "", wantSize},
			{0, "data", "192.0.2.1", alice, 1001, "", wantSize},
		}},
		{"no limits", Limits{}, Limits{}, []step{
			{0, "mail", "192.0.2.1", alice, 1 << 40, "", ""},
			{0, "rcpt", "192.0.2.1", alice, 0, "", ""},
			{0, "data", "192.0.2.1", alice, 1 << 20, "", ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
			store := state.NewMemory()
			store.Now = func() time.Time { return now }
			f, err := New(Config{PerSender: tc.sender, PerClientIP: tc.client, Store: store})
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				now = now.Add(st.after)
				check(t, i, st, st.run(t, context.Background(), f))
			}
		})
	}
}

func TestLongSenderIsHashed(t *testing.T) {
	store := state.NewMemory()
	f, err := New(Config{PerSender: Limits{Messages: Rate{1, time.Hour}}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 200) + "@example.org"
	ctx := context.Background()
	mail := step{stage: "mail", ip: "192.0.2.1", from: long}
	check(t, 0, mail, mail.run(t, ctx, f))
	mail.want = wantMessages
	check(t, 1, mail, mail.run(t, ctx, f))
	// The counter is under the hashed key, so the limit held.
	if n, _ := store.Incr(ctx, "rate:msg:sh:"+hash(long), 0, time.Hour); n != 2 {
		t.Errorf("hashed counter = %d, want 2", n)
	}
}

func TestNewValidates(t *testing.T) {
	store := state.NewMemory()
	bad := []Config{
		{},
		{Store: store, PerSender: Limits{Messages: Rate{N: 10}}},
		{Store: store, PerClientIP: Limits{Recipients: Rate{N: -1, Per: time.Hour}}},
		{Store: store, PerSender: Limits{MaxSize: -1}},
	}
	for _, c := range bad {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

// TestSharedRedis: two gateways on one real Redis share one budget, and a
// Redis that goes down fails open.
func TestSharedRedis(t *testing.T) {
	r := redistest.StartProcess(t)
	gateway := func() *Filter {
		store, err := state.OpenRedis(r.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		f, err := New(Config{PerSender: Limits{Messages: Rate{3, time.Hour}}, Store: store})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	a, b := gateway(), gateway()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	mail := step{stage: "mail", ip: "192.0.2.1", from: "alice@example.org"}
	for i, f := range []*Filter{a, b, a} {
		check(t, i, mail, mail.run(t, ctx, f))
	}
	over := mail
	over.want = wantMessages
	check(t, 3, over, over.run(t, ctx, b))

	r.Stop()
	v := over.run(t, ctx, b)
	check(t, 4, mail, v)
	if !strings.Contains(v.Reason, "state store unavailable, rate limits not applied") {
		t.Errorf("fail-open reason: %q", v.Reason)
	}
}
