package main

import "mailgate/config"

// wireAttachments builds the filter from its config block (not built yet).
func wireAttachments(c *config.Config, d deps) (wired, error) { return wired{}, nil }
