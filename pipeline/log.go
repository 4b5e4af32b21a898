package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"mailgate/smtpd"
)

// logMessage writes SPEC §7's one line per message.
func (h *handler) logMessage(outcome string, r *smtpd.Reply, upstreamErr string) {
	if !h.g.Log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	t := h.t
	rcpts := make([]string, len(t.Rcpts))
	for i, a := range t.Rcpts {
		rcpts[i] = smtpd.Sanitize(a.String(), 256)
	}
	attrs := []any{
		"session", h.s.ID,
		"id", h.messageID(),
		"client", h.s.ClientIP().String(),
		"helo", smtpd.Sanitize(h.s.Helo, 255),
		"from", smtpd.Sanitize(t.From.String(), 256),
		"rcpts", rcpts,
		"outcome", outcome,
		"duration_ms", time.Since(h.txnStart).Milliseconds(),
		"decisions", decisionsAttr(h.s.Decisions, t.Decisions),
	}
	if len(h.rejectedRcpts) > 0 {
		rej := make([]string, len(h.rejectedRcpts))
		for i, a := range h.rejectedRcpts {
			rej[i] = smtpd.Sanitize(a, 256)
		}
		attrs = append(attrs, "rejected_rcpts", rej)
	}
	if r != nil {
		attrs = append(attrs, "reply", r.String())
	}
	if h.s.AuthUser != "" {
		attrs = append(attrs, "auth_user", smtpd.Sanitize(h.s.AuthUser, 64))
	}
	if h.up != nil {
		attrs = append(attrs, "upstream", h.up.Server())
	}
	if upstreamErr != "" {
		attrs = append(attrs, "upstream_error", upstreamErr)
	}
	h.g.Log.Info("message", attrs...)
}

// logSession writes SPEC §7's one line per session.
func (h *handler) logSession(st smtpd.Stats) {
	if !h.g.Log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	attrs := []any{
		"session", h.s.ID,
		"listener", h.s.Listener,
		"client", h.s.ClientIP().String(),
		"helo", smtpd.Sanitize(h.s.Helo, 255),
		"tls", st.TLS,
		"messages", h.s.Messages,
		"transactions", h.txnCount,
		"commands", st.Commands,
		"errors", st.Errors,
		"end", st.End,
		"duration_ms", st.Duration.Milliseconds(),
	}
	if h.s.TLS != nil {
		attrs = append(attrs, "tls_version", tlsVersion(h.s.TLS.Version))
	}
	if h.s.ClientHostname != "" {
		attrs = append(attrs, "client_hostname", h.s.ClientHostname)
	}
	if h.s.Proxy.IsValid() {
		attrs = append(attrs, "proxy", h.s.Proxy.Addr().Unmap().String())
	}
	if h.s.AuthUser != "" {
		attrs = append(attrs, "auth_user", smtpd.Sanitize(h.s.AuthUser, 64))
	}
	if len(h.s.Decisions) > 0 {
		attrs = append(attrs, "decisions", decisionsAttr(h.s.Decisions, nil))
	}
	h.g.Log.Info("session", attrs...)
}

// decisionsAttr lists the decisions that said something.
func decisionsAttr(session, txn []Decision) decisionLog {
	return decisionLog{session, txn}
}

// decisionLog is the "decisions" attribute of the log lines. It writes
// its own JSON: as maps, encoding/json's reflection and key sorting were
// a visible part of the cost of every message.
type decisionLog [2][]Decision

func (l decisionLog) said(d *Decision) bool {
	return d.Verdict.Action != Continue || d.Verdict.Reason != ""
}

// MarshalJSON writes [{"filter":…,"stage":…,"verdict":…,"us":…,
// "reason":…,"rcpt":…,"shadow":true,"skipped":true}, …] (null if none).
func (l decisionLog) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 256)
	n := 0
	for _, list := range l {
		for i := range list {
			d := &list[i]
			if !l.said(d) {
				continue
			}
			if n == 0 {
				b = append(b, '[')
			} else {
				b = append(b, ',')
			}
			n++
			b = append(b, `{"filter":`...)
			b = appendJSONString(b, d.Filter)
			b = append(b, `,"stage":`...)
			b = appendJSONString(b, d.Stage.String())
			b = append(b, `,"verdict":`...)
			b = appendJSONString(b, d.Verdict.Action.String())
			b = append(b, `,"us":`...)
			b = strconv.AppendInt(b, d.Duration.Microseconds(), 10)
			if d.Verdict.Reason != "" {
				b = append(b, `,"reason":`...)
				b = appendJSONString(b, d.Verdict.Reason)
			}
			if d.Rcpt != "" {
				b = append(b, `,"rcpt":`...)
				b = appendJSONString(b, d.Rcpt)
			}
			if d.Shadow {
				b = append(b, `,"shadow":true`...)
			}
			if d.Skipped {
				b = append(b, `,"skipped":true`...)
			}
			b = append(b, '}')
		}
	}
	if n == 0 {
		return []byte("null"), nil
	}
	return append(b, ']'), nil
}

// String is the text-format rendering: filter/stage=verdict "reason"; …
func (l decisionLog) String() string {
	var b strings.Builder
	for _, list := range l {
		for i := range list {
			d := &list[i]
			if !l.said(d) {
				continue
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%s/%s=%s", d.Filter, d.Stage, d.Verdict.Action)
			if d.Rcpt != "" {
				fmt.Fprintf(&b, " rcpt=%q", d.Rcpt)
			}
			if d.Verdict.Reason != "" {
				fmt.Fprintf(&b, " %q", d.Verdict.Reason)
			}
			if d.Shadow {
				b.WriteString(" [shadow]")
			}
			if d.Skipped {
				b.WriteString(" [skipped]")
			}
		}
	}
	return b.String()
}

// MarshalText makes the text handler use String.
func (l decisionLog) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD, and <, >, & stay as they are (the logs are not HTML).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
