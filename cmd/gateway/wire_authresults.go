package main

import (
	"mailgate/config"
	"mailgate/filters/authresults"
)

// wireAuthResults adds the Authentication-Results header (and removes
// forged ones) whenever a sender authentication check is configured.
func wireAuthResults(c *config.Config, d deps) (wired, error) {
	fc := &c.Filters
	if fc.SPF == nil && fc.DKIM == nil && fc.DMARC == nil {
		return wired{}, nil
	}
	f, err := authresults.New(authresults.Config{Hostname: c.Hostname})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: config.ModeEnforce}, nil
}
