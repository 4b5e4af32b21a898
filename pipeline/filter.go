package pipeline

import (
	"context"
	"crypto/tls"
	"net/netip"

	"mailgate/internal/mailaddr"
	"mailgate/internal/spool"
)

// Kind says which verdicts can skip a filter.
type Kind int

const (
	// Policy filters (relay control, size, loop, antivirus) always run,
	// even for whitelisted sessions.
	Policy Kind = iota
	// Antispam filters are skipped once a filter has said Accept.
	Antispam
)

// Mode is SPEC §2's `mode: enforce | shadow`.
type Mode string

const (
	Enforce Mode = "enforce"
	Shadow  Mode = "shadow"
)

// Filter is one check. It implements any of the stage interfaces below.
type Filter interface {
	Name() string
	Kind() Kind
}

// ConnectFilter runs when a client connects, before the banner.
type ConnectFilter interface {
	Connect(ctx context.Context, s *Session) Verdict
}

// HeloFilter runs at HELO/EHLO.
type HeloFilter interface {
	Helo(ctx context.Context, s *Session) Verdict
}

// AuthFilter runs when a client starts AUTH, before its credentials are
// read or checked (so a refusal also spares the password hashing).
type AuthFilter interface {
	Auth(ctx context.Context, s *Session) Verdict
}

// AuthObserver is told the outcome of every AUTH attempt.
type AuthObserver interface {
	AuthResult(s *Session, user string, ok bool)
}

// MailFilter runs at MAIL FROM.
type MailFilter interface {
	Mail(ctx context.Context, s *Session, t *Transaction) Verdict
}

// RcptFilter runs at each RCPT TO, before the recipient is mirrored
// upstream.
type RcptFilter interface {
	Rcpt(ctx context.Context, s *Session, t *Transaction, rcpt Address) Verdict
}

// DataFilter runs once the whole message has been received, before it is
// sent upstream.
type DataFilter interface {
	Data(ctx context.Context, s *Session, t *Transaction, m *Message) Verdict
}

// Session is what filters know about the client connection.
type Session struct {
	ID       string
	Listener string
	Client   netip.AddrPort
	Local    netip.AddrPort
	Helo     string
	Extended bool // EHLO rather than HELO
	TLS      *tls.ConnectionState
	// AuthUser is the authenticated user name, "" if none.
	AuthUser string
	// Whitelisted is set once an Accept verdict was applied.
	Whitelisted bool
	// Score is the sum of applied Score verdicts.
	Score float64
	Tags  []string
	// Messages counts the messages accepted so far in this session.
	Messages int
	// Decisions of the connection and HELO stages (message stages are in
	// the Transaction).
	Decisions []Decision
}

// ClientIP returns the client's address, unmapped from IPv4-in-IPv6.
func (s *Session) ClientIP() netip.Addr { return s.Client.Addr().Unmap() }

// Transaction is one MAIL FROM ... DATA message.
type Transaction struct {
	From Address
	// Size is the SIZE= the client declared at MAIL, 0 if none.
	Size int64
	// Body is the BODY= the client declared: "7BIT", "8BITMIME" or "".
	Body string
	// Rcpts are the recipients accepted so far (by us and the upstream).
	Rcpts []Address
	// Decisions taken during this transaction.
	Decisions []Decision
	// Headers to prepend to the message for the upstream, in order
	// (each a complete "Name: value\r\n" field).
	AddHeaders []string
}

// Address is a parsed envelope path.
type Address = mailaddr.Address

// Message is a received message held while it is filtered.
type Message = spool.Message
