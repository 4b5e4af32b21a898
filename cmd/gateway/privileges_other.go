//go:build !linux

package main

import "errors"

// setIDs is Linux only: elsewhere setuid(2) may change the calling thread
// alone, and a Go program has many.
func setIDs(ids) error {
	return errors.New(`dropping privileges is supported on Linux only: leave "user" empty and start the gateway as the user`)
}

func writable(string) error { return nil }
