package main

import (
	"mailgate/config"
	"mailgate/filters/dmarc"
)

// wireDMARC builds the DMARC check from filters.dmarc.
func wireDMARC(c *config.Config, d deps) (wired, error) {
	m := c.Filters.DMARC
	if m == nil {
		return wired{}, nil
	}
	cfg := dmarc.Config{Quarantine: m.Quarantine, TagScore: m.TagScore, TempError: m.TempError, Resolver: d.resolver}
	cfg.RejectPolicy = m.RejectPolicy == nil || *m.RejectPolicy
	f, err := dmarc.New(cfg)
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: m.Mode}, nil
}
