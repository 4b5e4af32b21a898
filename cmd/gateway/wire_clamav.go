package main

import (
	"mailgate/config"
	"mailgate/filters/clamav"
)

// wireClamAV builds the virus scan from filters.clamav.
func wireClamAV(c *config.Config, d deps) (wired, error) {
	a := c.Filters.ClamAV
	if a == nil {
		return wired{}, nil
	}
	f, err := clamav.New(clamav.Config{
		Address:     a.Address,
		OnError:     a.OnError,
		MaxSize:     int64(a.MaxSize),
		Timeout:     a.Timeout.D(),
		Connections: a.Connections,
		Log:         d.log,
	})
	if err != nil {
		return wired{}, err
	}
	return wired{Filter: f, Mode: a.Mode}, nil
}
