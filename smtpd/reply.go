package smtpd

import (
	"strconv"
	"strings"
)

// Reply is an SMTP reply: code, enhanced status code and text.
type Reply struct {
	Code     int
	Enhanced [3]int // zero value: no enhanced code
	Text     string
	// Close asks the session to close the connection after this reply.
	Close bool
}

// String renders the reply's first line as it appears on the wire.
func (r Reply) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Code))
	if r.Enhanced != [3]int{} {
		b.WriteByte(' ')
		b.WriteString(enhanced(r.Enhanced))
	}
	if r.Text != "" {
		b.WriteByte(' ')
		b.WriteString(firstLine(r.Text))
	}
	return b.String()
}

// Positive reports whether the reply is a 2xx/3xx success.
func (r Reply) Positive() bool { return r.Code >= 200 && r.Code < 400 }

func enhanced(e [3]int) string {
	return strconv.Itoa(e[0]) + "." + strconv.Itoa(e[1]) + "." + strconv.Itoa(e[2])
}

func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// Sanitize makes text safe to put in a reply: printable ASCII only, at
// most max bytes. Nothing a client sent reaches a reply unescaped.
func Sanitize(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// Replies used by the protocol engine.
var (
	replyOK            = Reply{Code: 250, Enhanced: [3]int{2, 0, 0}, Text: "Ok"}
	replyBye           = Reply{Code: 221, Enhanced: [3]int{2, 0, 0}, Text: "Bye", Close: true}
	replyVrfy          = Reply{Code: 252, Enhanced: [3]int{2, 0, 0}, Text: "Cannot VRFY user; send mail and delivery will be attempted"}
	replyNotImpl       = Reply{Code: 502, Enhanced: [3]int{5, 5, 1}, Text: "Command not implemented"}
	replyUnknown       = Reply{Code: 500, Enhanced: [3]int{5, 5, 2}, Text: "Command not recognized"}
	replyLineTooLong   = Reply{Code: 500, Enhanced: [3]int{5, 5, 2}, Text: "Line too long"}
	replyBadChars      = Reply{Code: 500, Enhanced: [3]int{5, 5, 2}, Text: "Invalid characters in command"}
	replyHeloFirst     = Reply{Code: 503, Enhanced: [3]int{5, 5, 1}, Text: "Send HELO/EHLO first"}
	replyHeloSyntax    = Reply{Code: 501, Enhanced: [3]int{5, 5, 4}, Text: "Syntax: EHLO hostname"}
	replyNested        = Reply{Code: 503, Enhanced: [3]int{5, 5, 1}, Text: "Nested MAIL command"}
	replyMailSyntax    = Reply{Code: 501, Enhanced: [3]int{5, 5, 4}, Text: "Syntax: MAIL FROM:<address>"}
	replyRcptSyntax    = Reply{Code: 501, Enhanced: [3]int{5, 5, 4}, Text: "Syntax: RCPT TO:<address>"}
	replyBadSender     = Reply{Code: 501, Enhanced: [3]int{5, 1, 7}, Text: "Bad sender address syntax"}
	replyBadRcpt       = Reply{Code: 501, Enhanced: [3]int{5, 1, 3}, Text: "Bad recipient address syntax"}
	replyNeedFQDN      = Reply{Code: 553, Enhanced: [3]int{5, 1, 7}, Text: "Sender address must contain a domain"}
	replyNeedMail      = Reply{Code: 503, Enhanced: [3]int{5, 5, 1}, Text: "Need MAIL command"}
	replyNeedRcpt      = Reply{Code: 554, Enhanced: [3]int{5, 5, 1}, Text: "No valid recipients"}
	replyBadParam      = Reply{Code: 555, Enhanced: [3]int{5, 5, 4}, Text: "Unsupported parameter"}
	replyBadSize       = Reply{Code: 501, Enhanced: [3]int{5, 5, 4}, Text: "Bad SIZE parameter"}
	replyNoArgs        = Reply{Code: 501, Enhanced: [3]int{5, 5, 4}, Text: "No arguments allowed"}
	replyStartTLS      = Reply{Code: 220, Enhanced: [3]int{2, 0, 0}, Text: "Ready to start TLS"}
	replyNoTLS         = Reply{Code: 502, Enhanced: [3]int{5, 5, 1}, Text: "STARTTLS not available"}
	replyTLSFirst      = Reply{Code: 530, Enhanced: [3]int{5, 7, 0}, Text: "Must issue a STARTTLS command first"}
	replyAuthRequired  = Reply{Code: 530, Enhanced: [3]int{5, 7, 0}, Text: "Authentication required"}
	replyNoAuth        = Reply{Code: 503, Enhanced: [3]int{5, 5, 1}, Text: "Authentication not enabled"}
	replyAuthDone      = Reply{Code: 503, Enhanced: [3]int{5, 5, 1}, Text: "Already authenticated"}
	replyAuthInTxn     = Reply{Code: 503, Enhanced: [3]int{5, 5, 1}, Text: "AUTH not allowed during a mail transaction"}
	replyAuthMech      = Reply{Code: 504, Enhanced: [3]int{5, 5, 4}, Text: "Unrecognized authentication mechanism"}
	replyAuthCancel    = Reply{Code: 501, Enhanced: [3]int{5, 7, 0}, Text: "Authentication cancelled"}
	replyAuthB64       = Reply{Code: 501, Enhanced: [3]int{5, 5, 2}, Text: "Cannot decode response"}
	replyAuthFailed    = Reply{Code: 535, Enhanced: [3]int{5, 7, 8}, Text: "Authentication credentials invalid"}
	replyAuthOK        = Reply{Code: 235, Enhanced: [3]int{2, 7, 0}, Text: "Authentication successful"}
	replyAuthTooMany   = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Too many authentication failures", Close: true}
	replyTooManyCmds   = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Too many commands, closing connection", Close: true}
	replyTooManyErrors = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Too many errors, closing connection", Close: true}
	replyTimeout       = Reply{Code: 421, Enhanced: [3]int{4, 4, 2}, Text: "Timeout exceeded, closing connection", Close: true}
	replyNotSMTP       = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "This is an SMTP server, closing connection", Close: true}
	replyLocalError    = Reply{Code: 421, Enhanced: [3]int{4, 3, 0}, Text: "Local error, closing connection", Close: true}
	replyData          = Reply{Code: 354, Text: "End data with <CR><LF>.<CR><LF>"}
	replyShutdown      = Reply{Code: 421, Enhanced: [3]int{4, 3, 2}, Text: "Service shutting down, try again later", Close: true}
)
