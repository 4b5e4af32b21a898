package main

import "mailgate/config"

// wireDKIMVerify builds the filter from its config block (not built yet).
func wireDKIMVerify(c *config.Config, d deps) (wired, error) { return wired{}, nil }
