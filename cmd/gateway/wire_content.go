package main

import "mailgate/config"

// wireContent builds the filter from its config block (not built yet).
func wireContent(c *config.Config, d deps) (wired, error) { return wired{}, nil }
