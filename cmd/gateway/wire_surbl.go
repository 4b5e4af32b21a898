package main

import (
	"mailgate/config"
	"mailgate/filters/surbl"
)

// wireSURBL builds the URL list filter from filters.surbl; it asks the
// gateway's shared resolver.
func wireSURBL(c *config.Config, d deps) (wired, error) {
	s := c.Filters.SURBL
	if s == nil {
		return wired{}, nil
	}
	zones := make([]surbl.Zone, len(s.Zones))
	for i, z := range s.Zones {
		zones[i] = surbl.Zone{Zone: z.Zone, Codes: z.Codes, Mask: uint32(z.Mask)}
	}
	f, err := surbl.New(surbl.Config{
		Zones:      zones,
		MaxDomains: s.MaxDomains,
		Action:     s.Action,
		Score:      s.Score,
		Timeout:    s.Timeout.D(),
		OnDNSError: s.OnDNSError,
		Resolver:   d.resolver,
	})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: s.Mode}, nil
}
