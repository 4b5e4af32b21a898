package config

import (
	_ "embed"
	"fmt"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded demo configuration (a copy): the file a
// newcomer runs first, listening on 127.0.0.1:2525 and relaying to an SMTP
// server on 127.0.0.1:2526, without TLS.
func DefaultYAML() []byte {
	return append([]byte(nil), defaultYAML...)
}

// Default returns the embedded demo configuration, parsed and validated.
// Its warnings (plain-text upstream) are expected and not returned.
func Default() (*Config, error) {
	c, _, err := Parse(defaultYAML, "default.yaml")
	if err != nil {
		return nil, fmt.Errorf("embedded default configuration: %w", err)
	}
	return c, nil
}
