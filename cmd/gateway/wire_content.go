package main

import (
	"mailgate/config"
	"mailgate/filters/content"
)

// wireContent builds the header and body rules from filters.content.
func wireContent(c *config.Config, d deps) (wired, error) {
	ct := c.Filters.Content
	if ct == nil {
		return wired{}, nil
	}
	f, err := content.New(content.Config{DenyHeaders: ct.DenyHeaders, DenyBody: ct.DenyBody})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: ct.Mode}, nil
}
