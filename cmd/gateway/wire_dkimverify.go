package main

import (
	"mailgate/config"
	"mailgate/filters/dkim"
)

// wireDKIMVerify builds the DKIM verifier from filters.dkim (verify: true).
func wireDKIMVerify(c *config.Config, d deps) (wired, error) {
	k := c.Filters.DKIM
	if k == nil || k.Verify == nil || !*k.Verify {
		return wired{}, nil
	}
	f, err := dkim.New(dkim.Config{MaxSignatures: k.MaxSignatures, Timeout: k.Timeout.D(), Resolver: d.resolver})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: k.Mode}, nil
}
