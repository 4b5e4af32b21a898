package main

// `mailgate explain` (SPEC §6): a dry run of the configured pipeline for
// one imagined client and message. It builds the same filters as `run`,
// with the real DNS resolver and the real state store seen through a
// dry-run view (state.DryRun: reads go to the store, writes stay in this
// process), so explaining changes nothing — no greylist triplet recorded,
// no rate counted — and explaining twice gives the same answer twice. The
// upstream is never contacted and nothing is delivered.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"mailgate/config"
	"mailgate/internal/mailaddr"
	"mailgate/internal/resolver"
	"mailgate/internal/spool"
	"mailgate/internal/state"
	"mailgate/pipeline"
	"mailgate/smtpd"
)

const explainUsage = `Usage: mailgate explain --config FILE --ip A --helo H --from F --rcpt R [--rcpt R2 ...]
                        [--message FILE] [--auth-user U] [--tls] [--listener NAME] [--json]

Runs the configured filters for one client and message without delivering
anything and without changing the shared state, and prints each filter's
decision, reason and time per stage, and the reply the client would get.
Exit status: 0 accepted, 1 refused (at any stage, or any recipient),
2 usage or configuration error.

`

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// explainArgs are the command line of explain.
type explainArgs struct {
	config, ip, helo, from, message, authUser, listener string
	rcpts                                               stringList
	tls, json                                           bool
}

func parseExplainArgs(args []string, stderr io.Writer) (*explainArgs, bool) {
	var a explainArgs
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, explainUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&a.config, "config", "", "config file (YAML)")
	fs.StringVar(&a.ip, "ip", "", "the client's IP address")
	fs.StringVar(&a.helo, "helo", "", "the name the client gives in EHLO")
	fs.StringVar(&a.from, "from", "", `the envelope sender (MAIL FROM); "<>" for a bounce`)
	fs.Var(&a.rcpts, "rcpt", "an envelope recipient (RCPT TO); repeat for several")
	fs.StringVar(&a.message, "message", "", "a message file (RFC 5322) to run the data-stage filters on")
	fs.StringVar(&a.authUser, "auth-user", "", "the client authenticated as this user (needs --tls)")
	fs.BoolVar(&a.tls, "tls", false, "the client uses TLS (STARTTLS)")
	fs.StringVar(&a.listener, "listener", "", "the listener the client connects to (default: the first)")
	fs.BoolVar(&a.json, "json", false, "print JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return nil, false
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"--config", a.config}, {"--ip", a.ip}, {"--helo", a.helo}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if !isFlagSet(fs, "from") {
		missing = append(missing, "--from")
	}
	if len(a.rcpts) == 0 {
		missing = append(missing, "--rcpt")
	}
	if len(missing) > 0 || fs.NArg() > 0 {
		if len(missing) > 0 {
			fmt.Fprintf(stderr, "mailgate explain: missing %s\n\n", strings.Join(missing, ", "))
		} else {
			fmt.Fprintf(stderr, "mailgate explain: unexpected argument %q\n\n", fs.Arg(0))
		}
		fs.Usage()
		return nil, false
	}
	return &a, true
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// explainDecision is one filter's decision in the report.
type explainDecision struct {
	Filter     string  `json:"filter"`
	Verdict    string  `json:"verdict"`
	Reply      string  `json:"reply,omitempty"`
	Score      float64 `json:"score,omitempty"`
	Tag        string  `json:"tag,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	Shadow     bool    `json:"shadow,omitempty"`
	Skipped    bool    `json:"skipped,omitempty"`
	DurationUS int64   `json:"duration_us"`
	duration   time.Duration
}

// explainStage is one SMTP stage: its decisions and the reply.
type explainStage struct {
	Stage     string            `json:"stage"`
	Arg       string            `json:"arg,omitempty"` // HELO name, sender, recipient
	Decisions []explainDecision `json:"decisions"`
	Reply     string            `json:"reply"`
	Refused   bool              `json:"refused"`
	By        string            `json:"by,omitempty"` // the filter that refused
	Reason    string            `json:"reason,omitempty"`
	Note      string            `json:"note,omitempty"`
}

// explainReport is what explain prints.
type explainReport struct {
	Config   string `json:"config"`
	Client   string `json:"client"`
	Listener string `json:"listener"`
	Helo     string `json:"helo"`
	TLS      bool   `json:"tls"`
	AuthUser string `json:"auth_user,omitempty"`
	From     string `json:"from"`
	// State is the store, seen read-only; StateWrites the writes a real
	// session would have made, kept out of it.
	State          string         `json:"state"`
	StateWrites    []string       `json:"state_writes_not_applied"`
	Stages         []explainStage `json:"stages"`
	HeadersAdded   []string       `json:"headers_added"`
	HeadersRemoved []string       `json:"headers_removed"`
	Score          float64        `json:"score"`
	Accepted       []string       `json:"accepted_rcpts"`
	Refused        []string       `json:"refused_rcpts"`
	// Reply is the final reply: the first refusal that ends the
	// transaction, or the 250 of DATA.
	Reply    string   `json:"reply"`
	Relayed  bool     `json:"would_be_relayed"`
	Summary  string   `json:"summary"`
	ExitCode int      `json:"exit_code"`
	Notes    []string `json:"notes"`
}

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	a, ok := parseExplainArgs(args, stderr)
	if !ok {
		return 2
	}
	c, warnings, err := config.Load(a.config)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	rep, err := explain(c, a, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "mailgate explain:", err)
		return 2
	}
	if a.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		_ = enc.Encode(rep)
	} else {
		printExplain(stdout, rep)
	}
	return rep.ExitCode
}

// usageError is a problem with the command line, not with the mail.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func explain(c *config.Config, a *explainArgs, stderr io.Writer) (*explainReport, error) {
	ip, err := netip.ParseAddr(a.ip)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--ip %q: not an IP address", a.ip)}
	}
	from, err := parseExplainPath(a.from)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--from %q: %v", a.from, err)}
	}
	if !from.Null && from.Domain == "" {
		return nil, usageError{fmt.Sprintf("--from %q: no domain (the gateway refuses it: 553 5.1.7)", a.from)}
	}
	var rcpts []pipeline.Address
	for _, r := range a.rcpts {
		to, err := parseExplainPath(r)
		if err == nil && to.Null {
			err = errors.New("empty recipient")
		}
		if err != nil {
			return nil, usageError{fmt.Sprintf("--rcpt %q: %v", r, err)}
		}
		rcpts = append(rcpts, to)
	}
	l := c.Listeners[0]
	if a.listener != "" {
		found := false
		for _, x := range c.Listeners {
			if x.Name == a.listener {
				l, found = x, true
			}
		}
		if !found {
			return nil, usageError{fmt.Sprintf("--listener %q: no such listener", a.listener)}
		}
	}
	useTLS := a.tls || l.TLS == config.TLSImplicit
	switch {
	case a.tls && l.TLS == config.TLSNone:
		return nil, usageError{fmt.Sprintf("--tls: listener %s does not offer TLS", l.Name)}
	case a.authUser != "" && l.Auth == config.AuthOff:
		return nil, usageError{fmt.Sprintf("--auth-user: listener %s does not offer AUTH", l.Name)}
	case a.authUser != "" && !useTLS:
		return nil, usageError{"--auth-user needs --tls: AUTH is only offered after TLS"}
	}

	var msg *spool.Message
	if a.message != "" {
		if msg, err = loadMessage(a.message, c); err != nil {
			return nil, err
		}
		defer msg.Close()
	}

	// The filters' own warnings (a store that cannot be read, ...) go to
	// standard error; the report goes to standard output.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := state.OpenDryRun(c.State.Store)
	if err != nil {
		return nil, fmt.Errorf("state.store: %w", err)
	}
	defer store.Close()
	d := deps{store: store, log: log}
	if usesDNS(c) {
		if d.resolver, err = resolver.New(resolver.Config{Servers: c.DNS.Servers, Timeout: c.DNS.Timeout.D(),
			CacheSize: c.DNS.CacheSize}); err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
	}
	p, err := buildPipeline(c, d)
	if err != nil {
		return nil, err
	}

	rep := &explainReport{
		Config: c.Path, Client: ip.String(), Listener: l.Name, Helo: a.helo, TLS: useTLS,
		AuthUser: a.authUser, From: "<" + from.String() + ">", State: c.State.Store,
		StateWrites: []string{}, HeadersAdded: []string{}, HeadersRemoved: []string{},
		Accepted: []string{}, Refused: []string{},
	}
	rep.Notes = append(rep.Notes,
		"state is read, never written: the writes a real session would make are listed, not applied",
		"the upstream is not contacted: its own replies (e.g. 550 5.1.1 for an unknown user) are not part of this result")

	s := &pipeline.Session{ID: "explain", Listener: l.Name, Client: netip.AddrPortFrom(ip, 0), Helo: a.helo, Extended: true}
	if lp, err := netip.ParseAddrPort(l.Address); err == nil {
		s.Local = lp
	}
	if useTLS {
		s.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, HandshakeComplete: true}
	}
	defer p.Disconnect(s)
	timeout := c.Limits.Timeouts.Command.D()
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	stageCtx := func(d time.Duration) (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), d)
	}
	// run runs one stage and records its decisions (those appended to
	// *log by the stage).
	run := func(stage, arg string, log *[]pipeline.Decision, fn func(ctx context.Context) pipeline.Verdict) (explainStage, bool) {
		ctx, cancel := stageCtx(timeout)
		defer cancel()
		n := len(*log)
		v := fn(ctx)
		st := explainStage{Stage: stage, Arg: arg, Decisions: decisionsOf((*log)[n:])}
		if v.Action == pipeline.Reject || v.Action == pipeline.Tempfail {
			st.Refused, st.Reply, st.Reason = true, v.Reply.String(), v.Reason
			st.By = refusedBy((*log)[n:], v)
		}
		return st, !st.Refused
	}
	finish := func() (*explainReport, error) {
		rep.StateWrites = append(rep.StateWrites, store.Writes()...)
		return rep, nil
	}
	refuse := func(st explainStage) (*explainReport, error) {
		rep.Stages = append(rep.Stages, st)
		rep.Reply = st.Reply
		rep.ExitCode = 1
		rep.Summary = refusalSummary(st)
		return finish()
	}

	// connect
	st, ok := run("connect", "", &s.Decisions, func(ctx context.Context) pipeline.Verdict { return p.Connect(ctx, s) })
	if !ok {
		st.Reply = greeting(st.Reply)
		return refuse(st)
	}
	st.Reply = "220 " + c.Hostname + " ESMTP"
	rep.Stages = append(rep.Stages, st)

	// helo
	st, ok = run("helo", a.helo, &s.Decisions, func(ctx context.Context) pipeline.Verdict { return p.Helo(ctx, s) })
	if !ok {
		return refuse(st)
	}
	st.Reply = "250 " + c.Hostname
	rep.Stages = append(rep.Stages, st)

	// auth
	if a.authUser != "" {
		st, ok = run("auth", a.authUser, &s.Decisions, func(ctx context.Context) pipeline.Verdict { return p.Auth(ctx, s) })
		if !ok {
			return refuse(st)
		}
		// As the session does after a successful AUTH: authenticated
		// users skip the antispam filters.
		s.AuthUser, s.Whitelisted = a.authUser, true
		dec := pipeline.Decision{Filter: "auth", Stage: pipeline.StageAuth, Verdict: pipeline.Whitelist("authenticated user")}
		s.Decisions = append(s.Decisions, dec)
		st.Decisions = append(st.Decisions, decisionsOf([]pipeline.Decision{dec})...)
		p.AuthResult(s, a.authUser, true)
		st.Reply = "235 2.7.0 Authentication successful"
		st.Note = "credentials not checked: the client is taken as authenticated"
		rep.Stages = append(rep.Stages, st)
	}

	// mail
	t := &pipeline.Transaction{From: from}
	if msg != nil {
		t.Size = msg.Size() // as a client declares it with SIZE=
	}
	if l.Auth == config.AuthRequired && s.AuthUser == "" {
		r := "530 5.7.0 Authentication required"
		if !useTLS {
			r = "530 5.7.0 Must issue a STARTTLS command first"
		}
		return refuse(explainStage{Stage: "mail", Arg: rep.From, Decisions: []explainDecision{}, Reply: r, Refused: true,
			By: "listener", Reason: "listener " + l.Name + " requires AUTH (auth: required)"})
	}
	st, ok = run("mail", rep.From, &t.Decisions, func(ctx context.Context) pipeline.Verdict { return p.Mail(ctx, s, t) })
	if !ok {
		return refuse(st)
	}
	st.Reply = "250 2.1.0 Sender ok"
	rep.Stages = append(rep.Stages, st)

	// rcpt, each
	var firstRefusal *explainStage
	for _, to := range rcpts {
		st, ok := run("rcpt", "<"+to.String()+">", &t.Decisions, func(ctx context.Context) pipeline.Verdict { return p.Rcpt(ctx, s, t, to) })
		if ok {
			st.Reply = "250 2.1.5 Recipient ok"
			st.Note = "the upstream would be asked next"
			t.Rcpts = append(t.Rcpts, to)
			rep.Accepted = append(rep.Accepted, to.String())
		} else {
			rep.Refused = append(rep.Refused, to.String())
			if firstRefusal == nil {
				firstRefusal = &st
			}
		}
		rep.Stages = append(rep.Stages, st)
	}
	if len(t.Rcpts) == 0 {
		// Every recipient refused: the client cannot send DATA.
		rep.Reply = firstRefusal.Reply
		rep.ExitCode = 1
		rep.Summary = refusalSummary(*firstRefusal)
		return finish()
	}

	// data
	if msg != nil {
		ctx, cancel := stageCtx(c.Limits.Timeouts.Data.D() + timeout)
		n := len(t.Decisions)
		// As a session would: spamd is handed the message with it.
		t.Received = pipeline.ReceivedField(c.Hostname, s, t, "explain", time.Now())
		v := p.Data(ctx, s, t, msg)
		cancel()
		st := explainStage{Stage: "data", Arg: fmt.Sprintf("%d bytes", msg.Size()), Decisions: decisionsOf(t.Decisions[n:])}
		for _, h := range t.AddHeaders {
			rep.HeadersAdded = append(rep.HeadersAdded, strings.TrimRight(h, "\r\n"))
		}
		rep.HeadersRemoved = append(rep.HeadersRemoved, removedHeaders(t, msg)...)
		rep.Score = t.TotalScore(s)
		if v.Action == pipeline.Reject || v.Action == pipeline.Tempfail {
			st.Refused, st.Reply, st.Reason = true, v.Reply.String(), v.Reason
			st.By = refusedBy(t.Decisions[n:], v)
			return refuse(st)
		}
		st.Reply = "250 2.0.0 Ok (would be relayed upstream)"
		rep.Stages = append(rep.Stages, st)
		rep.Reply = st.Reply
	} else {
		rep.Score = t.TotalScore(s)
		rep.Reply = "250 2.1.5 Recipient ok (would be relayed upstream)"
		rep.Notes = append(rep.Notes, "no --message: the data-stage filters did not run")
	}
	rep.Relayed = true
	if len(rep.Refused) > 0 {
		rep.ExitCode = 1
		rep.Summary = fmt.Sprintf("would be relayed to %d of %d recipients; %s",
			len(rep.Accepted), len(rcpts), refusalSummary(*firstRefusal))
	} else {
		rep.Summary = "accepted: would be relayed upstream"
	}
	return finish()
}

// parseExplainPath parses an address given on the command line, with or
// without angle brackets.
func parseExplainPath(s string) (pipeline.Address, error) {
	if !strings.HasPrefix(s, "<") {
		s = "<" + s + ">"
	}
	a, rest, err := mailaddr.ParsePath(s)
	if err == nil && rest != "" {
		err = fmt.Errorf("unexpected %q after the address", rest)
	}
	return a, err
}

// loadMessage reads a message file as the DATA reader would store it:
// every line ending CRLF (files on disk usually end lines with LF), the
// last one too.
func loadMessage(path string, c *config.Config) (*spool.Message, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--message: %v", err)}
	}
	defer f.Close()
	m := spool.New(int64(c.Limits.SpoolThreshold), int64(c.Limits.MaxMessageSize), "")
	if err := copyCRLF(m, f); err != nil {
		m.Close()
		return nil, fmt.Errorf("--message: %w", err)
	}
	return m, nil
}

// copyCRLF copies r to w, turning every LF not preceded by CR into CRLF
// and ending the text with a line break if it has none.
func copyCRLF(w io.Writer, r io.Reader) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	buf := make([]byte, 64<<10)
	var last byte // the last byte written, if wrote
	wrote := false
	for {
		n, err := r.Read(buf)
		chunk := buf[:n]
		for len(chunk) > 0 {
			i := bytes.IndexByte(chunk, '\n')
			wrote = true
			if i < 0 {
				_, _ = bw.Write(chunk)
				last = chunk[len(chunk)-1]
				break
			}
			prev := last
			if i > 0 {
				prev = chunk[i-1]
			}
			_, _ = bw.Write(chunk[:i])
			if prev != '\r' {
				_ = bw.WriteByte('\r')
			}
			_ = bw.WriteByte('\n')
			last, chunk = '\n', chunk[i+1:]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if wrote && last != '\n' {
		_, _ = bw.WriteString("\r\n")
	}
	return bw.Flush()
}

// removedHeaders lists the header fields the filters would remove before
// relaying (forged Authentication-Results, ...).
func removedHeaders(t *pipeline.Transaction, m *spool.Message) []string {
	if t.DropHeader == nil {
		return nil
	}
	var out []string
	r := pipeline.DropHeaderFields(m.Reader(), func(name string, field []byte) bool {
		drop := t.DropHeader(name, field)
		if drop {
			first, _, _ := strings.Cut(string(field), "\r\n")
			out = append(out, smtpd.Sanitize(first, 200))
		}
		return drop
	})
	_, _ = io.Copy(io.Discard, r)
	_ = r.Close()
	return out
}

func decisionsOf(list []pipeline.Decision) []explainDecision {
	out := make([]explainDecision, 0, len(list))
	for _, d := range list {
		v := d.Verdict
		ed := explainDecision{Filter: d.Filter, Verdict: v.Action.String(), Reason: v.Reason, Shadow: d.Shadow,
			Skipped: d.Skipped, DurationUS: d.Duration.Microseconds(), duration: d.Duration}
		switch v.Action {
		case pipeline.Reject, pipeline.Tempfail:
			ed.Reply = v.Reply.String()
		case pipeline.Score:
			ed.Score, ed.Tag = v.Score, v.Tag
		}
		out = append(out, ed)
	}
	return out
}

// refusedBy names the filter whose applied verdict is v.
func refusedBy(list []pipeline.Decision, v pipeline.Verdict) string {
	for i := len(list) - 1; i >= 0; i-- {
		d := list[i]
		if !d.Shadow && !d.Skipped && d.Verdict.Action == v.Action && d.Verdict.Reply == v.Reply {
			return d.Filter
		}
	}
	return ""
}

// refusalSummary says what a refused stage means for the client.
func refusalSummary(st explainStage) string {
	how := "refused"
	if strings.HasPrefix(st.Reply, "4") {
		how = "deferred (temporary failure, the client retries)"
	}
	s := fmt.Sprintf("would be %s at %s by %s", how, st.Stage, orUnknown(st.By))
	if st.Reason != "" {
		s += ": " + st.Reason
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "the pipeline (stage deadline)"
	}
	return s
}

// greeting turns a connect-stage refusal into the greeting the client
// gets: RFC 5321 §3.1 allows only 554 and 421 there (as the session does).
func greeting(reply string) string {
	code, rest, _ := strings.Cut(reply, " ")
	if strings.HasPrefix(code, "4") {
		return "421 " + rest
	}
	return "554 " + rest
}

// printExplain writes the report as aligned text.
func printExplain(out io.Writer, r *explainReport) {
	var buf bytes.Buffer
	writeExplain(&buf, r)
	// Aligned columns leave blanks at the end of lines without a reason.
	for line := range strings.Lines(buf.String()) {
		fmt.Fprintln(out, strings.TrimRight(line, " \n"))
	}
}

func writeExplain(w io.Writer, r *explainReport) {
	fmt.Fprintf(w, "mailgate explain: dry run of %s\n", r.Config)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	auth := "none"
	if r.AuthUser != "" {
		auth = r.AuthUser
	}
	tls := "no"
	if r.TLS {
		tls = "yes"
	}
	fmt.Fprintf(tw, "  client\t%s on listener %s, TLS %s, AUTH %s\n", r.Client, r.Listener, tls, auth)
	fmt.Fprintf(tw, "  state\t%s, read-only (dry run): %d write(s) not applied\n", r.State, len(r.StateWrites))
	for _, wr := range r.StateWrites {
		fmt.Fprintf(tw, "\t  %s\n", wr)
	}
	fmt.Fprintf(tw, "  upstream\tnot contacted, nothing delivered\n")
	_ = tw.Flush()

	for _, st := range r.Stages {
		fmt.Fprintln(w)
		head := strings.ToUpper(st.Stage)
		if st.Arg != "" {
			head += " " + st.Arg
		}
		fmt.Fprintln(w, head)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if len(st.Decisions) == 0 {
			fmt.Fprintf(tw, "  (no filter runs at this stage)\n")
		}
		for _, d := range st.Decisions {
			verdict := d.Verdict
			switch {
			case d.Skipped:
				verdict = "skipped"
			case d.Verdict == "score":
				verdict = "score " + strconv.FormatFloat(d.Score, 'f', -1, 64)
				if d.Score >= 0 {
					verdict = "score +" + strconv.FormatFloat(d.Score, 'f', -1, 64)
				}
			}
			if d.Shadow {
				verdict += " (shadow, not applied)"
			}
			detail := d.Reason
			if d.Reply != "" {
				detail = strings.TrimSpace(d.Reply + "  " + d.Reason)
			}
			if d.Tag != "" {
				detail = strings.TrimSpace(detail + " [" + d.Tag + "]")
			}
			took := fmtDuration(d.duration)
			if d.Skipped {
				took = "-"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", d.Filter, verdict, took, detail)
		}
		_ = tw.Flush()
		mark := "=>"
		if st.Refused {
			fmt.Fprintf(w, "  %s %s   (refused by %s)\n", mark, st.Reply, orUnknown(st.By))
		} else {
			fmt.Fprintf(w, "  %s %s\n", mark, st.Reply)
		}
		if st.Note != "" {
			fmt.Fprintf(w, "     (%s)\n", st.Note)
		}
	}

	if len(r.HeadersAdded) > 0 || len(r.HeadersRemoved) > 0 {
		fmt.Fprintln(w)
	}
	if len(r.HeadersAdded) > 0 {
		fmt.Fprintln(w, "Header fields the filters would add (above the gateway's own Received:):")
		for _, h := range r.HeadersAdded {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(h, "\r\n", "\n  "))
		}
	}
	if len(r.HeadersRemoved) > 0 {
		fmt.Fprintln(w, "Header fields that would be removed:")
		for _, h := range r.HeadersRemoved {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(h, "\r\n", "\n  "))
		}
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "RESULT\t%s\n", r.Reply)
	fmt.Fprintf(tw, "\t%s\n", r.Summary)
	if len(r.Accepted) > 0 && len(r.Refused) > 0 {
		fmt.Fprintf(tw, "\trecipients accepted: %s; refused: %s\n", strings.Join(r.Accepted, ", "), strings.Join(r.Refused, ", "))
	}
	if r.Score != 0 {
		fmt.Fprintf(tw, "\tscore %s\n", strconv.FormatFloat(r.Score, 'f', -1, 64))
	}
	_ = tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// fmtDuration prints a filter's time compactly: 7µs, 1.2ms, 2.01s.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return strconv.FormatInt(d.Microseconds(), 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
}
