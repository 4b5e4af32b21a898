package config

import "time"

// Secure defaults, applied to every key left out of the file (or written
// as null). For numbers, sizes and durations 0 also means "use the
// default": a limit can be changed but never switched off, and negative
// values are rejected by validation.
const (
	// DefaultTLSMode for listeners and upstream servers: STARTTLS is
	// offered (listeners) or required (upstream).
	DefaultTLSMode = TLSStartTLS
	// DefaultAuthMode for listeners: no AUTH. Submission listeners must
	// ask for it explicitly, and it is only ever offered over TLS.
	DefaultAuthMode = AuthOff
	// DefaultMinTLSVersion: TLS 1.0 and 1.1 are not supported.
	DefaultMinTLSVersion = "1.2"

	// DefaultMaxFailures: failed AUTH attempts per session before 421.
	DefaultMaxFailures = 3
	// DefaultMaxFailuresPerIP failed AUTH attempts from one address
	// within DefaultFailureWindow shut AUTH for it.
	DefaultMaxFailuresPerIP = 10
	DefaultFailureWindow    = Duration(15 * time.Minute)

	DefaultUpstreamConnectTimeout = Duration(10 * time.Second) // upstream TCP+TLS connect
	DefaultUpstreamCommandTimeout = Duration(5 * time.Minute)  // upstream reply to a command (RFC 5321 §4.5.3.2)
	DefaultUpstreamRetryAfter     = Duration(30 * time.Second) // a failed upstream is skipped this long
	DefaultUpstreamIdleSessions   = 32                         // idle upstream sessions kept for reuse
	DefaultUpstreamIdleTimeout    = Duration(30 * time.Second) // below Postfix's 300 s and Exchange's 600 s idle timeouts

	DefaultMaxMessageSize        = 25 * MB // advertised with SIZE
	DefaultMaxRecipients         = 100     // RFC 5321 §4.5.3.1.8 minimum
	DefaultMaxReceivedHeaders    = 30      // loop protection (RFC 5321 §6.3)
	DefaultMaxLineLength         = 512     // RFC 5321 §4.5.3.1.4 command line, incl. CRLF
	DefaultMaxCommands           = 200     // per session
	DefaultMaxErrors             = 10      // protocol errors per session
	DefaultMaxMessagesPerSession = 100
	DefaultSpoolThreshold        = 1 * MB // larger messages are spooled to disk

	DefaultGreetingTimeout = Duration(5 * time.Minute)  // RFC 5321 §4.5.3.2.1
	DefaultCommandTimeout  = Duration(5 * time.Minute)  // client command timeout
	DefaultDataTimeout     = Duration(10 * time.Minute) // whole DATA transfer

	// DefaultBareLineEndings: bare CR/LF in DATA become CRLF; end-of-data
	// look-alikes are always rejected (SMTP smuggling).
	DefaultBareLineEndings = "normalize"

	DefaultLogFormat = "json"
	DefaultLogLevel  = "info"
)

// defaultMechanisms are the SASL mechanisms offered (over TLS only).
var defaultMechanisms = []string{"PLAIN", "LOGIN"}

// ApplyDefaults fills every unset (zero) value with its secure default:
//
//   - relay.authenticated: true (authenticated users may relay)
//   - relay.networks: none (nobody relays without AUTH)
//   - listeners[].tls: starttls; listeners[].auth: off
//   - tls.min_version: "1.2"
//   - auth.mechanisms: [PLAIN, LOGIN]; auth.max_failures: 3;
//     auth.max_failures_per_ip: 10 within auth.failure_window: 15m
//   - upstream.connect_timeout 10s, command_timeout 5m, retry_after 30s,
//     idle_sessions 32, idle_timeout 30s;
//     upstream.servers[].tls: starttls
//   - limits: max_message_size 25MB, max_recipients 100,
//     max_received_headers 30, max_line_length 512, max_commands 200,
//     max_errors 10, max_messages_per_session 100, spool_threshold 1MB,
//     bare_line_endings normalize; timeouts greeting 5m, command 5m,
//     data 10m
//   - log: format json, level info
//
// Load and Parse call it; call it yourself for a Config built in code,
// before Validate.
func (c *Config) ApplyDefaults() {
	if c.Relay.Authenticated == nil {
		t := true
		c.Relay.Authenticated = &t
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.TLS == "" {
			l.TLS = DefaultTLSMode
		}
		if l.Auth == "" {
			l.Auth = DefaultAuthMode
		}
	}
	if c.TLS.MinVersion == "" {
		c.TLS.MinVersion = DefaultMinTLSVersion
	}
	if len(c.Auth.Mechanisms) == 0 {
		c.Auth.Mechanisms = append([]string(nil), defaultMechanisms...)
	}
	setInt(&c.Auth.MaxFailures, DefaultMaxFailures)
	setInt(&c.Auth.MaxFailuresPerIP, DefaultMaxFailuresPerIP)
	setDur(&c.Auth.FailureWindow, DefaultFailureWindow)

	u := &c.Upstream
	for i := range u.Servers {
		if u.Servers[i].TLS == "" {
			u.Servers[i].TLS = DefaultTLSMode
		}
	}
	setDur(&u.ConnectTimeout, DefaultUpstreamConnectTimeout)
	setDur(&u.CommandTimeout, DefaultUpstreamCommandTimeout)
	setDur(&u.RetryAfter, DefaultUpstreamRetryAfter)
	setInt(&u.IdleSessions, DefaultUpstreamIdleSessions)
	setDur(&u.IdleTimeout, DefaultUpstreamIdleTimeout)

	l := &c.Limits
	if l.MaxMessageSize == 0 {
		l.MaxMessageSize = DefaultMaxMessageSize
	}
	if l.SpoolThreshold == 0 {
		l.SpoolThreshold = DefaultSpoolThreshold
	}
	setInt(&l.MaxRecipients, DefaultMaxRecipients)
	setInt(&l.MaxReceivedHeaders, DefaultMaxReceivedHeaders)
	setInt(&l.MaxLineLength, DefaultMaxLineLength)
	setInt(&l.MaxCommands, DefaultMaxCommands)
	setInt(&l.MaxErrors, DefaultMaxErrors)
	setInt(&l.MaxMessagesPerSession, DefaultMaxMessagesPerSession)
	setDur(&l.Timeouts.Greeting, DefaultGreetingTimeout)
	setDur(&l.Timeouts.Command, DefaultCommandTimeout)
	setDur(&l.Timeouts.Data, DefaultDataTimeout)
	if l.BareLineEndings == "" {
		l.BareLineEndings = DefaultBareLineEndings
	}

	c.applyFilterDefaults()

	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
}

func setInt(p *int, def int) {
	if *p == 0 {
		*p = def
	}
}

func setDur(p *Duration, def Duration) {
	if *p == 0 {
		*p = def
	}
}
