package main

import "mailgate/config"

// wireDMARC builds the filter from its config block (not built yet).
func wireDMARC(c *config.Config, d deps) (wired, error) { return wired{}, nil }
