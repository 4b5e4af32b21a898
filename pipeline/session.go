package pipeline

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"mailgate/smtpd"
	"mailgate/upstream"
)

// Gateway is what every session shares: the filters, the upstream and
// how to log.
type Gateway struct {
	Hostname string
	Pipeline *Pipeline
	Upstream *upstream.Relay
	Log      *slog.Logger
	// PregreetWait holds the banner back this long to catch clients that
	// talk first (filters.pregreet.wait); 0: no wait.
	PregreetWait time.Duration
	// RejectBareLineEndings refuses messages with a bare CR or LF instead
	// of normalising them (limits.bare_line_endings: reject).
	RejectBareLineEndings bool
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// OnMessage, if set, is told how each transaction ended (metrics):
	// the outcome as the message log line names it ("delivered",
	// "rejected at mail", ...) and the size of the message received in
	// DATA (0 if the transaction ended before DATA).
	OnMessage func(outcome string, size int64)
}

// NewHandler returns the smtpd.Handler for one connection.
func (g *Gateway) NewHandler(info smtpd.ConnInfo) smtpd.Handler {
	return &handler{g: g, s: &Session{
		ID:       info.ID,
		Listener: info.Listener,
		Client:   info.Remote,
		Local:    info.Local,
		Proxy:    info.Proxy,
	}, start: g.now()}
}

func (g *Gateway) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// handler glues the protocol engine to the pipeline and the upstream.
type handler struct {
	g     *Gateway
	s     *Session
	start time.Time

	t        *Transaction
	txnStart time.Time
	txnCount int
	// up is the upstream session, opened lazily at the first recipient
	// that passes our filters and kept across the client's messages.
	up *upstream.Conn
	// upMail: MAIL was mirrored upstream for the current transaction.
	upMail bool
	// upMailRefusal is the upstream's refusal of MAIL, repeated to every
	// recipient of this transaction.
	upMailRefusal *smtpd.Reply
	rejectedRcpts []string
	// dataSize is the size of the message of this transaction (OnMessage).
	dataSize int64
}

func refusal(v Verdict) *smtpd.Reply {
	r := v.Reply
	return &r
}

func (h *handler) Connect(ctx context.Context) *smtpd.Reply {
	if v := h.g.Pipeline.Connect(ctx, h.s); v.Action == Reject || v.Action == Tempfail {
		return greetingRefusal(v)
	}
	return nil
}

// greetingRefusal is a refusal in place of the banner: RFC 5321 §3.1
// allows only 554 (go away) and 421 (try later) there, so a filter's 550
// or 450 keeps its enhanced code and text under the greeting's code.
func greetingRefusal(v Verdict) *smtpd.Reply {
	r := v.Reply
	if v.Action == Tempfail {
		r.Code = 421
	} else {
		r.Code = 554
	}
	return &r
}

// PregreetWait is how long the banner is held back to catch clients that
// talk first; allow-listed clients are not kept waiting.
func (h *handler) PregreetWait() time.Duration {
	if h.s.Whitelisted {
		return 0
	}
	return h.g.PregreetWait
}

func (h *handler) Pregreet(ctx context.Context) *smtpd.Reply {
	if v := h.g.Pipeline.Pregreet(ctx, h.s); v.Action == Reject || v.Action == Tempfail {
		return greetingRefusal(v)
	}
	return nil
}

func (h *handler) Helo(ctx context.Context, name string, extended bool) *smtpd.Reply {
	h.s.Helo, h.s.Extended = name, extended
	if v := h.g.Pipeline.Helo(ctx, h.s); v.Action == Reject || v.Action == Tempfail {
		return refusal(v)
	}
	return nil
}

func (h *handler) TLSStarted(state tls.ConnectionState) {
	h.s.TLS = &state
	h.s.Helo = ""
}

func (h *handler) AuthStart(ctx context.Context) *smtpd.Reply {
	if v := h.g.Pipeline.Auth(ctx, h.s); v.Action == Reject || v.Action == Tempfail {
		h.g.Log.Info("authentication refused", "session", h.s.ID, "client", h.s.ClientIP().String(), "reason", v.Reason)
		return refusal(v)
	}
	return nil
}

func (h *handler) Authenticated(user string) {
	h.s.AuthUser = user
	// Authenticated users are not spam sources to be judged by their
	// address: antispam filters (greylisting, DNSBL at RCPT, SPF) are
	// skipped; relay control and the other policy filters still apply.
	h.s.Whitelisted = true
	h.s.Decisions = append(h.s.Decisions, Decision{Filter: "auth", Stage: StageAuth,
		Verdict: Whitelist("authenticated user")})
	h.g.Pipeline.AuthResult(h.s, user, true)
}

func (h *handler) AuthFailed(user string) {
	h.g.Pipeline.AuthResult(h.s, user, false)
	h.g.Log.Info("authentication failed", "session", h.s.ID, "client", h.s.ClientIP().String(),
		"user", smtpd.Sanitize(user, 64))
}

func (h *handler) Mail(ctx context.Context, from smtpd.Path, params smtpd.MailParams) *smtpd.Reply {
	h.t = &Transaction{From: from, Size: params.Size, Body: params.Body}
	h.txnStart = h.g.now()
	h.txnCount++
	if v := h.g.Pipeline.Mail(ctx, h.s, h.t); v.Action == Reject || v.Action == Tempfail {
		h.endTxn("rejected at mail", &v.Reply, "")
		return refusal(v)
	}
	return nil
}

var replyUpstreamDown = smtpd.Reply{Code: 451, Enhanced: [3]int{4, 4, 1}, Text: upstream.UnavailableText}

// upstreamReply is the client's reply for an upstream error: the
// upstream's refusal verbatim, anything else 451 4.4.1.
func upstreamReply(err error) *smtpd.Reply {
	code, enhanced, text := upstream.ReplyFor(err)
	return &smtpd.Reply{Code: code, Enhanced: enhanced, Text: text}
}

// ensureUpstream opens the upstream session if needed and mirrors MAIL.
func (h *handler) ensureUpstream(ctx context.Context) *smtpd.Reply {
	if h.upMailRefusal != nil {
		return h.upMailRefusal
	}
	if h.up != nil && h.up.Broken() {
		_ = h.up.Close()
		h.up = nil
		h.upMail = false
	}
	if h.up == nil {
		up, err := h.g.Upstream.Get(ctx)
		if err != nil {
			h.g.Log.Warn("upstream unavailable", "session", h.s.ID, "err", err)
			return upstreamReply(err)
		}
		h.up = up
	}
	if !h.upMail {
		// SIZE is passed on so the upstream may refuse a size early;
		// go-smtp's client declares BODY=8BITMIME itself whenever the
		// upstream offers it.
		opts := &smtp.MailOptions{Size: h.t.Size}
		err := h.up.Mail(ctx, h.t.From.String(), opts)
		if err != nil && h.up.Broken() && h.up.Reused() {
			// The idle session had been closed by the upstream: that is
			// no failure, open a fresh one.
			_ = h.up.Close()
			if h.up, err = h.g.Upstream.Open(ctx); err != nil {
				h.g.Log.Warn("upstream unavailable", "session", h.s.ID, "err", err)
				return upstreamReply(err)
			}
			err = h.up.Mail(ctx, h.t.From.String(), opts)
		}
		if err != nil {
			h.g.Log.Info("upstream refused sender", "session", h.s.ID, "err", err)
			r := upstreamReply(err)
			if !h.up.Broken() {
				h.upMailRefusal = r
			}
			return r
		}
		h.upMail = true
	}
	return nil
}

func (h *handler) Rcpt(ctx context.Context, to smtpd.Path) *smtpd.Reply {
	if v := h.g.Pipeline.Rcpt(ctx, h.s, h.t, to); v.Action == Reject || v.Action == Tempfail {
		h.rejectedRcpts = append(h.rejectedRcpts, to.String())
		return refusal(v)
	}
	if r := h.ensureUpstream(ctx); r != nil {
		h.rejectedRcpts = append(h.rejectedRcpts, to.String())
		return r
	}
	if err := h.up.Rcpt(ctx, to.String(), nil); err != nil {
		h.rejectedRcpts = append(h.rejectedRcpts, to.String())
		return upstreamReply(err)
	}
	h.t.Rcpts = append(h.t.Rcpts, to)
	return nil
}

func (h *handler) DataStart(ctx context.Context) *smtpd.Reply { return nil }

var (
	replySmuggling = smtpd.Reply{Code: 550, Enhanced: [3]int{5, 6, 0},
		Text: "Message refused: end-of-data look-alike with bare CR or LF (SMTP smuggling)"}
	replyBareEOL = smtpd.Reply{Code: 550, Enhanced: [3]int{5, 6, 0},
		Text: "Message refused: bare CR or LF line endings are not allowed"}
)

func (h *handler) Data(ctx context.Context, msg *smtpd.Message, res smtpd.DataResult) smtpd.Reply {
	t := h.t
	h.dataSize = msg.Size()
	if res.Smuggling || res.Bare() && h.g.RejectBareLineEndings {
		r := replySmuggling
		reason := "end-of-data look-alike in DATA"
		if !res.Smuggling {
			r, reason = replyBareEOL, "bare line endings"
		}
		t.Decisions = append(t.Decisions, Decision{Filter: "smtp-smuggling", Stage: StageData,
			Verdict: Verdict{Action: Reject, Reply: r, Reason: fmt.Sprintf("%s (bare LF %d, bare CR %d)", reason, res.BareLF, res.BareCR)}})
		h.endTxn("rejected at data", &r, "")
		return r
	}
	t.Received = h.receivedHeader()
	if v := h.g.Pipeline.Data(ctx, h.s, t, msg); v.Action == Reject || v.Action == Tempfail {
		h.endTxn("rejected at data", &v.Reply, "")
		return v.Reply
	}

	// Filters' trace fields (Received-SPF) go above our Received, as RFC
	// 7208 §9.1 asks.
	header := strings.Join(t.AddHeaders, "") + t.Received
	if r := h.ensureUpstreamForData(ctx); r != nil {
		h.endTxn("tempfailed", r, "")
		return *r
	}
	body := t.MessageReader(msg)
	err := h.up.Data(ctx, io.MultiReader(strings.NewReader(header), body))
	_ = body.Close()
	if err != nil {
		r := upstreamReply(err)
		h.g.Log.Warn("upstream did not take the message", "session", h.s.ID, "err", err)
		h.upMail = false
		h.endTxn("upstream refused", r, err.Error())
		return *r
	}
	h.upMail = false
	h.s.Messages++
	r := smtpd.Reply{Code: 250, Enhanced: [3]int{2, 0, 0}, Text: "Ok: queued as " + h.messageID()}
	h.endTxn("delivered", &r, "")
	return r
}

// ensureUpstreamForData makes sure the upstream session is still there
// after the (possibly long) DATA transfer; if it was lost, it is reopened
// and MAIL and every recipient replayed, so no message fails for an idle
// upstream timeout.
func (h *handler) ensureUpstreamForData(ctx context.Context) *smtpd.Reply {
	if h.up != nil && !h.up.Broken() && h.upMail {
		return nil
	}
	h.upMail = false
	if r := h.ensureUpstream(ctx); r != nil {
		return r
	}
	for _, rc := range h.t.Rcpts {
		if err := h.up.Rcpt(ctx, rc.String(), nil); err != nil {
			// The recipients were accepted once; a refusal now is not
			// the client's fault: let it retry the whole message.
			r := replyUpstreamDown
			return &r
		}
	}
	return nil
}

func (h *handler) messageID() string { return fmt.Sprintf("%s.%d", h.s.ID, h.txnCount) }

func (h *handler) Reset() {
	if h.t != nil {
		h.endTxn(h.unfinishedOutcome(), nil, "")
	}
	if h.up != nil && h.upMail && !h.up.Broken() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := h.up.Reset(ctx); err != nil {
			h.g.Log.Debug("upstream RSET failed", "session", h.s.ID, "err", err)
			_ = h.up.Close()
			h.up = nil
		}
		cancel()
	}
	h.upMail = false
	h.upMailRefusal = nil
}

func (h *handler) Close(stats smtpd.Stats) {
	if h.t != nil {
		h.endTxn(h.unfinishedOutcome(), nil, "")
	}
	if h.up != nil {
		if h.upMail {
			_ = h.up.Close()
		} else {
			h.g.Upstream.Release(h.up)
		}
		h.up = nil
	}
	h.g.Pipeline.Disconnect(h.s)
	h.logSession(stats)
}

// unfinishedOutcome names a transaction that ended without DATA.
func (h *handler) unfinishedOutcome() string {
	if len(h.t.Rcpts) == 0 && len(h.rejectedRcpts) > 0 {
		return "rejected at rcpt"
	}
	return "aborted"
}

// endTxn logs the transaction and forgets it.
func (h *handler) endTxn(outcome string, r *smtpd.Reply, upstreamErr string) {
	if h.t == nil {
		return
	}
	h.logMessage(outcome, r, upstreamErr)
	if h.g.OnMessage != nil {
		h.g.OnMessage(outcome, h.dataSize)
	}
	h.t = nil
	h.rejectedRcpts = nil
	h.dataSize = 0
}
