package test

// Greylisting, client rate rules and the state stores behind them, end to
// end: the real binary with the file store or a real redis-server, a
// recording upstream, and clients from 127.0.2.0/24 (this file's range:
// each test has its own addresses, so the tests run in parallel).

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailgate/internal/dnstest"
	"mailgate/internal/recorder"
	"mailgate/internal/redistest"
)

// stateDelay is the greylisting delay of these tests: short, but long
// enough that an immediate retry is "too early".
const stateDelay = time.Second

// stateConfig is the extra config: the store and filter blocks, each one
// line such as "greylist: {delay: 1s}".
func stateConfig(store string, filters ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state: {store: %q}\nfilters:\n", store)
	for _, f := range filters {
		b.WriteString("  " + f + "\n")
	}
	return b.String()
}

// stateFileStore is a file store in the test's own directory.
func stateFileStore(t *testing.T) string {
	return "file:" + filepath.Join(t.TempDir(), "state.db")
}

// stateGreylist is a greylist block with the tests' delay.
func stateGreylist(extra string) string {
	return fmt.Sprintf("greylist: {delay: %v%s}", stateDelay, extra)
}

// stateTry is one delivery attempt in a session of its own, the way a
// retrying MTA makes it; it returns the first refusal, nil if delivered.
func stateTry(t *testing.T, src, addr, from, rcpt string) error {
	t.Helper()
	c := client(t, src, addr)
	defer c.Quit()
	return send(c, from, []string{rcpt}, stateBody(from, rcpt))
}

func stateBody(from, rcpt string) string {
	return fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: state test\r\n\r\nHello.\r\n", from, rcpt)
}

// stateDeliver is stateTry that must succeed and reach the upstream.
func stateDeliver(t *testing.T, up *recorder.Server, src, addr, from, rcpt, what string) {
	t.Helper()
	if err := stateTry(t, src, addr, from, rcpt); err != nil {
		t.Fatalf("%s (%s from %s): %v", what, from, src, err)
	}
	stateGot(t, up, from, rcpt)
}

// stateRefused is stateTry that must be refused with code and enhanced
// code, and must not reach the upstream.
func stateRefused(t *testing.T, up *recorder.Server, src, addr, from, rcpt string, code int, enhanced, what string) {
	t.Helper()
	wantCode(t, what, stateTry(t, src, addr, from, rcpt), code, enhanced)
	stateNotGot(t, up, from)
}

// stateFrom returns the messages the upstream received from sender.
func stateFrom(up *recorder.Server, from string) []recorder.Message {
	var out []recorder.Message
	for _, m := range up.Messages() {
		if m.From == from {
			out = append(out, m)
		}
	}
	return out
}

// stateGot fails unless the upstream received exactly one message from
// sender, for exactly rcpts. Each test uses a sender per message.
func stateGot(t *testing.T, up *recorder.Server, from string, rcpts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(stateFrom(up, from)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := stateFrom(up, from)
	if len(got) != 1 || !slices.Equal(got[0].Rcpts, rcpts) {
		t.Fatalf("upstream has %d messages from %s (%v), want one for %v", len(got), from, got, rcpts)
	}
}

// stateNotGot fails if the upstream received a message from sender. The
// gateway relays before it answers DATA, so no wait is needed.
func stateNotGot(t *testing.T, up *recorder.Server, from string) {
	t.Helper()
	if got := stateFrom(up, from); len(got) != 0 {
		t.Fatalf("a refused message from %s reached the upstream: %v", from, got)
	}
}

// stateTotal fails unless the upstream received n messages in all.
func stateTotal(t *testing.T, up *recorder.Server, n int) {
	t.Helper()
	if got := len(up.Messages()); got != n {
		t.Fatalf("upstream received %d messages, want %d", got, n)
	}
}

// stateAfterDelay sleeps until the greylisting delay has passed since a
// first attempt that had ended at since.
func stateAfterDelay(since time.Time) {
	time.Sleep(time.Until(since.Add(stateDelay + 100*time.Millisecond)))
}

// stateDecision waits for a "message" log line of client holding a
// decision of filter whose reason contains reason, and returns it.
func stateDecision(t *testing.T, g *gateway, client, filter, reason string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, rec := range g.Log.Find("message") {
			if rec["client"] != client {
				continue
			}
			ds, _ := rec["decisions"].([]any)
			for _, d := range ds {
				m, _ := d.(map[string]any)
				r, _ := m["reason"].(string)
				if m["filter"] == filter && strings.Contains(r, reason) {
					return m
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s decision %q logged for %s; log:\n%s", filter, reason, client, g.Log.String())
	return nil
}

// stateStop stops a gateway the way an operator does (SIGTERM: drain,
// close the store) and waits until it has exited.
func stateStop(t *testing.T, g *gateway) {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g.done:
		g.done <- err // for the harness's cleanup, which waits for it too
		if err != nil {
			t.Fatalf("gateway exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not stop within 10s of SIGTERM")
	}
}

// stateRunning fails if the gateway process has exited.
func stateRunning(t *testing.T, g *gateway) {
	t.Helper()
	select {
	case err := <-g.done:
		g.done <- err
		t.Fatalf("gateway exited: %v", err)
	default:
	}
}

// stateGreylistRestart is scenarios 1 and 2: a triplet is greylisted, an
// early retry too, the retry after the delay is delivered; then the whole
// /24 passes at once (pass_ttl), and still does after a restart of the
// gateway on the same store. ips are three addresses of one /24.
func stateGreylistRestart(t *testing.T, store string, ips [3]string) {
	up := startUpstream(t, recorder.Options{})
	extra := stateConfig(store, stateGreylist(""))
	addr := freeAddr(t)
	g := startGateway(t, baseConfig(addr, up.Addr(), extra), addr)

	const from, rcpt = "alice@example.net", "bob@example.com"
	stateRefused(t, up, ips[0], addr, from, rcpt, 451, "4.7.1", "first attempt")
	greylisted := time.Now()
	stateDecision(t, g, ips[0], "greylist", "new triplet (127.0.2.0/24)")
	stateRefused(t, up, ips[0], addr, from, rcpt, 451, "4.7.1", "retry before the delay")
	stateDecision(t, g, ips[0], "greylist", "retry too early")

	stateAfterDelay(greylisted)
	stateDeliver(t, up, ips[0], addr, from, rcpt, "retry after the delay")
	stateDecision(t, g, ips[0], "greylist", "greylisting passed after")

	// Another sender and recipient from the same network: passed clients
	// are not delayed again.
	stateDeliver(t, up, ips[1], addr, "carol@example.net", "dave@example.org", "other triplet, same /24")
	stateDecision(t, g, ips[1], "greylist", "client passed greylisting before (127.0.2.0/24)")

	// A new process on the same store still knows the client.
	stateStop(t, g)
	addr2 := freeAddr(t)
	g2 := startGateway(t, baseConfig(addr2, up.Addr(), extra), addr2)
	stateDeliver(t, up, ips[2], addr2, "erin@example.net", "frank@example.com", "new triplet after a restart")
	stateDecision(t, g2, ips[2], "greylist", "client passed greylisting before (127.0.2.0/24)")
	stateTotal(t, up, 3)
}

func TestStateGreylistFileStore(t *testing.T) {
	t.Parallel()
	stateGreylistRestart(t, stateFileStore(t), [3]string{"127.0.2.10", "127.0.2.11", "127.0.2.12"})
}

func TestStateGreylistRedis(t *testing.T) {
	t.Parallel()
	r := redistest.StartProcess(t)
	stateGreylistRestart(t, r.URL(), [3]string{"127.0.2.20", "127.0.2.21", "127.0.2.22"})
}

// Two gateways sharing one Redis are one greylist: a retry that lands on
// the other MX is recognised, in either order. netmask_v4: 32 makes each
// client address its own network, so the second client has not passed
// along with the first.
func TestStateGreylistTwoGateways(t *testing.T) {
	t.Parallel()
	r := redistest.StartProcess(t)
	up := startUpstream(t, recorder.Options{})
	extra := stateConfig(r.URL(), stateGreylist(", netmask_v4: 32"))
	a, b := freeAddr(t), freeAddr(t)
	gA := startGateway(t, baseConfig(a, up.Addr(), extra), a)
	gB := startGateway(t, baseConfig(b, up.Addr(), extra), b)

	const one, two = "127.0.2.30", "127.0.2.31"
	stateRefused(t, up, one, a, "alice@example.net", "bob@example.com", 451, "4.7.1", "first attempt on A")
	stateRefused(t, up, two, b, "carol@example.net", "dave@example.com", 451, "4.7.1", "first attempt on B")
	greylisted := time.Now()
	// An early retry on the other gateway finds the first attempt.
	stateRefused(t, up, one, b, "alice@example.net", "bob@example.com", 451, "4.7.1", "early retry on B")
	stateDecision(t, gB, one, "greylist", "retry too early")
	stateRefused(t, up, two, a, "carol@example.net", "dave@example.com", 451, "4.7.1", "early retry on A")
	stateDecision(t, gA, two, "greylist", "retry too early")

	stateAfterDelay(greylisted)
	stateDeliver(t, up, one, b, "alice@example.net", "bob@example.com", "retry on B after the delay")
	stateDecision(t, gB, one, "greylist", "greylisting passed after")
	stateDeliver(t, up, two, a, "carol@example.net", "dave@example.com", "retry on A after the delay")
	stateDecision(t, gA, two, "greylist", "greylisting passed after")
	stateTotal(t, up, 2)
}

// With Redis down the gateway keeps answering (connection-rate counters
// fail open) and greylisting applies on_error; when Redis is back,
// greylisting works again.
func TestStateRedisDown(t *testing.T) {
	t.Parallel()
	r := redistest.StartProcess(t)
	up := startUpstream(t, recorder.Options{})
	tf, acc := freeAddr(t), freeAddr(t)
	gT := startGateway(t, baseConfig(tf, up.Addr(), stateConfig(r.URL(), stateGreylist(", on_error: tempfail"))), tf)
	gA := startGateway(t, baseConfig(acc, up.Addr(), stateConfig(r.URL(), stateGreylist(", on_error: accept"))), acc)

	r.Stop()
	stateRefused(t, up, "127.0.2.40", tf, "alice@example.net", "bob@example.com", 451, "4.3.0", "Redis down, on_error tempfail")
	stateDecision(t, gT, "127.0.2.40", "greylist", "state store unavailable")
	stateDeliver(t, up, "127.0.2.41", acc, "carol@example.net", "bob@example.com", "Redis down, on_error accept")
	stateDecision(t, gA, "127.0.2.41", "greylist", "greylisting skipped")
	gA.Log.WaitFor(t, "greylist: state store unavailable, greylisting skipped", 1)
	stateRunning(t, gT)
	stateRunning(t, gA)

	r.Start() // empty: it kept nothing
	stateRefused(t, up, "127.0.2.42", tf, "erin@example.net", "bob@example.com", 451, "4.7.1", "Redis back, first attempt on the tempfail gateway")
	stateRefused(t, up, "127.0.2.43", acc, "frank@example.net", "bob@example.com", 451, "4.7.1", "Redis back, first attempt on the accept gateway")
	greylisted := time.Now()
	stateAfterDelay(greylisted)
	stateDeliver(t, up, "127.0.2.42", tf, "erin@example.net", "bob@example.com", "Redis back, retry after the delay")
	stateTotal(t, up, 2)
}

// Authenticated, relay-network and allow-listed clients are not
// greylisted; anyone else is.
func TestStateGreylistSkipsTrustedClients(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, recorder.Options{})
	env := newTLSEnv(t)
	mx, sub := freeAddr(t), freeAddr(t)
	cfg := env.config(up.Addr(), listener("mx", mx, "none", "off"), listener("submission", sub, "starttls", "required")) +
		"relay: {networks: [127.0.2.50/32]}\n" +
		stateConfig(stateFileStore(t), "greylist: {delay: 1h}", "access: {allow: [127.0.2.51/32]}")
	g := startGateway(t, cfg, mx, sub)

	trusted := func(t *testing.T, src string) {
		t.Helper()
		d := stateDecision(t, g, src, "greylist", "")
		if d["verdict"] != "continue" {
			t.Errorf("greylist decision for %s: %v", src, d)
		}
	}
	t.Run("relay network", func(t *testing.T) {
		stateDeliver(t, up, "127.0.2.50", mx, "app@example.com", "bob@example.com", "first attempt")
		trusted(t, "127.0.2.50")
	})
	t.Run("access allow", func(t *testing.T) {
		stateDeliver(t, up, "127.0.2.51", mx, "partner@example.net", "bob@example.com", "first attempt")
		trusted(t, "127.0.2.51")
	})
	t.Run("authenticated", func(t *testing.T) {
		c, err := smtp.NewClientStartTLS(dialFrom(t, "127.0.2.52", sub), env.client())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", "alice", "alice-secret")); err != nil {
			t.Fatal(err)
		}
		const from, rcpt = "alice@example.com", "bob@example.com"
		if err := send(c, from, []string{rcpt}, stateBody(from, rcpt)); err != nil {
			t.Fatalf("first attempt: %v", err)
		}
		c.Quit()
		stateGot(t, up, from, rcpt)
		trusted(t, "127.0.2.52")
	})
	t.Run("anyone else", func(t *testing.T) {
		stateRefused(t, up, "127.0.2.53", mx, "stranger@example.net", "bob@example.com", 451, "4.7.1", "first attempt")
	})
	stateTotal(t, up, 3)
}

// key_on_spf_domain: a sender domain SPF vouches for is one greylisting
// client wherever it sends from, so its retry from another network passes;
// without an SPF pass the network (here /32) is the key.
func TestStateGreylistSPFDomain(t *testing.T) {
	t.Parallel()
	dns := dnstest.New(t, `example.net. 300 IN TXT "v=spf1 ip4:127.0.2.0/24 -all"`)
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	extra := fmt.Sprintf("dns: {servers: [%q], timeout: 500ms}\n", dns.Addr()) +
		stateConfig(stateFileStore(t), "spf: {}", stateGreylist(", netmask_v4: 32, key_on_spf_domain: true"))
	g := startGateway(t, baseConfig(addr, up.Addr(), extra), addr)

	stateRefused(t, up, "127.0.2.60", addr, "alice@example.net", "bob@example.com", 451, "4.7.1", "SPF pass, first attempt")
	stateDecision(t, g, "127.0.2.60", "greylist", "new triplet (spf:example.net)")
	stateRefused(t, up, "127.0.2.62", addr, "news@nospf.test", "bob@example.com", 451, "4.7.1", "no SPF, first attempt")
	stateDecision(t, g, "127.0.2.62", "greylist", "new triplet (127.0.2.62/32)")
	greylisted := time.Now()

	stateAfterDelay(greylisted)
	stateDeliver(t, up, "127.0.2.61", addr, "alice@example.net", "bob@example.com", "SPF pass, retry from another network")
	stateDecision(t, g, "127.0.2.61", "greylist", "greylisting passed after")
	stateRefused(t, up, "127.0.2.63", addr, "news@nospf.test", "bob@example.com", 451, "4.7.1", "no SPF, retry from another network")
	stateDecision(t, g, "127.0.2.63", "greylist", "new triplet (127.0.2.63/32)")
	stateTotal(t, up, 1)
}

// Client control rules: messages per client IP, recipients per sender,
// message size per sender (declared and actual).
func TestStateRates(t *testing.T) {
	t.Parallel()
	up, addr, _ := plainGateway(t, stateConfig(stateFileStore(t),
		"rates: {per_client_ip: {messages: 2/1m}, per_sender: {recipients: 3/1m, max_size: 1KB}}"))

	t.Run("messages per client IP", func(t *testing.T) {
		const src = "127.0.2.70"
		stateDeliver(t, up, src, addr, "m1@example.net", "bob@example.com", "first message")
		stateDeliver(t, up, src, addr, "m2@example.net", "bob@example.com", "second message")
		err := stateTry(t, src, addr, "m3@example.net", "bob@example.com")
		wantCode(t, "third MAIL", err, 452, "4.7.1")
		stateNotGot(t, up, "m3@example.net")
	})

	t.Run("recipients per sender", func(t *testing.T) {
		const from = "r@example.net"
		c := client(t, "127.0.2.71", addr)
		if err := c.Mail(from, nil); err != nil {
			t.Fatal(err)
		}
		rcpts := []string{"r1@example.com", "r2@example.com", "r3@example.com"}
		for _, rc := range rcpts {
			if err := c.Rcpt(rc, nil); err != nil {
				t.Fatalf("RCPT %s: %v", rc, err)
			}
		}
		wantCode(t, "4th RCPT", c.Rcpt("r4@example.com", nil), 452, "4.5.3")
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(stateBody(from, "r1@example.com"))); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("DATA for the accepted recipients: %v", err)
		}
		c.Quit()
		stateGot(t, up, from, rcpts...) // the three accepted ones, not the refused one
	})

	t.Run("size per sender", func(t *testing.T) {
		const from = "big@example.net"
		r := dialRaw(t, "127.0.2.72", addr)
		r.greet()
		r.cmd("MAIL FROM:<"+from+"> SIZE=5000", "552 5.3.4")
		// Without SIZE the limit is enforced at the end of DATA.
		r.cmd("MAIL FROM:<"+from+">", "250")
		r.cmd("RCPT TO:<bob@example.com>", "250")
		r.cmd("DATA", "354")
		line := strings.Repeat("x", 98) + "\r\n"
		r.send(stateBody(from, "bob@example.com") + strings.Repeat(line, 50) + ".\r\n")
		r.expect("552 5.3.4")
		r.cmd("QUIT", "221")
		stateNotGot(t, up, from)
	})
	stateTotal(t, up, 3)
}

// Shadow mode: the greylist decision is logged, not applied.
func TestStateGreylistShadow(t *testing.T) {
	t.Parallel()
	up, addr, g := plainGateway(t, stateConfig(stateFileStore(t), "greylist: {mode: shadow, delay: 1h}"))
	stateDeliver(t, up, "127.0.2.80", addr, "alice@example.net", "bob@example.com", "first attempt in shadow mode")
	d := stateDecision(t, g, "127.0.2.80", "greylist", "new triplet")
	if d["verdict"] != "tempfail" || d["shadow"] != true {
		t.Errorf("shadow greylist decision: %v", d)
	}
	stateTotal(t, up, 1)
}
