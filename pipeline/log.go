package pipeline

import (
	"context"
	"log/slog"
	"time"

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
	if h.s.AuthUser != "" {
		attrs = append(attrs, "auth_user", smtpd.Sanitize(h.s.AuthUser, 64))
	}
	if len(h.s.Decisions) > 0 {
		attrs = append(attrs, "decisions", decisionsAttr(h.s.Decisions, nil))
	}
	h.g.Log.Info("session", attrs...)
}

// decisionsAttr lists the decisions that said something.
func decisionsAttr(lists ...[]Decision) []map[string]any {
	var out []map[string]any
	for _, l := range lists {
		for _, d := range l {
			if d.Verdict.Action == Continue && d.Verdict.Reason == "" {
				continue
			}
			m := map[string]any{
				"filter":  d.Filter,
				"stage":   d.Stage.String(),
				"verdict": d.Verdict.Action.String(),
				"us":      d.Duration.Microseconds(),
			}
			if d.Verdict.Reason != "" {
				m["reason"] = d.Verdict.Reason
			}
			if d.Rcpt != "" {
				m["rcpt"] = d.Rcpt
			}
			if d.Shadow {
				m["shadow"] = true
			}
			if d.Skipped {
				m["skipped"] = true
			}
			out = append(out, m)
		}
	}
	return out
}
