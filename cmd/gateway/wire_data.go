package main

import (
	"mailgate/config"
	"mailgate/pipeline"
)

// wired is one filter built from its config block; a nil Filter means the
// block is absent (filter off).
type wired struct {
	Filter pipeline.Filter
	Mode   config.FilterMode
}

// contentFilters are the data-stage filters in the order they run: the
// MIME parse first (the others read it), then the cheap local rules, the
// virus scan, sender authentication (DKIM, DMARC, then the
// Authentication-Results header that reports them), URL lists and the
// spam engine last, as the most expensive. Outbound DKIM signing is not
// here: it runs after scoring, on the final message (wireDKIMSign).
// Each wireX lives in wire_x.go.
func contentFilters(c *config.Config, d deps) ([]wired, error) {
	var out []wired
	for _, build := range []func(*config.Config, deps) (wired, error){
		wireMIME, wireContent, wireAttachments, wireClamAV,
		wireDKIMVerify, wireDMARC, wireAuthResults, wireSURBL, wireSpamd,
	} {
		w, err := build(c, d)
		if err != nil {
			return nil, err
		}
		if w.Filter != nil {
			out = append(out, w)
		}
	}
	return out, nil
}
