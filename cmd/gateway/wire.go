package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"

	"mailgate/config"
	"mailgate/filters/authlimit"
	"mailgate/filters/limits"
	"mailgate/filters/loop"
	"mailgate/filters/relay"
	"mailgate/filters/relayexploit"
	"mailgate/filters/size"
	"mailgate/pipeline"
	"mailgate/smtpd"
	"mailgate/upstream"
)

// buildPipeline turns the config into the ordered filter list. Cheap,
// decisive checks come first.
func buildPipeline(c *config.Config) *pipeline.Pipeline {
	nets := make([]netip.Prefix, len(c.Relay.Networks))
	for i, p := range c.Relay.Networks {
		nets[i] = p.Prefix
	}
	return pipeline.New(
		pipeline.Entry{Filter: limits.New(limits.Config{
			MaxRecipients:         c.Limits.MaxRecipients,
			MaxMessagesPerSession: c.Limits.MaxMessagesPerSession,
		}), Mode: pipeline.Enforce},
		pipeline.Entry{Filter: size.New(int64(c.Limits.MaxMessageSize)), Mode: pipeline.Enforce},
		pipeline.Entry{Filter: relayexploit.New(), Mode: pipeline.Enforce},
		pipeline.Entry{Filter: relay.New(relay.Config{
			Domains:       c.Domains,
			Networks:      nets,
			Authenticated: c.Relay.Authenticated == nil || *c.Relay.Authenticated,
		}), Mode: pipeline.Enforce},
		pipeline.Entry{Filter: loop.New(c.Limits.MaxReceivedHeaders), Mode: pipeline.Enforce},
		pipeline.Entry{Filter: authlimit.New(authlimit.Config{
			MaxFailures: c.Auth.MaxFailuresPerIP,
			Window:      c.Auth.FailureWindow.D(),
		}), Mode: pipeline.Enforce},
	)
}

// gateway is everything `run` starts.
type gateway struct {
	servers   []*smtpd.Server
	addresses []string
	relay     *upstream.Relay
}

// build wires a gateway from a validated config.
func build(c *config.Config, log *slog.Logger) (*gateway, error) {
	relayClient, err := upstream.New(c.Upstream, c.Hostname, log)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	gw := &pipeline.Gateway{
		Hostname:              c.Hostname,
		Pipeline:              buildPipeline(c),
		Upstream:              relayClient,
		Log:                   log,
		RejectBareLineEndings: c.Limits.BareLineEndings == "reject",
	}

	var tlsConfig *tls.Config
	if c.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: c.TLS.MinVersionValue()}
	}
	var auth smtpd.Authenticator
	if c.Auth.Users != nil { // loaded and checked by validation
		auth = c.Auth.Users
	}

	g := &gateway{relay: relayClient}
	for _, l := range c.Listeners {
		sc := smtpd.Config{
			Name:            l.Name,
			Hostname:        c.Hostname,
			TLSMode:         tlsMode(l.TLS),
			TLSConfig:       tlsConfig,
			AuthMode:        authMode(l.Auth),
			AuthMechanisms:  c.Auth.Mechanisms,
			Authenticator:   auth,
			MaxAuthFailures: c.Auth.MaxFailures,
			MaxLineLength:   c.Limits.MaxLineLength,
			MaxCommands:     c.Limits.MaxCommands,
			MaxErrors:       c.Limits.MaxErrors,
			MaxMessageSize:  int64(c.Limits.MaxMessageSize),
			SpoolThreshold:  int64(c.Limits.SpoolThreshold),
			GreetingTimeout: c.Limits.Timeouts.Greeting.D(),
			CommandTimeout:  c.Limits.Timeouts.Command.D(),
			DataTimeout:     c.Limits.Timeouts.Data.D(),
		}
		g.servers = append(g.servers, smtpd.NewServer(sc, gw.NewHandler, log))
		g.addresses = append(g.addresses, l.Address)
	}
	return g, nil
}

func tlsMode(m config.TLSMode) smtpd.TLSMode {
	switch m {
	case config.TLSStartTLS:
		return smtpd.TLSStartTLS
	case config.TLSImplicit:
		return smtpd.TLSImplicit
	}
	return smtpd.TLSNone
}

func authMode(m config.AuthMode) smtpd.AuthMode {
	switch m {
	case config.AuthOptional:
		return smtpd.AuthOptional
	case config.AuthRequired:
		return smtpd.AuthRequired
	}
	return smtpd.AuthOff
}
