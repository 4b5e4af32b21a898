package upstream

import (
	"errors"
	"strings"

	"github.com/emersion/go-smtp"
)

// UnavailableText is the reply text for every failure that is not an
// upstream's own refusal. It names nothing internal.
const UnavailableText = "Upstream temporarily unavailable, try again later"

// ReplyFor is the reply the gateway gives its client for an upstream error:
//
//   - an upstream refusal (*smtp.SMTPError, 4xx or 5xx) verbatim: code,
//     enhanced code (X.0.0 when missing or of the wrong class) and text;
//   - anything else — network errors, timeouts, ErrUnavailable, replies out
//     of step, and 421 (the upstream closing its session, which is not the
//     gateway closing the client's) — 451 4.4.1 UnavailableText.
//
// Upstream error strings and host names never appear in the generic reply.
// Verbatim texts are the upstream's own words; control characters in them
// are replaced.
func ReplyFor(err error) (code int, enhanced [3]int, text string) {
	if se, ok := upstreamReply(err); ok && se.Code != 421 {
		class := se.Code / 100
		enhanced = [3]int(se.EnhancedCode)
		if enhanced[0] != class || enhanced[1] < 0 || enhanced[2] < 0 {
			enhanced = [3]int{class, 0, 0}
		}
		text = sanitize(se.Message)
		if text == "" {
			text = "Refused by the upstream server"
		}
		return se.Code, enhanced, text
	}
	return 451, [3]int{4, 4, 1}, UnavailableText
}

// Temporary reports whether err is worth retrying later: true for upstream
// 4xx replies and for every failure that is not an upstream reply; false for
// 5xx refusals and nil.
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	if se, ok := upstreamReply(err); ok {
		return se.Code/100 != 5
	}
	return true
}

// upstreamReply finds an upstream's 4xx/5xx reply in err, unless err is an
// Open failure (whose attempts are never replies to relay).
func upstreamReply(err error) (*smtp.SMTPError, bool) {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return nil, false
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code < 400 || se.Code > 599 {
		return nil, false
	}
	return se, true
}

// sanitize keeps line breaks ("\n" between reply lines) and printable
// characters; anything else becomes "?".
func sanitize(s string) string {
	s = strings.TrimSpace(s)
	return strings.Map(func(r rune) rune {
		if r == '\n' || (r >= 0x20 && r != 0x7f) {
			return r
		}
		return '?'
	}, s)
}
