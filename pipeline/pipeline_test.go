package pipeline

import (
	"context"
	"strings"
	"testing"
)

// fake is a filter with a fixed rcpt verdict.
type fake struct {
	name  string
	kind  Kind
	v     Verdict
	calls int
	panic bool
	// header: a field the filter adds (appended, or prepended with
	// prepend), and drops the fields named drop.
	header, drop string
	prepend      bool
}

func (f *fake) Name() string { return f.name }
func (f *fake) Kind() Kind   { return f.kind }
func (f *fake) Rcpt(_ context.Context, _ *Session, t *Transaction, _ Address) Verdict {
	f.calls++
	switch {
	case f.header != "" && f.prepend:
		t.AddHeaders = append([]string{f.header}, t.AddHeaders...)
	case f.header != "":
		t.AddHeaders = append(t.AddHeaders, f.header)
	}
	if f.drop != "" {
		t.AddDropHeader(func(name string, _ []byte) bool { return name == f.drop })
	}
	if f.panic {
		panic("boom")
	}
	return f.v
}

func TestPipelineOrderAndVerdicts(t *testing.T) {
	allow := &fake{name: "allowlist", kind: Antispam, v: Whitelist("sender on allow list")}
	spam := &fake{name: "antispam", kind: Antispam, v: Refuse(550, [3]int{5, 7, 1}, "spam", "listed")}
	relay := &fake{name: "relay", kind: Policy, v: Refuse(554, [3]int{5, 7, 1}, "Relay access denied", "not local")}
	var observed []Decision
	p := New(Entry{allow, Enforce}, Entry{spam, Enforce}, Entry{relay, Enforce})
	p.Observe = func(d Decision) { observed = append(observed, d) }
	s, tx := &Session{}, &Transaction{}
	v := p.Rcpt(context.Background(), s, tx, Address{})
	if v.Reply.Code != 554 {
		t.Fatalf("verdict %+v: accept must skip antispam but never relay control", v)
	}
	if spam.calls != 0 || !tx.Whitelisted {
		t.Errorf("antispam filter called %d times after accept", spam.calls)
	}
	if len(tx.Decisions) != 3 || !tx.Decisions[1].Skipped || len(observed) != 3 {
		t.Errorf("decisions %+v", tx.Decisions)
	}
}

func TestShadowMode(t *testing.T) {
	spam := &fake{name: "antispam", kind: Antispam, v: Refuse(550, [3]int{5, 7, 1}, "spam", "listed")}
	p := New(Entry{spam, Shadow})
	tx := &Transaction{}
	if v := p.Rcpt(context.Background(), &Session{}, tx, Address{}); v.Action != Continue {
		t.Fatalf("shadow filter applied: %+v", v)
	}
	if len(tx.Decisions) != 1 || !tx.Decisions[0].Shadow || tx.Decisions[0].Verdict.Action != Reject {
		t.Errorf("shadow decision not recorded: %+v", tx.Decisions)
	}
}

// A shadow filter adds and removes no header field; the others' changes,
// before and after it, stand.
func TestShadowModeHeaders(t *testing.T) {
	before := &fake{name: "before", kind: Policy, header: "X-Before: 1\r\n", drop: "X-Old"}
	flag := &fake{name: "flag", kind: Antispam, header: "X-Spam-Flag: YES\r\n", drop: "X-Forged"}
	first := &fake{name: "first", kind: Antispam, header: "Received-SPF: fail\r\n", prepend: true}
	after := &fake{name: "after", kind: Policy, header: "X-After: 1\r\n"}
	p := New(Entry{before, Enforce}, Entry{flag, Shadow}, Entry{first, Shadow}, Entry{after, Enforce})
	tx := &Transaction{AddHeaders: make([]string, 0, 8)} // room to append in place
	p.Rcpt(context.Background(), &Session{}, tx, Address{})
	if got := strings.Join(tx.AddHeaders, ""); got != "X-Before: 1\r\nX-After: 1\r\n" {
		t.Errorf("headers added: %q", got)
	}
	if tx.DropHeader == nil || !tx.DropHeader("X-Old", nil) || tx.DropHeader("X-Forged", nil) {
		t.Error("drops: want the enforcing filter's only")
	}
	if flag.calls != 1 || first.calls != 1 {
		t.Error("shadow filters not run")
	}
}

func TestScoreAndPanic(t *testing.T) {
	score := &fake{name: "score", kind: Antispam, v: Verdict{Action: Score, Score: 2.5, Tag: "listed"}}
	bad := &fake{name: "bad", kind: Policy, panic: true}
	p := New(Entry{score, Enforce}, Entry{bad, Enforce})
	s, tx := &Session{}, &Transaction{}
	v := p.Rcpt(context.Background(), s, tx, Address{})
	if tx.Score != 2.5 || len(tx.Tags) != 1 || s.Score != 0 || tx.TotalScore(s) != 2.5 {
		t.Errorf("transaction score %v tags %v, session score %v", tx.Score, tx.Tags, s.Score)
	}
	if v.Action != Tempfail || v.Reply.String() != "451 4.3.0 Temporary local problem, try again later" {
		t.Errorf("a panicking filter must tempfail the message: %+v", v)
	}
}

// An allow-listed sender (Accept at MAIL) whitelists its transaction
// only; an Accept at connect whitelists the whole session.
// allowAll whitelists at MAIL and at connect (not at RCPT).
type allowAll struct{}

func (allowAll) Name() string { return "allow" }
func (allowAll) Kind() Kind   { return Policy }
func (allowAll) Mail(context.Context, *Session, *Transaction) Verdict {
	return Whitelist("allow-listed")
}
func (allowAll) Connect(context.Context, *Session) Verdict { return Whitelist("allow-listed") }

func TestWhitelistScope(t *testing.T) {
	allow := allowAll{}
	spam := &fake{name: "antispam", kind: Antispam, v: Refuse(550, [3]int{5, 7, 1}, "spam", "listed")}
	p := New(Entry{allow, Enforce}, Entry{spam, Enforce})
	s := &Session{}
	tx := &Transaction{}
	if v := p.Mail(context.Background(), s, tx); v.Action != Continue || !tx.Whitelisted || s.Whitelisted {
		t.Fatalf("mail-stage accept: verdict %+v, transaction %v, session %v", v, tx.Whitelisted, s.Whitelisted)
	}
	if v := p.Rcpt(context.Background(), s, &Transaction{}, Address{}); v.Action != Reject {
		t.Errorf("the next transaction must not be whitelisted: %+v", v)
	}
	if v := p.Connect(context.Background(), s); v.Action != Continue || !s.Whitelisted {
		t.Fatalf("connect-stage accept: %+v", v)
	}
	if v := p.Rcpt(context.Background(), s, &Transaction{}, Address{}); v.Action != Continue {
		t.Errorf("a whitelisted session skips antispam: %+v", v)
	}
}

func TestExpiredContextTempfails(t *testing.T) {
	f := &fake{name: "f", kind: Policy}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if v := New(Entry{f, Enforce}).Rcpt(ctx, &Session{}, &Transaction{}, Address{}); v.Action != Tempfail || f.calls != 0 {
		t.Errorf("verdict %+v calls %d", v, f.calls)
	}
}
