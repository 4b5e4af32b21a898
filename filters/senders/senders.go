// Package senders is the sender allow and deny lists and the null-sender
// policy (SPEC §4 mail), the seed's "sender control": a blacklist of
// senders whose mail is refused and a whitelist whose mail is accepted,
// the whitelist taking precedence and overriding the anti-spam checks.
//
//	filters:
//	  senders:
//	    allow: [partner@supplier.example, "@bank.example"]
//	    deny:  [spam.example, bulk@news.example]
//	  null_sender: accept
//
// An entry is one of:
//
//	user@example.com   that address (the local part in any case too)
//	example.com        that domain and all its subdomains
//	@example.com       that domain only
//
// A sender on the allow list is accepted, even if the deny list names it
// too: the filter returns an Accept verdict, so the remaining anti-spam
// filters (SPF, greylisting, DNSBLs, content scores) are skipped for the
// transaction. Policy filters (relay control, barring, size, antivirus)
// still run. A sender on the deny list only is refused with
// "550 5.7.1 Sender address rejected: access denied".
//
// The filter is itself a policy filter, so the deny list applies even to
// clients an earlier filter whitelisted (an allow-listed IP, say).
//
// The sender is the envelope MAIL FROM, which anyone can forge: allow
// entries are best kept for domains that publish SPF or DKIM, and will
// not stop a forger who guesses them.
//
// null_sender: the null sender <> is what bounces and other delivery
// reports come from. RFC 5321 §4.5.5 requires accepting them, so accept
// is the default; reject is only for listeners that never legitimately
// receive reports (a submission port, say). The lists never match <>.
package senders

import (
	"context"
	"fmt"
	"strings"

	"mailgate/internal/mailaddr"
	"mailgate/pipeline"
)

// Config is the sender policy.
type Config struct {
	Allow, Deny []string
	// NullSender is "accept" (the default when empty) or "reject".
	NullSender string
}

// list is a compiled allow or deny list; each map takes a lower-cased key
// to the entry as written, for the log.
type list struct {
	addresses map[string]string // "user@example.com"
	domains   map[string]string // "@example.com": the domain only
	trees     map[string]string // "example.com": the domain and subdomains
}

// Filter applies the lists at MAIL FROM.
type Filter struct {
	allow, deny list
	rejectNull  bool
}

// New compiles the lists.
func New(c Config) (*Filter, error) {
	f := &Filter{}
	switch c.NullSender {
	case "", "accept":
	case "reject":
		f.rejectNull = true
	default:
		return nil, fmt.Errorf("null_sender %q: want accept or reject", c.NullSender)
	}
	var err error
	if f.allow, err = compile(c.Allow); err != nil {
		return nil, fmt.Errorf("senders allow: %w", err)
	}
	if f.deny, err = compile(c.Deny); err != nil {
		return nil, fmt.Errorf("senders deny: %w", err)
	}
	return f, nil
}

func compile(entries []string) (list, error) {
	l := list{addresses: map[string]string{}, domains: map[string]string{}, trees: map[string]string{}}
	for _, e := range entries {
		if err := l.add(e); err != nil {
			return list{}, fmt.Errorf("entry %q: %v", e, err)
		}
	}
	return l, nil
}

func (l list) add(e string) error {
	switch {
	case strings.HasPrefix(e, "@"):
		d, err := domain(e[1:])
		if err != nil {
			return err
		}
		l.domains[d] = e
	case strings.Contains(e, "@"):
		a, err := mailaddr.Parse(e)
		if err != nil || a.Route != "" || a.Domain == "" {
			return fmt.Errorf("not an address (user@example.com), a domain (example.com) or @domain")
		}
		l.addresses[key(a)] = e
	default:
		d, err := domain(e)
		if err != nil {
			return err
		}
		l.trees[d] = e
	}
	return nil
}

// domain checks and normalises a domain entry the way mailaddr
// normalises the domains of addresses, so the two compare equal.
func domain(d string) (string, error) {
	a, err := mailaddr.Parse("postmaster@" + d)
	if err != nil || d == "" || strings.Contains(d, "@") {
		return "", fmt.Errorf("not a domain")
	}
	return a.Domain, nil
}

// key is an address's lower-cased mailbox, quotes dropped: "Bob"@x and
// bob@x are the same sender.
func key(a pipeline.Address) string { return strings.ToLower(a.Local) + "@" + a.Domain }

// match returns the entry naming the sender, or "". It costs a map lookup
// per label of the domain, however long the list.
func (l list) match(a pipeline.Address) string {
	if e, ok := l.addresses[key(a)]; ok {
		return e
	}
	if e, ok := l.domains[a.Domain]; ok {
		return e
	}
	if a.Literal.IsValid() {
		return l.trees[a.Domain] // a literal has no subdomains
	}
	for d := a.Domain; d != ""; {
		if e, ok := l.trees[d]; ok {
			return e
		}
		_, d, _ = strings.Cut(d, ".")
	}
	return ""
}

func (*Filter) Name() string        { return "senders" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

var (
	nullRefused = pipeline.Refuse(550, [3]int{5, 7, 1}, "Null sender not accepted", "null sender refused (null_sender: reject)")
	denied      = pipeline.Refuse(550, [3]int{5, 7, 1}, "Sender address rejected: access denied", "")
)

// Mail applies the null-sender policy, then the allow and deny lists.
func (f *Filter) Mail(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction) pipeline.Verdict {
	from := t.From
	if from.Null {
		if f.rejectNull {
			return nullRefused
		}
		return pipeline.Pass()
	}
	if from.Domain == "" {
		return pipeline.Pass() // no domain: nothing the lists can name
	}
	if e := f.allow.match(from); e != "" {
		return pipeline.Whitelist(fmt.Sprintf("sender <%s> allow-listed by entry %s", from, e))
	}
	if e := f.deny.match(from); e != "" {
		v := denied
		v.Reason = fmt.Sprintf("sender <%s> denied by entry %s", from, e)
		return v
	}
	return pipeline.Pass()
}
