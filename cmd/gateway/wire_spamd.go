package main

import (
	"mailgate/config"
	"mailgate/filters/spamd"
)

// wireSpamd builds the SpamAssassin filter from filters.spamd.
func wireSpamd(c *config.Config, d deps) (wired, error) {
	s := c.Filters.Spamd
	if s == nil {
		return wired{}, nil
	}
	f, err := spamd.New(spamd.Config{
		Address:     s.Address,
		RejectScore: s.RejectScore,
		TagScore:    s.TagScore,
		MaxSize:     int64(s.MaxSize),
		Timeout:     s.Timeout.D(),
		OnError:     s.OnError,
		Log:         d.log,
	})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: s.Mode}, nil
}
