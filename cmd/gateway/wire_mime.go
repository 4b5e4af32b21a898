package main

import (
	"mailgate/config"
	mimefilter "mailgate/filters/mime"
	"mailgate/internal/mimeparse"
)

// wireMIME builds the MIME parse from filters.mime, which the config
// defaults turn on whenever a content filter is. It has no mode: it only
// refuses anything under malformed: reject.
func wireMIME(c *config.Config, d deps) (wired, error) {
	m := c.Filters.MIME
	if m == nil {
		return wired{}, nil
	}
	f, err := mimefilter.New(mimefilter.Config{
		Limits: mimeparse.Limits{
			MaxDepth:      m.MaxDepth,
			MaxParts:      m.MaxParts,
			MaxHeaderSize: int64(m.MaxHeaderSize),
			MaxParseSize:  int64(m.MaxParseSize),
			// Only the attachments filter reads attachments' bytes (their
			// detected type, the zip archives it looks into): clamd and
			// spamd read the raw message, SURBL and body rules the text
			// parts.
			Attachments: attachmentContent(c.Filters.Attachments),
		},
		Malformed: m.Malformed,
	})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: config.ModeEnforce}, nil
}

// attachmentContent is how much of attachments the MIME parse decodes:
// the attachments filter needs their detected type (deny_types, and
// scan_archives to find the zip archives, which are decoded whole), not
// for file names alone.
func attachmentContent(a *config.Attachments) mimeparse.AttachmentContent {
	if a != nil && (len(a.DenyTypes) > 0 || a.ScanArchives == nil || *a.ScanArchives) {
		return mimeparse.SniffAttachments
	}
	return mimeparse.SkipAttachments
}
