package main

import (
	"mailgate/config"
	"mailgate/smtpd"
)

// proxyConfig is listener l's PROXY protocol setting: nil when off. The
// header timeout is smtpd's default (5 s): a load balancer sends the
// header with the connection.
func proxyConfig(l config.Listener) *smtpd.ProxyConfig {
	if !l.ProxyProtocol {
		return nil
	}
	return &smtpd.ProxyConfig{Trusted: prefixes(l.TrustedProxies)}
}
