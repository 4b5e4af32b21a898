package senders

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"mailgate/internal/mailaddr"
	"mailgate/pipeline"
)

func mail(t testing.TB, f *Filter, from string) pipeline.Verdict {
	t.Helper()
	a, err := mailaddr.Parse(from)
	if err != nil {
		t.Fatalf("%s: %v", from, err)
	}
	return f.Mail(context.Background(), &pipeline.Session{}, &pipeline.Transaction{From: a})
}

func TestLists(t *testing.T) {
	f, err := New(Config{
		Allow: []string{"Partner@Supplier.example", "@bank.example", "friends.example", "[192.0.2.1]"},
		Deny: []string{"spam.example", "bulk@news.example", "@shop.example", "supplier.example",
			"bank.example", "partner@friends.example", "@[192.0.2.9]"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		from  string
		want  pipeline.Action
		entry string
	}{
		// user@domain: that address only, in any case, quoted or not.
		{"partner@supplier.example", pipeline.Accept, "Partner@Supplier.example"},
		{"PARTNER@SUPPLIER.EXAMPLE", pipeline.Accept, "Partner@Supplier.example"},
		{`"partner"@supplier.example`, pipeline.Accept, "Partner@Supplier.example"},
		{"other@supplier.example", pipeline.Reject, "supplier.example"},
		{"partner@mx.supplier.example", pipeline.Reject, "supplier.example"},
		{"bulk@news.example", pipeline.Reject, "bulk@news.example"},
		{"Bulk@News.Example", pipeline.Reject, "bulk@news.example"},
		{"editor@news.example", pipeline.Continue, ""},
		// domain: the domain and its subdomains, not look-alikes.
		{"x@spam.example", pipeline.Reject, "spam.example"},
		{"x@a.b.SPAM.example", pipeline.Reject, "spam.example"},
		{"x@notspam.example", pipeline.Continue, ""},
		{"x@spam.example.org", pipeline.Continue, ""},
		// @domain: the domain only.
		{"x@shop.example", pipeline.Reject, "@shop.example"},
		{"x@www.shop.example", pipeline.Continue, ""},
		{"x@bank.example", pipeline.Accept, "@bank.example"},
		{"x@online.bank.example", pipeline.Reject, "bank.example"},
		// Allow wins over deny.
		{"partner@friends.example", pipeline.Accept, "friends.example"},
		{"anyone@lists.friends.example", pipeline.Accept, "friends.example"},
		// Address literals.
		{"x@[192.0.2.1]", pipeline.Accept, "[192.0.2.1]"},
		{"x@[192.0.2.9]", pipeline.Reject, "@[192.0.2.9]"},
		{"x@[192.0.2.10]", pipeline.Continue, ""},
		// No domain, null sender: not for the lists.
		{"postmaster", pipeline.Continue, ""},
		{"", pipeline.Continue, ""},
	}
	for _, c := range cases {
		v := mail(t, f, c.from)
		if v.Action != c.want {
			t.Errorf("<%s>: %v (%s), want %v", c.from, v.Action, v.Reason, c.want)
			continue
		}
		if c.entry != "" && !strings.HasSuffix(v.Reason, "by entry "+c.entry) {
			t.Errorf("<%s>: reason %q does not name entry %s", c.from, v.Reason, c.entry)
		}
		if v.Action == pipeline.Reject && v.Reply.String() != "550 5.7.1 Sender address rejected: access denied" {
			t.Errorf("<%s>: reply %q", c.from, v.Reply.String())
		}
	}
}

func TestNullSender(t *testing.T) {
	for _, c := range []struct {
		policy string
		want   pipeline.Action
	}{{"", pipeline.Continue}, {"accept", pipeline.Continue}, {"reject", pipeline.Reject}} {
		// Lists naming everything do not touch <>.
		f, err := New(Config{NullSender: c.policy, Allow: []string{"example"}, Deny: []string{"com"}})
		if err != nil {
			t.Fatal(err)
		}
		v := mail(t, f, "")
		if v.Action != c.want {
			t.Errorf("null_sender %q: %v, want %v", c.policy, v.Action, c.want)
		}
		if v.Action == pipeline.Reject && v.Reply.String() != "550 5.7.1 Null sender not accepted" {
			t.Errorf("reply %q", v.Reply.String())
		}
		if v := mail(t, f, "bob@example.com"); v.Action != pipeline.Reject {
			t.Errorf("null_sender %q: ordinary sender %v", c.policy, v.Action)
		}
	}
	if _, err := New(Config{NullSender: "bounce"}); err == nil || !strings.Contains(err.Error(), "bounce") {
		t.Errorf("bad null_sender: %v", err)
	}
}

func TestInvalidEntries(t *testing.T) {
	for _, e := range []string{"", "a@", "@", " example.com", "exa mple.com", "a b@example.com",
		"@a@example.com", "example..com", "-example.com", "@x.com:bob@y.com", "[300.1.1.1]"} {
		for _, c := range []Config{{Allow: []string{"ok.example", e}}, {Deny: []string{e}}} {
			_, err := New(c)
			if err == nil {
				t.Errorf("entry %q accepted", e)
				continue
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", e)) {
				t.Errorf("entry %q: error %q does not name it", e, err)
			}
		}
	}
}

// TestWhitelisting: an allow-listed sender skips the antispam filters
// after it, for its transaction only; the deny list applies even to a
// whitelisted session.
func TestWhitelisting(t *testing.T) {
	f, err := New(Config{Allow: []string{"friend.example"}, Deny: []string{"foe.example"}})
	if err != nil {
		t.Fatal(err)
	}
	spam := &antispam{}
	p := pipeline.New(pipeline.Entry{Filter: f}, pipeline.Entry{Filter: spam})
	run := func(s *pipeline.Session, from string) (*pipeline.Transaction, pipeline.Verdict) {
		a, _ := mailaddr.Parse(from)
		tr := &pipeline.Transaction{From: a}
		return tr, p.Mail(context.Background(), s, tr)
	}
	s := &pipeline.Session{}
	tr, v := run(s, "x@friend.example")
	if v.Action != pipeline.Continue || spam.calls != 0 || !tr.Whitelisted || s.Whitelisted {
		t.Errorf("allowed sender: %v, antispam ran %d times, transaction whitelisted %v, session %v",
			v.Action, spam.calls, tr.Whitelisted, s.Whitelisted)
	}
	if _, v := run(s, "x@neutral.example"); v.Action != pipeline.Continue || spam.calls != 1 {
		t.Errorf("next sender in the session: %v, antispam ran %d times", v.Action, spam.calls)
	}
	if _, v := run(&pipeline.Session{Whitelisted: true}, "x@foe.example"); v.Action != pipeline.Reject {
		t.Errorf("denied sender in whitelisted session: %v", v.Action)
	}
}

// antispam counts its calls: an antispam filter to be skipped.
type antispam struct{ calls int }

func (*antispam) Name() string        { return "antispam" }
func (*antispam) Kind() pipeline.Kind { return pipeline.Antispam }
func (a *antispam) Mail(context.Context, *pipeline.Session, *pipeline.Transaction) pipeline.Verdict {
	a.calls++
	return pipeline.Pass()
}

// BenchmarkMail: 10,000 entries of each list, a sender in a deep
// subdomain that no entry names (the most lookups).
func BenchmarkMail(b *testing.B) {
	var allow, deny []string
	for i := range 10000 {
		allow = append(allow, fmt.Sprintf("user%d@allowed%d.example", i, i), fmt.Sprintf("@exact%d.example", i))
		deny = append(deny, fmt.Sprintf("denied%d.example", i), fmt.Sprintf("spammer%d@bulk.example", i))
	}
	f, err := New(Config{Allow: allow, Deny: deny})
	if err != nil {
		b.Fatal(err)
	}
	a, _ := mailaddr.Parse("Someone@a.b.c.d.example.org")
	ctx, s, tr := context.Background(), &pipeline.Session{}, &pipeline.Transaction{From: a}
	b.ReportAllocs()
	for b.Loop() {
		if v := f.Mail(ctx, s, tr); v.Action != pipeline.Continue {
			b.Fatal(v.Action)
		}
	}
}
