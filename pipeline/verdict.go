// Package pipeline is the stage/verdict model of SPEC §2: filters look at a
// session at each SMTP stage and return a verdict; the pipeline applies the
// verdicts in order and records every decision for logs, metrics and
// `explain`.
package pipeline

import (
	"fmt"
	"time"

	"mailgate/smtpd"
)

// Stage is a point of the SMTP dialogue where filters run.
type Stage int

const (
	StageConnect Stage = iota
	StageHelo
	StageAuth
	StageMail
	StageRcpt
	StageData
)

var stageNames = [...]string{"connect", "helo", "auth", "mail", "rcpt", "data"}

func (s Stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return fmt.Sprintf("stage(%d)", int(s))
}

// Action is what a filter wants done.
type Action int

const (
	// Continue: no opinion, next filter.
	Continue Action = iota
	// Accept: whitelisted; the remaining antispam filters of this and later
	// stages are skipped (never policy filters such as relay control).
	Accept
	// Reject: permanent refusal (5xx).
	Reject
	// Tempfail: temporary refusal (4xx); the client retries later.
	Tempfail
	// Score adds to the session score.
	Score
)

var actionNames = [...]string{"continue", "accept", "reject", "tempfail", "score"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Reply is an SMTP reply: code, enhanced status code and text.
type Reply = smtpd.Reply

// Verdict is a filter's decision at one stage.
type Verdict struct {
	Action Action
	// Reply is sent to the client for Reject and Tempfail.
	Reply Reply
	// Score and Tag are used with the Score action.
	Score float64
	Tag   string
	// Reason explains the decision for logs and explain; it is never sent
	// to the client.
	Reason string
}

// Pass is the "no opinion" verdict.
func Pass() Verdict { return Verdict{Action: Continue} }

// PassBecause is "no opinion" with a reason worth logging.
func PassBecause(reason string) Verdict { return Verdict{Action: Continue, Reason: reason} }

// Whitelist returns an Accept verdict.
func Whitelist(reason string) Verdict { return Verdict{Action: Accept, Reason: reason} }

// Refuse returns a Reject verdict with the given reply.
func Refuse(code int, enhanced [3]int, text, reason string) Verdict {
	return Verdict{Action: Reject, Reply: smtpd.Reply{Code: code, Enhanced: enhanced, Text: text}, Reason: reason}
}

// Defer returns a Tempfail verdict with the given reply.
func Defer(code int, enhanced [3]int, text, reason string) Verdict {
	return Verdict{Action: Tempfail, Reply: smtpd.Reply{Code: code, Enhanced: enhanced, Text: text}, Reason: reason}
}

// WithReason returns v with the reason set (verdict values with a fixed
// reply, refined per call).
func (v Verdict) WithReason(reason string) Verdict {
	v.Reason = reason
	return v
}

// Points returns a Score verdict: score added to the session (or
// transaction) score, tag noted for the headers.
func Points(score float64, tag, reason string) Verdict {
	return Verdict{Action: Score, Score: score, Tag: tag, Reason: reason}
}

// Decision is one filter's recorded verdict.
type Decision struct {
	Filter   string
	Stage    Stage
	Verdict  Verdict
	Shadow   bool // recorded but not applied (mode: shadow)
	Skipped  bool // not run: the session was whitelisted
	Duration time.Duration
	Rcpt     string // the recipient, for rcpt-stage decisions
}
