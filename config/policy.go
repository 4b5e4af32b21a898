package config

import (
	"fmt"
	"net"
	"strings"
	"text/tabwriter"
)

// Policy returns the effective policy in plain text for an administrator,
// as printed by `mailgate check`: listeners, local domains, who may relay,
// upstream servers in failover order, limits and logging. The ordering is
// stable (the order of the file; limits in a fixed order). Call it on a
// validated configuration.
func (c *Config) Policy() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	section := func(title string) {
		tw.Flush()
		b.WriteString("\n" + title + "\n")
	}

	src := c.Path
	if src == "" {
		src = "(not from a file)"
	}
	b.WriteString("Effective policy of " + src + "\n\n")
	p("hostname\t%s\t(banner \"220 %s ESMTP\", no software name or version)", c.Hostname, c.Hostname)

	section("Listeners")
	for _, l := range c.Listeners {
		auth := "AUTH " + string(l.Auth)
		switch {
		case l.Auth == AuthOff:
		case l.TLS == TLSStartTLS:
			auth += " (offered only after STARTTLS)"
		case l.TLS == TLSImplicit:
			auth += " (offered only over TLS)"
		}
		p("  %s\t%s\tTLS %s\t%s", l.Name, l.Address, l.TLS, auth)
	}
	tw.Flush()
	if len(c.usesTLS()) > 0 {
		p("  certificate\t%s", c.TLS.Cert)
		p("  private key\t%s", c.TLS.Key)
		p("  minimum TLS\t%s", c.TLS.MinVersion)
	}
	p("  AUTH is never offered before TLS.")

	section("Local domains (inbound: accepted from anyone, subject to the filters)")
	if len(c.Domains) == 0 {
		p("  none: nothing is accepted inbound")
	}
	for _, d := range c.Domains {
		p("  %s", d)
	}

	section("Relay (mail to any other domain)")
	if len(c.Relay.Networks) == 0 {
		p("  networks (no AUTH needed)\tnone")
	}
	for i, n := range c.Relay.Networks {
		if i == 0 {
			p("  networks (no AUTH needed)\t%s", n)
		} else {
			p("  \t%s", n)
		}
	}
	if c.Relay.Authenticated == nil || *c.Relay.Authenticated {
		p("  authenticated users\tyes (may relay anywhere)")
	} else {
		p("  authenticated users\tno (local domains only)")
	}
	p("  everyone else\t554 5.7.1 Relay access denied")
	var authOn []string
	for _, l := range c.Listeners {
		if l.Auth != AuthOff {
			authOn = append(authOn, l.Name)
		}
	}
	if len(authOn) > 0 {
		users := "not loaded"
		if n := c.Auth.Users.Len(); c.Auth.Users != nil && n == 1 {
			users = "1 user"
		} else if c.Auth.Users != nil {
			users = fmt.Sprintf("%d users", n)
		}
		p("  AUTH\t%s on %s", strings.Join(c.Auth.Mechanisms, ", "), strings.Join(authOn, ", "))
		p("  users file\t%s (%s)", c.Auth.UsersFile, users)
		p("  AUTH failures\t%d per session, then 421 and disconnect", c.Auth.MaxFailures)
		p("  AUTH failures per address\t%d within %s, then AUTH refused (421) for the rest of the window", c.Auth.MaxFailuresPerIP, c.Auth.FailureWindow)
	} else {
		p("  AUTH\toffered on no listener")
	}

	section("Upstream servers (tried in this order)")
	for i, s := range c.Upstream.Servers {
		p("  %d. %s\tTLS %s\t%s", i+1, s.Address, s.TLS, verification(s))
	}
	tw.Flush()
	p("  connect timeout\t%s", c.Upstream.ConnectTimeout)
	p("  command timeout\t%s", c.Upstream.CommandTimeout)
	p("  failed server retried after\t%s", c.Upstream.RetryAfter)
	p("  idle sessions kept for reuse\t%d, for %s", c.Upstream.IdleSessions, c.Upstream.IdleTimeout)

	l := c.Limits
	section("Limits")
	p("  max_message_size\t%s\t(advertised with SIZE; larger: 552 5.3.4)", l.MaxMessageSize)
	p("  max_recipients\t%d\tper message", l.MaxRecipients)
	p("  max_received_headers\t%d\t(mail loop protection; more: 554 5.4.6)", l.MaxReceivedHeaders)
	p("  max_line_length\t%d\tbytes per command line, CRLF included (longer: 500 5.5.2)", l.MaxLineLength)
	p("  max_commands\t%d\tper session", l.MaxCommands)
	p("  max_errors\t%d\tprotocol errors per session, then 421", l.MaxErrors)
	p("  max_messages_per_session\t%d\tper session", l.MaxMessagesPerSession)
	p("  timeouts.greeting\t%s\tuntil the first command", l.Timeouts.Greeting)
	p("  timeouts.command\t%s\tbetween commands", l.Timeouts.Command)
	p("  timeouts.data\t%s\tfor the whole DATA transfer", l.Timeouts.Data)
	p("  spool_threshold\t%s\t(larger messages are spooled to a temporary file)", l.SpoolThreshold)
	bare := "normalized to CRLF"
	if l.BareLineEndings == "reject" {
		bare = "rejected (550 5.6.0)"
	}
	p("  bare_line_endings\t%s\tbare CR/LF in DATA %s; end-of-data look-alikes always rejected", l.BareLineEndings, bare)

	p("  max_connections\t%d\twhole gateway (more: 421 4.7.0)", l.MaxConnections)
	p("  max_connections_per_ip\t%d\tconcurrent per client address, IPv6 per /64", l.MaxConnectionsPerIP)
	p("  connection_rate_per_ip\t%s\tnew connections per client address", l.ConnectionRatePerIP)
	p("  (allow-listed clients and relay networks are exempt from the per-address limits)")

	c.filterPolicy(section, p)

	section("Log")
	p("  format\t%s", c.Log.Format)
	p("  level\t%s", c.Log.Level)
	tw.Flush()
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

func verification(s UpstreamServer) string {
	if s.TLS == TLSNone {
		return "clear text, NOT ENCRYPTED"
	}
	if s.InsecureSkipVerify {
		return "certificate NOT VERIFIED"
	}
	name := s.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(s.Address)
	}
	if s.CA != "" {
		return fmt.Sprintf("verified as %s with CA file %s", name, s.CA)
	}
	return fmt.Sprintf("verified as %s with system roots", name)
}
