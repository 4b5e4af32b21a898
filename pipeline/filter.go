package pipeline

import (
	"context"
	"crypto/tls"
	"net/netip"

	"mailgate/internal/mailaddr"
	"mailgate/internal/mimeparse"
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

// PregreetFilter judges a client that talked before the banner (see
// smtpd.Config.PregreetWait): bots do, real MTAs wait for the greeting.
type PregreetFilter interface {
	Pregreet(ctx context.Context, s *Session) Verdict
}

// DisconnectObserver is told when a session ends (connection counters).
type DisconnectObserver interface {
	Disconnect(s *Session)
}

// Session is what filters know about the client connection.
type Session struct {
	ID       string
	Listener string
	Client   netip.AddrPort
	Local    netip.AddrPort
	// Proxy is the load balancer that passed Client in a PROXY header;
	// invalid when the client connected directly.
	Proxy    netip.AddrPort
	Helo     string
	Extended bool // EHLO rather than HELO
	// ClientHostname is the client's forward-confirmed reverse DNS name
	// ("" if none or not looked up), set by the rdns filter.
	ClientHostname string
	TLS            *tls.ConnectionState
	// AuthUser is the authenticated user name, "" if none.
	AuthUser string
	// Whitelisted is set once an Accept verdict was applied at the
	// connect, HELO or AUTH stage (an allow-listed client, a relay
	// network, an authenticated user): antispam filters are skipped for
	// the rest of the session.
	Whitelisted bool
	// Score is the sum of applied Score verdicts of the connect, HELO
	// and AUTH stages.
	Score float64
	Tags  []string
	// Messages counts the messages accepted so far in this session.
	Messages int
	// Decisions of the connection and HELO stages (message stages are in
	// the Transaction).
	Decisions []Decision
	// notes hold what filters learn for later stages (a DNSBL result
	// deferred to RCPT, ...), keyed by the filter.
	notes map[any]any
}

// SetNote keeps a value for later stages of the session. Keys are
// unexported types of the filter's package, so filters cannot collide.
func (s *Session) SetNote(key, value any) {
	if s.notes == nil {
		s.notes = map[any]any{}
	}
	s.notes[key] = value
}

// Note returns a value kept with SetNote, or nil.
func (s *Session) Note(key any) any { return s.notes[key] }

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
	// Received is the gateway's own Received field for this message,
	// set before the data stage; it goes upstream below AddHeaders. A
	// filter that hands the message on (spamd) sends it the same way.
	Received string
	// AuthResults are the sender authentication results (SPF now; DKIM
	// and DMARC at DATA) for the Authentication-Results header and for
	// filters keyed on a validated domain.
	AuthResults []AuthResult
	// Whitelisted is set by an Accept verdict of the MAIL, RCPT or DATA
	// stage (an allow-listed sender): antispam filters are skipped for
	// this transaction only.
	Whitelisted bool
	// Score and Tags of this transaction's Score verdicts (the
	// session's are added for thresholds).
	Score float64
	Tags  []string
	// MIME is the message's parsed MIME structure, set at DATA by the
	// mime filter before the content filters run; nil when no content
	// filter needs it.
	MIME *mimeparse.Message
	// DropHeader, if set, is asked about every top-level header field of
	// the received message (name as written, the whole raw field with
	// its folding and CRLF); true removes the field before the message
	// goes upstream (forged Authentication-Results, ...). Use
	// AddDropHeader to add a rule.
	DropHeader func(name string, field []byte) bool
	notes      map[any]any
}

// AddDropHeader adds a rule for header fields to remove before the
// message goes upstream; a field is removed when any rule says so.
func (t *Transaction) AddDropHeader(drop func(name string, field []byte) bool) {
	prev := t.DropHeader
	if prev == nil {
		t.DropHeader = drop
		return
	}
	t.DropHeader = func(name string, field []byte) bool { return prev(name, field) || drop(name, field) }
}

// AuthResult.Result values (RFC 8601 §2.7) that filters produce and read
// across methods; SPF's softfail and neutral are its own.
const (
	ResultPass      = "pass"
	ResultFail      = "fail"
	ResultNone      = "none"
	ResultTempError = "temperror"
	ResultPermError = "permerror"
)

// AuthResult is one method's result (RFC 8601 terms).
type AuthResult struct {
	Method string // "spf", "dkim", "dmarc"
	Result string // "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"
	// Domain is the domain the result is about (SPF: the MAIL FROM
	// domain, or the HELO name for the null sender).
	Domain string
	// Property is the identity checked, e.g. "smtp.mailfrom=example.org".
	Property string
	Reason   string
}

// AuthResult returns the transaction's result for method, if any.
func (t *Transaction) AuthResult(method string) (AuthResult, bool) {
	for _, r := range t.AuthResults {
		if r.Method == method {
			return r, true
		}
	}
	return AuthResult{}, false
}

// SetNote keeps a value for later stages of the transaction (the SPF
// result for the Authentication-Results header, ...).
func (t *Transaction) SetNote(key, value any) {
	if t.notes == nil {
		t.notes = map[any]any{}
	}
	t.notes[key] = value
}

// Note returns a value kept with SetNote, or nil.
func (t *Transaction) Note(key any) any { return t.notes[key] }

// TotalScore is the session's score plus this transaction's.
func (t *Transaction) TotalScore(s *Session) float64 { return s.Score + t.Score }

// Address is a parsed envelope path.
type Address = mailaddr.Address

// Message is a received message held while it is filtered.
type Message = spool.Message
