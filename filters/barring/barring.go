// Package barring is the seed's "Type 2 Wildcard List" barring of sender
// and recipient addresses (SPEC §4 mail and rcpt). An administrator lists
// patterns; an address a list bars is refused during the SMTP dialogue,
// before any message is transferred:
//
//	filters:
//	  barring:
//	    senders:
//	      - "*@%%%%*"           # four digits in a row in the domain part
//	      - "*@*%%%%*"          #   ('*' is one or more: two entries)
//	      - "%%%%*"             # addresses beginning with four digits
//	      - "*@netcom.com"      # all of NetCom and HotMail ...
//	      - "*@hotmail.com"
//	      - "~friend@netcom.com" # ... except these two
//	      - "~pal@hotmail.com"
//	      - "spammer@example.net"
//	    recipients:             # relay exploits the internal server might route
//	      - "*!*"
//	      - '"*@*"'
//	      - '"*@*"@*'
//
// A list is read top to bottom, starting with "not barred". Every entry
// that matches the address sets the state: a plain entry bars it, an entry
// starting with '~' lifts the bar. So later entries override earlier ones,
// and exclusions go after the entries they carve holes in.
//
// Wildcards: '*' one or more characters, '?' exactly one, '$' one letter
// A-Z (any case), '%' one digit. Every other character matches itself,
// ASCII letters in any case. A pattern matches the whole address as
// mailaddr prints it, without angle brackets: local@domain, a local part
// that needs quoting in its quotes (so a@b@c is "a@b"@c), any source route
// dropped (the relayexploit filter refuses those).
//
// Barring is a policy filter: it applies to allow-listed (whitelisted)
// clients and senders too, because an administrator who bars an address
// means it, as with relay exploits. The null sender <> is never barred;
// whether bounces are accepted is the senders filter's null_sender.
package barring

import (
	"context"
	"fmt"

	"mailgate/pipeline"
)

// Config holds the two lists, entries in order.
type Config struct {
	Senders, Recipients []string
}

// Filter refuses barred senders at MAIL and barred recipients at RCPT.
type Filter struct {
	senders, recipients List
}

// New compiles the lists.
func New(c Config) (*Filter, error) {
	s, err := CompileList(c.Senders)
	if err != nil {
		return nil, fmt.Errorf("barring senders: %w", err)
	}
	r, err := CompileList(c.Recipients)
	if err != nil {
		return nil, fmt.Errorf("barring recipients: %w", err)
	}
	return &Filter{senders: s, recipients: r}, nil
}

func (*Filter) Name() string        { return "barring" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// The replies never echo the address: it is the client's own text.
var (
	senderBarred = pipeline.Refuse(550, [3]int{5, 7, 1}, "Sender address rejected: barred", "")
	rcptBarred   = pipeline.Refuse(550, [3]int{5, 7, 1}, "Recipient address rejected: barred", "")
)

// Mail refuses a barred sender.
func (f *Filter) Mail(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction) pipeline.Verdict {
	if t.From.Null {
		return pipeline.Pass()
	}
	return check(f.senders, t.From, "sender", senderBarred)
}

// Rcpt refuses a barred recipient.
func (f *Filter) Rcpt(_ context.Context, _ *pipeline.Session, _ *pipeline.Transaction, rcpt pipeline.Address) pipeline.Verdict {
	return check(f.recipients, rcpt, "recipient", rcptBarred)
}

func check(l List, a pipeline.Address, role string, refusal pipeline.Verdict) pipeline.Verdict {
	barred, entry := l.Barred(a.String())
	switch {
	case barred:
		refusal.Reason = fmt.Sprintf("%s <%s> barred by entry %q", role, a, entry)
		return refusal
	case entry != "":
		return pipeline.PassBecause(fmt.Sprintf("%s <%s> not barred: excluded by entry %q", role, a, entry))
	}
	return pipeline.Pass()
}
