package main

import (
	"mailgate/config"
	"mailgate/filters/attachments"
)

// wireAttachments builds the attachment policy from filters.attachments.
func wireAttachments(c *config.Config, d deps) (wired, error) {
	a := c.Filters.Attachments
	if a == nil {
		return wired{}, nil
	}
	f, err := attachments.New(attachments.Config{
		DenyExtensions: a.DenyExtensions,
		DenyTypes:      a.DenyTypes,
		ScanArchives:   a.ScanArchives == nil || *a.ScanArchives,
		Action:         a.Action,
	})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: a.Mode}, nil
}
