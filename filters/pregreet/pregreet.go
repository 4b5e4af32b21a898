// Package pregreet refuses clients that talk before the banner
// (postscreen's PREGREET test). A real MTA waits for the 220 greeting
// before it says EHLO; spam bots often blast their commands at once. The
// gateway holds the banner back for a moment (filters.pregreet.wait) and
// this filter judges a client that sent anything meanwhile:
//
//	filters:
//	  pregreet: {wait: 1s, action: reject}   # reject | tempfail | score
//
// Allow-listed clients and relay networks are not kept waiting.
package pregreet

import (
	"context"
	"fmt"

	"mailgate/pipeline"
)

// Config is the pregreet policy.
type Config struct {
	Action string  // "reject" (default) | "tempfail" | "score"
	Score  float64 // points for action score
}

// Filter judges clients that talked first.
type Filter struct{ c Config }

// New returns the filter.
func New(c Config) (*Filter, error) {
	switch c.Action {
	case "":
		c.Action = "reject"
	case "reject", "tempfail", "score":
	default:
		return nil, fmt.Errorf("pregreet: unknown action %q", c.Action)
	}
	return &Filter{c: c}, nil
}

func (*Filter) Name() string        { return "pregreet" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Antispam }

const reason = "client sent data before the greeting"

// Pregreet applies the action to a client that talked before the banner.
func (f *Filter) Pregreet(_ context.Context, _ *pipeline.Session) pipeline.Verdict {
	switch f.c.Action {
	case "score":
		return pipeline.Points(f.c.Score, "pregreet", reason)
	case "tempfail":
		return pipeline.Defer(421, [3]int{4, 7, 0}, "Protocol error: talked before the greeting, try again later", reason)
	}
	return pipeline.Refuse(554, [3]int{5, 5, 1}, "Protocol error: talked before the greeting", reason)
}
