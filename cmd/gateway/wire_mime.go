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
			// detected type, the archives inside): clamd and spamd read
			// the raw message, SURBL and body rules the text parts.
			SkipAttachmentContent: !readsAttachments(c.Filters.Attachments),
		},
		Malformed: m.Malformed,
	})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: config.ModeEnforce}, nil
}

// readsAttachments says whether the attachments filter needs the bytes of
// attachments: for detected types and archives, not for file names.
func readsAttachments(a *config.Attachments) bool {
	return a != nil && (len(a.DenyTypes) > 0 || a.ScanArchives == nil || *a.ScanArchives)
}
