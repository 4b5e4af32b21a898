package test

// The connect, HELO, MAIL and RCPT defences end to end: the real binary,
// a real DNS server in this process (dnstest) holding the PTR, DNSBL and
// SPF records, and a recording upstream. Clients come from 127.0.1.0/24
// (this file's range; every test has its own addresses, so the tests run
// in parallel).

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailgate/internal/dnstest"
	"mailgate/internal/recorder"
)

// envDNSTimeout is the gateway's dns.timeout in these tests: a dead list
// costs at most this.
const envDNSTimeout = 500 * time.Millisecond

// envSetup describes one test's world.
type envSetup struct {
	DNS      []string // zone-file lines
	Listener string   // extra keys of the mx listener, e.g. "access: {allow: [...]}"
	Config   string   // the rest of the config: filters:, limits: ...
}

// envWorld is a running DNS server, upstream and gateway.
type envWorld struct {
	dns  *dnstest.Server
	up   *recorder.Server
	addr string
	gw   *gateway
}

// startEnvelope starts the DNS server, the upstream and a gateway that
// asks that DNS server and keeps its state in memory.
func startEnvelope(t *testing.T, s envSetup) *envWorld {
	t.Helper()
	w := &envWorld{dns: dnstest.New(t, s.DNS...), up: startUpstream(t, recorder.Options{}), addr: freeAddr(t)}
	extra := fmt.Sprintf("dns: {servers: [%q], timeout: %v}\nstate: {store: \"memory:\"}\n%s",
		w.dns.Addr(), envDNSTimeout, s.Config)
	cfg := baseConfig(w.addr, w.up.Addr(), extra)
	if s.Listener != "" {
		cfg = strings.Replace(cfg, "auth: off}", "auth: off, "+s.Listener+"}", 1)
	}
	w.gw = startGateway(t, cfg, w.addr)
	return w
}

// envPTR is a PTR record for ip and, if confirmed, the A record that
// forward-confirms it.
func envPTR(ip, name string, confirmed bool) []string {
	rev, _ := dns.ReverseAddr(ip)
	rrs := []string{fmt.Sprintf("%s 300 IN PTR %s.", rev, name)}
	if confirmed {
		rrs = append(rrs, fmt.Sprintf("%s. 300 IN A %s", name, ip))
	}
	return rrs
}

// envListed is a DNSBL entry: ip listed in zone with the return code.
func envListed(ip, zone, code string) string {
	a := netip.MustParseAddr(ip).As4()
	return fmt.Sprintf("%d.%d.%d.%d.%s. 300 IN A %s", a[3], a[2], a[1], a[0], zone, code)
}

// envDeliver sends testMessage from src with go-smtp's client and waits
// until the upstream holds it; it returns the upstream's copy.
func (w *envWorld) envDeliver(t *testing.T, src, from string) recorder.Message {
	t.Helper()
	c := client(t, src, w.addr)
	if err := send(c, from, []string{"bob@example.com"}, testMessage); err != nil {
		t.Fatalf("delivery from %s <%s>: %v", src, from, err)
	}
	_ = c.Quit()
	return w.envWaitFrom(t, from)
}

// envWaitFrom waits for the upstream's message from sender.
func (w *envWorld) envWaitFrom(t *testing.T, from string) recorder.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, m := range w.up.Messages() {
			if m.From == from {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream got no message from <%s>", from)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// envNotFrom fails if the upstream holds a message from sender.
func (w *envWorld) envNotFrom(t *testing.T, from string) {
	t.Helper()
	for _, m := range w.up.Messages() {
		if m.From == from {
			t.Errorf("the upstream got a message from <%s> that should have been refused", from)
		}
	}
}

// envRefusedAtGreeting connects from src and expects a greeting refusal
// starting with prefix (code and enhanced code), then the connection
// closed. It returns the reply.
func (w *envWorld) envRefusedAtGreeting(t *testing.T, src, prefix string) string {
	t.Helper()
	r := dialRaw(t, src, w.addr)
	got := r.expect(prefix)
	if !envClosed(r) {
		t.Errorf("%s: connection still open after %q", src, got)
	}
	return got
}

// envClosed reports whether the server closed the connection: the next
// read ends (EOF or reset) instead of timing out. (raw.closed takes a
// timeout for a close too.)
func envClosed(r *raw) bool {
	_ = r.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := r.br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// envDecision returns the first decision of filter in a log record.
func envDecision(t *testing.T, rec map[string]any, filter string) map[string]any {
	t.Helper()
	list, _ := rec["decisions"].([]any)
	for _, d := range list {
		if m, ok := d.(map[string]any); ok && m["filter"] == filter {
			return m
		}
	}
	t.Fatalf("no %s decision in %v", filter, rec)
	return nil
}

// envUnfold undoes header folding, so a test can look for a phrase.
func envUnfold(b []byte) string { return strings.ReplaceAll(string(b), "\r\n\t", " ") }

// rDNS: a forward-confirmed client passes and is named in our Received
// header; a client without a PTR, or with one that does not resolve back,
// is refused in place of the banner.
func TestEnvelopeRDNS(t *testing.T) {
	t.Parallel()
	dnsRecords := slices.Concat(envPTR("127.0.1.1", "mail.client.test", true),
		envPTR("127.0.1.3", "dyn-3.isp.test", false))
	w := startEnvelope(t, envSetup{DNS: dnsRecords, Config: "filters:\n  rdns: {require_fcrdns: true}\n"})

	m := w.envDeliver(t, "127.0.1.1", "alice@client.test")
	if want := "Received: from client.example.net (mail.client.test [127.0.1.1]) by mx.gateway.test"; !strings.Contains(envUnfold(m.Data), want) {
		t.Errorf("upstream copy lacks %q:\n%s", want, m.Data)
	}

	got := w.envRefusedAtGreeting(t, "127.0.1.2", "554 5.7.25 ")
	if !strings.Contains(got, "cannot find your hostname") {
		t.Errorf("no-PTR refusal %q", got)
	}
	got = w.envRefusedAtGreeting(t, "127.0.1.3", "554 5.7.25 ")
	if !strings.Contains(got, "reverse DNS does not match") {
		t.Errorf("unconfirmed-PTR refusal %q", got)
	}
	rec := w.gw.Log.WaitForClient(t, "session", "127.0.1.2")
	if rec["end"] != "refused at connect" || envDecision(t, rec, "rdns")["verdict"] != "reject" {
		t.Errorf("session log of the refused client: %v", rec)
	}
	if n := len(w.up.Messages()); n != 1 {
		t.Errorf("upstream got %d messages, want 1", n)
	}
}

// rDNS with action tempfail: the greeting is 421, so the client retries.
func TestEnvelopeRDNSTempfail(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{Config: "filters:\n  rdns: {action: tempfail}\n"})
	w.envRefusedAtGreeting(t, "127.0.1.5", "421 4.7.25 ")
}

// envDNSBLZones are three block lists.
const envDNSBLZones = "zones: [{zone: bl1.test}, {zone: bl2.test}, {zone: bl3.test}]"

// DNSBL refusal at RCPT: the sender and recipient are known (and logged)
// when the client is turned away, and the reply names the list. An answer
// in 127.255.255.0/24 is the operator refusing our resolver, not a listing.
func TestEnvelopeDNSBLAtRcpt(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{
		DNS: []string{
			envListed("127.0.1.10", "bl2.test", "127.0.0.2"),
			envListed("127.0.1.11", "bl1.test", "127.255.255.254"),
		},
		Config: "filters:\n  dnsbl: {" + envDNSBLZones + "}\n",
	})

	c := client(t, "127.0.1.10", w.addr)
	if err := c.Mail("alice@example.net", nil); err != nil {
		t.Fatalf("MAIL from a listed client: %v (the refusal belongs at RCPT)", err)
	}
	err := c.Rcpt("bob@example.com", nil)
	wantCode(t, "RCPT from a listed client", err, 554, "5.7.1")
	if !containsText(err, "bl2.test") || containsText(err, "bl1.test") {
		t.Errorf("refusal %v should name bl2.test (and only it)", err)
	}
	_ = c.Quit()
	rec := w.gw.Log.WaitForClient(t, "message", "127.0.1.10")
	rej, _ := rec["rejected_rcpts"].([]any)
	if rec["from"] != "alice@example.net" || len(rej) != 1 || rej[0] != "bob@example.com" || rec["outcome"] != "rejected at rcpt" {
		t.Errorf("message log of the refused client: %v", rec)
	}
	if d := envDecision(t, rec, "dnsbl"); !strings.Contains(fmt.Sprint(d["reason"]), "bl2.test=127.0.0.2") {
		t.Errorf("dnsbl decision %v does not show the listing", d)
	}

	w.envDeliver(t, "127.0.1.11", "carol@example.net")
	rec = w.gw.Log.WaitForClient(t, "message", "127.0.1.11")
	if d := envDecision(t, rec, "dnsbl"); !strings.Contains(fmt.Sprint(d["reason"]), "bl1.test=error") {
		t.Errorf("127.255.255.254 should be logged as an error of bl1.test: %v", d)
	}
	w.envNotFrom(t, "alice@example.net")
}

// DNSBL refusal at connect: in place of the banner, naming the list.
func TestEnvelopeDNSBLAtConnect(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{
		DNS:    []string{envListed("127.0.1.13", "bl3.test", "127.0.0.4")},
		Config: "filters:\n  dnsbl: {" + envDNSBLZones + ", reject_at: connect}\n",
	})
	got := w.envRefusedAtGreeting(t, "127.0.1.13", "554 5.7.1 ")
	if !strings.Contains(got, "bl3.test") {
		t.Errorf("greeting refusal %q does not name bl3.test", got)
	}
	// A client on no list is greeted as usual.
	w.envDeliver(t, "127.0.1.12", "dave@example.net")
}

// A list that never answers delays the banner by at most the DNS timeout,
// and the others still count.
func TestEnvelopeDNSBLDeadZone(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{
		DNS:    []string{envListed("127.0.1.15", "bl2.test", "127.0.0.2")},
		Config: "filters:\n  dnsbl: {" + envDNSBLZones + "}\n",
	})
	w.dns.Blackhole("bl1.test")

	start := time.Now()
	r := dialRaw(t, "127.0.1.14", w.addr)
	r.expect("220 ")
	if took := time.Since(start); took > envDNSTimeout+1500*time.Millisecond {
		t.Errorf("the banner took %v with a dead list; dns.timeout is %v", took, envDNSTimeout)
	}
	r.cmd("EHLO client.example.net", "250")
	r.openData()
	r.send(testMessage + ".\r\n")
	r.expect("250 ")
	r.cmd("QUIT", "221")
	rec := w.gw.Log.WaitForClient(t, "message", "127.0.1.14")
	if d := envDecision(t, rec, "dnsbl"); !strings.Contains(fmt.Sprint(d["reason"]), "bl1.test=error") {
		t.Errorf("dnsbl decision %v does not report the dead list", d)
	}

	c := client(t, "127.0.1.15", w.addr)
	if err := c.Mail("eve@example.net", nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "RCPT from a client on a live list", c.Rcpt("bob@example.com", nil), 554, "5.7.1")
}

// An allow list (negative weight) at or below allow_threshold whitelists
// the session: greylisting does not apply to it, while it does to others.
func TestEnvelopeDNSBLAllowZone(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{
		DNS: []string{envListed("127.0.1.16", "wl.test", "127.0.0.2")},
		Config: `filters:
  dnsbl: {zones: [{zone: bl1.test}], allow_zones: [{zone: wl.test, weight: -2}], allow_threshold: -1}
  greylist: {delay: 1h}
`,
	})
	w.envDeliver(t, "127.0.1.16", "frank@example.net")
	rec := w.gw.Log.WaitForClient(t, "message", "127.0.1.16")
	if d := envDecision(t, rec, "greylist"); d["skipped"] != true {
		t.Errorf("greylist decision for an allow-listed client: %v", d)
	}

	c := client(t, "127.0.1.17", w.addr)
	if err := c.Mail("grace@example.net", nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "RCPT from a client on no allow list", c.Rcpt("bob@example.com", nil), 451, "4.7.1")
}

// HELO: a bare name, our own name and a literal that is not the client's
// address are refused; a proper name passes.
func TestEnvelopeHelo(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{Config: "filters:\n  helo: {}\n"})
	r := dialRaw(t, "127.0.1.20", w.addr)
	r.expect("220 ")
	r.cmd("EHLO localhost", "504 5.5.2 ")
	r.cmd("EHLO mx.gateway.test", "550 5.7.1 ")
	r.cmd("EHLO example.com", "550 5.7.1 ") // a local domain is ours too
	r.cmd("EHLO [127.0.1.99]", "550 5.7.1 ")
	r.cmd("EHLO [127.0.1.20]", "250")
	r.cmd("EHLO mail.client.test", "250")
	r.openData()
	r.send(testMessage + ".\r\n")
	r.expect("250 ")
	r.cmd("QUIT", "221")
	m := w.envWaitFrom(t, "alice@example.net")
	if want := "Received: from mail.client.test ([127.0.1.20])"; !strings.Contains(envUnfold(m.Data), want) {
		t.Errorf("upstream copy lacks %q:\n%s", want, m.Data)
	}
}

// Pregreet: a client that talks before the banner is refused and
// disconnected; one that waits is greeted after the wait.
func TestEnvelopePregreet(t *testing.T) {
	t.Parallel()
	const wait = 500 * time.Millisecond
	w := startEnvelope(t, envSetup{Config: fmt.Sprintf("filters:\n  pregreet: {wait: %v}\n", wait)})

	r := dialRaw(t, "127.0.1.30", w.addr)
	r.send("EHLO bot.example.net\r\n")
	r.expect("554 5.5.1 ")
	if !envClosed(r) {
		t.Error("a pregreeting client is still connected")
	}

	start := time.Now()
	c := client(t, "127.0.1.31", w.addr) // reads the banner, says EHLO
	if took := time.Since(start); took < wait-50*time.Millisecond {
		t.Errorf("banner after %v, want the pregreet wait of %v", took, wait)
	}
	if err := send(c, "heidi@example.net", []string{"bob@example.com"}, testMessage); err != nil {
		t.Fatalf("a patient client: %v", err)
	}
	w.envWaitFrom(t, "heidi@example.net")
}

// Access lists: deny refuses at connect; a listener's allow whitelists
// the client (rdns is skipped) but does not let it relay.
func TestEnvelopeAccess(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{
		Listener: "access: {allow: [127.0.1.41/32]}",
		Config: `filters:
  access: {deny: [127.0.1.40/32]}
  rdns: {require_ptr: true}
`,
	})
	if got := w.envRefusedAtGreeting(t, "127.0.1.40", "554 5.7.1 "); !strings.Contains(got, "Access denied") {
		t.Errorf("deny refusal %q", got)
	}

	// None of these clients has a PTR record.
	w.envRefusedAtGreeting(t, "127.0.1.42", "554 5.7.25 ")
	c := client(t, "127.0.1.41", w.addr)
	if err := send(c, "ivan@example.net", []string{"bob@example.com"}, testMessage); err != nil {
		t.Fatalf("allow-listed client without PTR: %v", err)
	}
	w.envWaitFrom(t, "ivan@example.net")
	if err := c.Mail("ivan@example.net", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("someone@elsewhere.test", nil)
	wantCode(t, "relay by an allow-listed client", err, 554, "5.7.1")
	if !containsText(err, "Relay access denied") {
		t.Errorf("relay refusal %v", err)
	}
	_ = c.Quit()
	rec := w.gw.Log.WaitForClient(t, "session", "127.0.1.41")
	if d := envDecision(t, rec, "rdns"); d["skipped"] != true {
		t.Errorf("rdns decision for an allow-listed client: %v", d)
	}
}

// Concurrent connections per client: the one over the limit gets 421 and
// is disconnected; other clients are unaffected, and a slot freed by a
// closed session is available again.
func TestEnvelopeConnectionsPerIP(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{Config: "limits: {max_connections_per_ip: 2}\n"})
	first := dialRaw(t, "127.0.1.50", w.addr)
	first.expect("220 ")
	second := dialRaw(t, "127.0.1.50", w.addr)
	second.expect("220 ")
	w.envRefusedAtGreeting(t, "127.0.1.50", "421 4.7.0 ")
	dialRaw(t, "127.0.1.51", w.addr).expect("220 ")

	first.cmd("QUIT", "221")
	if !envClosed(first) {
		t.Fatal("QUIT did not close the session")
	}
	// The gateway counts the session down just after it closed the
	// socket: allow it a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := dialRaw(t, "127.0.1.50", w.addr)
		got := r.reply()
		if strings.HasPrefix(got, "220 ") {
			break
		}
		if !strings.HasPrefix(got, "421 4.7.0") || time.Now().After(deadline) {
			t.Fatalf("after a session closed: %q, want 220", got)
		}
		r.c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// Connection rate per client: the fourth connection within the window is
// refused; another client is not.
func TestEnvelopeConnectionRate(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{Config: "limits: {connection_rate_per_ip: 3/1m}\n"})
	for i := range 3 {
		r := dialRaw(t, "127.0.1.52", w.addr)
		if got := r.reply(); !strings.HasPrefix(got, "220 ") {
			t.Fatalf("connection %d: %q", i+1, got)
		}
		r.cmd("QUIT", "221")
	}
	w.envRefusedAtGreeting(t, "127.0.1.52", "421 4.7.0 ")
	dialRaw(t, "127.0.1.53", w.addr).expect("220 ")
}

// Sender lists, barring and the null sender: the deny list refuses at
// MAIL, the allow list overrides an SPF fail, barred recipients are
// refused at RCPT, and null_sender: reject refuses bounces.
func TestEnvelopeSenders(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{
		DNS: []string{`partner.test. 300 IN TXT "v=spf1 -all"`, `forged.test. 300 IN TXT "v=spf1 -all"`},
		Config: `filters:
  senders: {deny: [spam.test], allow: [partner.test]}
  spf: {fail: reject}
  barring: {recipients: ["*!*", "%%%%*@example.com", "~1234ok@example.com"]}
  null_sender: reject
`,
	})
	r := dialRaw(t, "127.0.1.60", w.addr)
	r.greet()
	for _, from := range []string{"joe@spam.test", "joe@mx.spam.test"} {
		if got := r.cmd("MAIL FROM:<"+from+">", "550 5.7.1 "); !strings.Contains(got, "access denied") {
			t.Errorf("deny-listed sender %s: %q", from, got)
		}
	}
	r.cmd("MAIL FROM:<joe@forged.test>", "550 5.7.23 ") // SPF is on
	r.cmd("MAIL FROM:<>", "550 5.7.1 Null sender not accepted")

	r.cmd("MAIL FROM:<kate@partner.test>", "250")
	if got := r.cmd("RCPT TO:<1234sales@example.com>", "550 5.7.1 "); !strings.Contains(got, "barred") {
		t.Errorf("barred recipient: %q", got)
	}
	r.cmd("RCPT TO:<1234ok@example.com>", "250")
	r.cmd("RCPT TO:<bob@example.com>", "250")
	r.cmd("DATA", "354")
	r.send(testMessage + ".\r\n")
	r.expect("250 ")
	r.cmd("QUIT", "221")

	m := w.envWaitFrom(t, "kate@partner.test")
	if !slices.Equal(m.Rcpts, []string{"1234ok@example.com", "bob@example.com"}) {
		t.Errorf("upstream recipients %v", m.Rcpts)
	}
	if strings.Contains(string(m.Data), "Received-SPF") {
		t.Errorf("SPF ran for an allow-listed sender:\n%s", m.Data)
	}
	w.envNotFrom(t, "joe@spam.test")
	w.envNotFrom(t, "joe@forged.test")
}

// SPF: fail is refused at MAIL, softfail is tagged and delivered with
// Received-SPF and the score header, a DNS failure is a temporary refusal.
func TestEnvelopeSPF(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{
		DNS: []string{`hard.test. 300 IN TXT "v=spf1 -all"`, `soft.test. 300 IN TXT "v=spf1 ~all"`},
		Config: `filters:
  spf: {fail: reject, softfail: tag, temperror: tempfail}
  scoring: {tag: 1}
`,
	})
	w.dns.ServFail("broken.test")

	r := dialRaw(t, "127.0.1.70", w.addr)
	r.greet()
	r.cmd("MAIL FROM:<liam@hard.test>", "550 5.7.23 ")
	r.cmd("MAIL FROM:<liam@broken.test>", "451 4.4.3 ")
	r.cmd("QUIT", "221")

	m := w.envDeliver(t, "127.0.1.70", "mia@soft.test")
	data := envUnfold(m.Data)
	for _, want := range []string{"Received-SPF: softfail (mx.gateway.test:", "X-Mailgate-Score: 1.0 (spf-softfail)"} {
		if !strings.Contains(data, want) {
			t.Errorf("upstream copy lacks %q:\n%s", want, data)
		}
	}
	w.envNotFrom(t, "liam@hard.test")
}

// Shadow mode: a DNSBL listing and a missing PTR are logged as refusals
// that would have been made, and the mail is delivered.
func TestEnvelopeShadow(t *testing.T) {
	t.Parallel()
	w := startEnvelope(t, envSetup{
		DNS: []string{envListed("127.0.1.80", "bl1.test", "127.0.0.2")},
		Config: `filters:
  rdns: {mode: shadow}
  dnsbl: {mode: shadow, zones: [{zone: bl1.test}]}
`,
	})
	w.envDeliver(t, "127.0.1.80", "nina@example.net")

	msg := w.gw.Log.WaitForClient(t, "message", "127.0.1.80")
	if msg["outcome"] != "delivered" {
		t.Errorf("message log: %v", msg)
	}
	sess := w.gw.Log.WaitForClient(t, "session", "127.0.1.80")
	for _, c := range []struct {
		rec    map[string]any
		filter string
		stage  string
	}{
		{msg, "rdns", "connect"},
		{sess, "rdns", "connect"},
		{msg, "dnsbl", "rcpt"},
	} {
		var found bool
		for _, d := range c.rec["decisions"].([]any) {
			d := d.(map[string]any)
			if d["filter"] == c.filter && d["stage"] == c.stage {
				found = true
				if d["verdict"] != "reject" || d["shadow"] != true {
					t.Errorf("%s %s decision %v: want a shadow reject", c.filter, c.stage, d)
				}
			}
		}
		if !found {
			t.Errorf("no %s decision at %s in %v", c.filter, c.stage, c.rec)
		}
	}
}
