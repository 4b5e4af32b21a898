package main

import "mailgate/config"

// wireSURBL builds the filter from its config block (not built yet).
func wireSURBL(c *config.Config, d deps) (wired, error) { return wired{}, nil }
