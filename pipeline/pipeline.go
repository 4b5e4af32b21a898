package pipeline

import (
	"context"
	"fmt"
	"slices"
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
	return p.run(ctx, s, nil, StageConnect, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(ConnectFilter); ok {
			return c.Connect(ctx, s), true
		}
		return Verdict{}, false
	})
}

// Helo runs the HELO/EHLO stage.
func (p *Pipeline) Helo(ctx context.Context, s *Session) Verdict {
	return p.run(ctx, s, nil, StageHelo, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(HeloFilter); ok {
			return c.Helo(ctx, s), true
		}
		return Verdict{}, false
	})
}

// Auth runs the AUTH stage.
func (p *Pipeline) Auth(ctx context.Context, s *Session) Verdict {
	return p.run(ctx, s, nil, StageAuth, "", func(f Filter) (Verdict, bool) {
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
	return p.run(ctx, s, t, StageMail, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(MailFilter); ok {
			return c.Mail(ctx, s, t), true
		}
		return Verdict{}, false
	})
}

// Rcpt runs the RCPT TO stage for one recipient.
func (p *Pipeline) Rcpt(ctx context.Context, s *Session, t *Transaction, rcpt Address) Verdict {
	return p.run(ctx, s, t, StageRcpt, rcpt.String(), func(f Filter) (Verdict, bool) {
		if c, ok := f.(RcptFilter); ok {
			return c.Rcpt(ctx, s, t, rcpt), true
		}
		return Verdict{}, false
	})
}

// Data runs the data stage on a received message.
func (p *Pipeline) Data(ctx context.Context, s *Session, t *Transaction, m *Message) Verdict {
	return p.run(ctx, s, t, StageData, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(DataFilter); ok {
			return c.Data(ctx, s, t, m), true
		}
		return Verdict{}, false
	})
}

// Pregreet runs the pregreet filters for a client that talked before the
// banner. It belongs to the connect stage.
func (p *Pipeline) Pregreet(ctx context.Context, s *Session) Verdict {
	return p.run(ctx, s, nil, StageConnect, "", func(f Filter) (Verdict, bool) {
		if c, ok := f.(PregreetFilter); ok {
			return c.Pregreet(ctx, s), true
		}
		return Verdict{}, false
	})
}

// Disconnect tells every DisconnectObserver that the session ended.
func (p *Pipeline) Disconnect(s *Session) {
	for _, e := range p.entries {
		if o, is := e.Filter.(DisconnectObserver); is {
			o.Disconnect(s)
		}
	}
}

// run calls each filter implementing the stage (call reports whether it
// does), records the decisions and returns the first refusal that is
// applied, or Continue. t is nil for the session stages (connect, HELO,
// AUTH): their decisions, scores and whitelisting belong to the session;
// those of the message stages to the transaction.
func (p *Pipeline) run(ctx context.Context, s *Session, t *Transaction, stage Stage, rcpt string, call func(Filter) (Verdict, bool)) Verdict {
	log := &s.Decisions
	if t != nil {
		log = &t.Decisions
	}
	for _, e := range p.entries {
		if (s.Whitelisted || t != nil && t.Whitelisted) && e.Filter.Kind() == Antispam {
			if implements(e.Filter, stage) {
				p.record(log, Decision{Filter: e.Filter.Name(), Stage: stage, Skipped: true, Rcpt: rcpt,
					Verdict: PassBecause("skipped: whitelisted")})
			}
			continue
		}
		if !implements(e.Filter, stage) {
			// Most filters act at one or two stages: no clock reads or
			// panic guard for the others.
			continue
		}
		if ctx.Err() != nil {
			return Defer(451, [3]int{4, 4, 7}, "Timeout while checking, try again later", "stage deadline exceeded: "+ctx.Err().Error())
		}
		shadow := e.Mode == Shadow && t != nil
		var keepAdd []string
		var keepDrop func(string, []byte) bool
		if shadow {
			// Header fields a shadow filter adds or removes (a spam
			// flag, a verdict) are decisions too: not applied. Clipped,
			// so that an append cannot write into the kept slice.
			keepAdd, keepDrop = slices.Clip(t.AddHeaders), t.DropHeader
			t.AddHeaders = keepAdd
		}
		start := time.Now()
		v, ran := safeCall(e.Filter, call)
		if shadow {
			t.AddHeaders, t.DropHeader = keepAdd, keepDrop
		}
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
			if t != nil {
				t.Whitelisted = true
			} else {
				s.Whitelisted = true
			}
		case Score:
			if t != nil {
				t.Score += v.Score
				if v.Tag != "" {
					t.Tags = append(t.Tags, v.Tag)
				}
			} else {
				s.Score += v.Score
				if v.Tag != "" {
					s.Tags = append(s.Tags, v.Tag)
				}
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
		if !ok {
			_, ok = f.(PregreetFilter) // Pregreet runs as part of the connect stage
		}
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
