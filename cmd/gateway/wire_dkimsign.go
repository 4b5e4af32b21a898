package main

import (
	"mailgate/config"
	"mailgate/filters/dkimsign"
)

// wireDKIMSign builds the signer from filters.dkim.sign.
func wireDKIMSign(c *config.Config, d deps) (wired, error) {
	k := c.Filters.DKIM
	if k == nil || len(k.Sign) == 0 {
		return wired{}, nil
	}
	keys := make([]dkimsign.Key, len(k.Sign))
	for i, s := range k.Sign {
		keys[i] = dkimsign.Key{Domain: s.Domain, Selector: s.Selector, File: s.Key}
	}
	f, err := dkimsign.New(dkimsign.Config{Keys: keys})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: k.Mode}, nil
}
