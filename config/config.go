// Package config holds the gateway's configuration schema (SPEC §3), its
// secure defaults, strict loading and validation.
//
// Key names are the product contract: they match SPEC §3 exactly.
package config

import (
	"time"

	"mailgate/internal/users"
)

// Config is the whole configuration file.
type Config struct {
	// Hostname is used in the banner, our Received header and the HELO we
	// send upstream.
	Hostname string `yaml:"hostname"`
	// Domains are the local domains: mail for them is inbound and accepted
	// from anyone (subject to the filters).
	Domains []string `yaml:"domains"`
	// StrictPermissions refuses to start when the config file is readable
	// by group or others (it may hold secrets); otherwise that only warns.
	StrictPermissions bool `yaml:"strict_permissions"`

	Relay     Relay      `yaml:"relay"`
	Listeners []Listener `yaml:"listeners"`
	TLS       TLS        `yaml:"tls"`
	Auth      Auth       `yaml:"auth"`
	Upstream  Upstream   `yaml:"upstream"`
	Limits    Limits     `yaml:"limits"`
	DNS       DNS        `yaml:"dns"`
	Filters   Filters    `yaml:"filters"`
	State     State      `yaml:"state"`
	Metrics   Metrics    `yaml:"metrics"`
	Log       Log        `yaml:"log"`
	// User to run as after the listeners are bound (when started as
	// root); empty: keep the starting user.
	User string `yaml:"user"`

	// Path is the file the config was loaded from (not a YAML key).
	Path string `yaml:"-"`

	meta *meta // lines of keys, for messages
}

// Relay says who may send mail to non-local domains.
type Relay struct {
	// Networks may relay without authentication. Default: none.
	Networks []Prefix `yaml:"networks"`
	// Authenticated users may relay anywhere. Default: true.
	Authenticated *bool `yaml:"authenticated"`
}

// TLSMode is how a listener or upstream uses TLS.
type TLSMode string

const (
	TLSNone     TLSMode = "none"
	TLSStartTLS TLSMode = "starttls"
	TLSImplicit TLSMode = "implicit"
)

// AuthMode is whether a listener offers, or demands, SMTP AUTH.
type AuthMode string

const (
	AuthOff      AuthMode = "off"
	AuthOptional AuthMode = "optional"
	AuthRequired AuthMode = "required"
)

// Listener is one address the gateway accepts SMTP on.
type Listener struct {
	Name    string   `yaml:"name"`
	Address string   `yaml:"address"`
	TLS     TLSMode  `yaml:"tls"`
	Auth    AuthMode `yaml:"auth"`
	// Access are this listener's client allow/deny networks, on top of
	// filters.access.
	Access AccessRules `yaml:"access"`
	// ProxyProtocol accepts a HAProxy PROXY v1/v2 header before SMTP,
	// only from TrustedProxies (others are refused); the client address
	// it carries is the one every filter sees.
	ProxyProtocol  bool     `yaml:"proxy_protocol"`
	TrustedProxies []Prefix `yaml:"trusted_proxies"`
}

// TLS is the server certificate used by every TLS listener.
type TLS struct {
	Cert       string `yaml:"cert"`
	Key        string `yaml:"key"`
	MinVersion string `yaml:"min_version"` // "1.2" or "1.3"
}

// Auth configures SMTP AUTH (only ever offered over TLS).
type Auth struct {
	// UsersFile holds "user:<bcrypt or argon2id hash>" lines.
	UsersFile  string   `yaml:"users_file"`
	Mechanisms []string `yaml:"mechanisms"` // PLAIN, LOGIN
	// MaxFailures per session, then 421 and disconnect.
	MaxFailures int `yaml:"max_failures"`
	// MaxFailuresPerIP failed attempts from one address (IPv6: one /64)
	// within FailureWindow refuse AUTH from it (421) until the window has
	// passed.
	MaxFailuresPerIP int      `yaml:"max_failures_per_ip"`
	FailureWindow    Duration `yaml:"failure_window"`

	// Users is the loaded UsersFile (set by validation; not a YAML key).
	Users *users.DB `yaml:"-"`
}

// Upstream is the internal server(s) the gateway relays accepted mail to.
type Upstream struct {
	Servers        []UpstreamServer `yaml:"servers"`
	ConnectTimeout Duration         `yaml:"connect_timeout"`
	CommandTimeout Duration         `yaml:"command_timeout"`
	// RetryAfter is how long a failed server is skipped before it is tried
	// again (unless every server has failed).
	RetryAfter Duration `yaml:"retry_after"`
	// IdleSessions is how many upstream sessions are kept open between
	// client sessions for reuse; IdleTimeout is how long one is kept.
	IdleSessions int      `yaml:"idle_sessions"`
	IdleTimeout  Duration `yaml:"idle_timeout"`
}

// UpstreamServer is one internal server, tried in the order listed.
type UpstreamServer struct {
	Address string  `yaml:"address"` // host:port
	TLS     TLSMode `yaml:"tls"`
	// CA is a PEM bundle to verify the server with; empty: system roots.
	CA string `yaml:"ca"`
	// ServerName to verify in the certificate; empty: the address's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate verification; check warns.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Limits are the protocol and resource limits of SPEC §4.
type Limits struct {
	// MaxConnections for the whole gateway, MaxConnectionsPerIP
	// concurrent per client address (IPv6: per /64), and
	// ConnectionRatePerIP new connections per client; over any: 421
	// 4.7.0. Allow-listed clients and relay networks are exempt from the
	// per-address limits.
	MaxConnections        int      `yaml:"max_connections"`
	MaxConnectionsPerIP   int      `yaml:"max_connections_per_ip"`
	ConnectionRatePerIP   Rate     `yaml:"connection_rate_per_ip"`
	MaxMessageSize        Size     `yaml:"max_message_size"`
	MaxRecipients         int      `yaml:"max_recipients"`
	MaxReceivedHeaders    int      `yaml:"max_received_headers"`
	MaxLineLength         int      `yaml:"max_line_length"`
	MaxCommands           int      `yaml:"max_commands"`
	MaxErrors             int      `yaml:"max_errors"`
	MaxMessagesPerSession int      `yaml:"max_messages_per_session"`
	Timeouts              Timeouts `yaml:"timeouts"`
	// SpoolThreshold: messages larger than this are spooled to a temp file
	// instead of memory.
	SpoolThreshold Size `yaml:"spool_threshold"`
	// BareLineEndings is what happens to a bare CR or LF inside DATA:
	// normalize (to CRLF) or reject (550 5.6.0). End-of-data look-alikes
	// are always rejected.
	BareLineEndings string `yaml:"bare_line_endings"`
}

// Timeouts bound how long the gateway waits on a client.
type Timeouts struct {
	Greeting Duration `yaml:"greeting"` // from connect to the first command
	Command  Duration `yaml:"command"`  // between commands
	Data     Duration `yaml:"data"`     // for the whole DATA transfer
}

// Log configures the structured logs.
type Log struct {
	Format string `yaml:"format"` // json | text
	Level  string `yaml:"level"`  // debug | info | warn | error
}

// Duration is a time.Duration written like "5m" or "10s" in YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
