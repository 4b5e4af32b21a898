package pipeline

import (
	"context"
	"fmt"
	"time"
)

// Entry is a filter with its mode.
type Entry struct {
	Filter Filter
	Mode   Mode
}

// Pipeline runs filters in order at each stage.
type Pipeline struct {
	entries []Entry
	// Observe, if set, is called for every decision (metrics).
	Observe func(Decision)
}

// New returns a pipeline of the given filters, run in this order.
func New(entries ...Entry) *Pipeline {
	return &Pipeline{entries: entries}
}

// Filters returns the pipeline's entries in order.
func (p *Pipeline) Filters() []Entry { return p.entries }

// Connect runs the connect stage.
func (p *Pipeline) Connect(ctx context.Context, s *Session) Verdict {
	return p.run(ctx, s, StageConnect, &s.Decisions, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(ConnectFilter); ok {
			return c.Connect(ctx, s), true
		}
		return Verdict{}, false
	})
}

// Helo runs the HELO/EHLO stage.
func (p *Pipeline) Helo(ctx context.Context, s *Session) Verdict {
	return p.run(ctx, s, StageHelo, &s.Decisions, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(HeloFilter); ok {
			return c.Helo(ctx, s), true
		}
		return Verdict{}, false
	})
}

// Auth runs the AUTH stage.
func (p *Pipeline) Auth(ctx context.Context, s *Session) Verdict {
	return p.run(ctx, s, StageAuth, &s.Decisions, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(AuthFilter); ok {
			return c.Auth(ctx, s), true
		}
		return Verdict{}, false
	})
}

// AuthResult tells every AuthObserver how an AUTH attempt ended.
func (p *Pipeline) AuthResult(s *Session, user string, ok bool) {
	for _, e := range p.entries {
		if o, is := e.Filter.(AuthObserver); is {
			o.AuthResult(s, user, ok)
		}
	}
}

// Mail runs the MAIL FROM stage.
func (p *Pipeline) Mail(ctx context.Context, s *Session, t *Transaction) Verdict {
	return p.run(ctx, s, StageMail, &t.Decisions, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(MailFilter); ok {
			return c.Mail(ctx, s, t), true
		}
		return Verdict{}, false
	})
}

// Rcpt runs the RCPT TO stage for one recipient.
func (p *Pipeline) Rcpt(ctx context.Context, s *Session, t *Transaction, rcpt Address) Verdict {
	return p.run(ctx, s, StageRcpt, &t.Decisions, rcpt.String(), func(f Filter) (Verdict, bool) {
		if c, ok := f.(RcptFilter); ok {
			return c.Rcpt(ctx, s, t, rcpt), true
		}
		return Verdict{}, false
	})
}

// Data runs the data stage on a received message.
func (p *Pipeline) Data(ctx context.Context, s *Session, t *Transaction, m *Message) Verdict {
	return p.run(ctx, s, StageData, &t.Decisions, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(DataFilter); ok {
			return c.Data(ctx, s, t, m), true
		}
		return Verdict{}, false
	})
}

// run calls each filter implementing the stage (call reports whether it
// does), records the decisions and returns the first refusal that is
// applied, or Continue.
func (p *Pipeline) run(ctx context.Context, s *Session, stage Stage, log *[]Decision, rcpt string, call func(Filter) (Verdict, bool)) Verdict {
	for _, e := range p.entries {
		if s.Whitelisted && e.Filter.Kind() == Antispam {
			if implements(e.Filter, stage) {
				p.record(log, Decision{Filter: e.Filter.Name(), Stage: stage, Skipped: true, Rcpt: rcpt,
					Verdict: PassBecause("skipped: whitelisted")})
			}
			continue
		}
		if ctx.Err() != nil {
			return Defer(451, [3]int{4, 4, 7}, "Timeout while checking, try again later", "stage deadline exceeded: "+ctx.Err().Error())
		}
		start := time.Now()
		v, ran := safeCall(e.Filter, call)
		if !ran {
			continue
		}
		d := Decision{Filter: e.Filter.Name(), Stage: stage, Verdict: v, Shadow: e.Mode == Shadow,
			Duration: time.Since(start), Rcpt: rcpt}
		p.record(log, d)
		if d.Shadow {
			continue
		}
		switch v.Action {
		case Accept:
			s.Whitelisted = true
		case Score:
			s.Score += v.Score
			if v.Tag != "" {
				s.Tags = append(s.Tags, v.Tag)
			}
		case Reject, Tempfail:
			return v
		}
	}
	return Pass()
}

func (p *Pipeline) record(log *[]Decision, d Decision) {
	*log = append(*log, d)
	if p.Observe != nil {
		p.Observe(d)
	}
}

// safeCall turns a panicking filter into a temporary failure of this
// message only.
func safeCall(f Filter, call func(Filter) (Verdict, bool)) (v Verdict, ran bool) {
	defer func() {
		if r := recover(); r != nil {
			v = Defer(451, [3]int{4, 3, 0}, "Temporary local problem, try again later",
				fmt.Sprintf("filter %s panicked: %v", f.Name(), r))
			ran = true
		}
	}()
	return call(f)
}

// implements reports whether f has a method for the stage.
func implements(f Filter, stage Stage) bool {
	var ok bool
	switch stage {
	case StageConnect:
		_, ok = f.(ConnectFilter)
	case StageHelo:
		_, ok = f.(HeloFilter)
	case StageAuth:
		_, ok = f.(AuthFilter)
	case StageMail:
		_, ok = f.(MailFilter)
	case StageRcpt:
		_, ok = f.(RcptFilter)
	case StageData:
		_, ok = f.(DataFilter)
	}
	return ok
}
