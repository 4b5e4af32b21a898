package test

// `mailgate explain` (SPEC §6), end to end: the real binary on real config
// files, the in-process DNS server for SPF, and the real gateway on the
// same state file to show that explaining never changes the state. Client
// addresses are from 127.0.8.0/24 (this file's range, shared with
// metrics_test.go, which uses .1-.29).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"mailgate/internal/dnstest"
	"mailgate/internal/recorder"
)

// explainWrite writes a config (baseConfig plus extra) into dir and
// returns its path. explain never listens nor connects upstream, so the
// addresses only need to be valid.
func explainWrite(t *testing.T, dir, listen, upstream, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(baseConfig(listen, upstream, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// explainRun runs `mailgate explain --config cfg args...`.
func explainRun(t *testing.T, cfg string, args ...string) (string, int) {
	t.Helper()
	out, errOut, code := runBinary(t, append([]string{"explain", "--config", cfg}, args...)...)
	if code == 2 {
		t.Logf("stderr: %s", errOut)
	}
	return out, code
}

func explainWant(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

func TestExplainRefused(t *testing.T) {
	t.Parallel()
	cfg := explainWrite(t, t.TempDir(), "127.0.0.1:2525", "127.0.0.1:2526",
		"state: {store: \"memory:\"}\nfilters:\n  senders: {deny: [spammer@bad.test]}\n")

	out, code := explainRun(t, cfg, "--ip", "127.0.8.30", "--helo", "mail.bad.test",
		"--from", "spammer@bad.test", "--rcpt", "bob@example.com")
	if code != 1 {
		t.Errorf("denied sender: exit %d, want 1", code)
	}
	explainWant(t, "denied sender", out,
		"MAIL <spammer@bad.test>",
		"senders", "reject", "550 5.7.1 Sender address rejected: access denied",
		"denied by entry spammer@bad.test",
		"RESULT  550 5.7.1 Sender address rejected: access denied",
		"would be refused at mail by senders")
	if strings.Contains(out, "RCPT") {
		t.Errorf("RCPT explained after a refused MAIL:\n%s", out)
	}

	out, code = explainRun(t, cfg, "--ip", "127.0.8.31", "--helo", "mail.example.net",
		"--from", "alice@example.net", "--rcpt", "someone@elsewhere.test")
	if code != 1 {
		t.Errorf("relay denied: exit %d, want 1", code)
	}
	explainWant(t, "relay denied", out,
		"RCPT <someone@elsewhere.test>",
		"relay", "554 5.7.1 Relay access denied", "not a local domain",
		"RESULT  554 5.7.1 Relay access denied",
		"would be refused at rcpt by relay")

	// One recipient of two refused: the message would still go to the
	// other, and the exit status says something was refused.
	out, code = explainRun(t, cfg, "--ip", "127.0.8.31", "--helo", "mail.example.net",
		"--from", "alice@example.net", "--rcpt", "bob@example.com", "--rcpt", "someone@elsewhere.test")
	if code != 1 {
		t.Errorf("one recipient refused: exit %d, want 1", code)
	}
	explainWant(t, "one recipient refused", out, "would be relayed to 1 of 2 recipients",
		"recipients accepted: bob@example.com; refused: someone@elsewhere.test")

	// The same as JSON.
	out, code = explainRun(t, cfg, "--json", "--ip", "127.0.8.31", "--helo", "mail.example.net",
		"--from", "alice@example.net", "--rcpt", "someone@elsewhere.test")
	var rep struct {
		Stages []struct {
			Stage, Reply, By, Reason string
			Refused                  bool
			Decisions                []struct{ Filter, Verdict, Reason string }
		}
		Reply    string
		ExitCode int `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	last := rep.Stages[len(rep.Stages)-1]
	if code != 1 || rep.ExitCode != 1 || rep.Reply != "554 5.7.1 Relay access denied" || last.Stage != "rcpt" ||
		!last.Refused || last.By != "relay" || !strings.Contains(last.Reason, "not a local domain") {
		t.Errorf("--json: exit %d, report %+v", code, rep)
	}
}

func TestExplainAccepted(t *testing.T) {
	t.Parallel()
	dns := dnstest.New(t, `soft.test. 300 IN TXT "v=spf1 ~all"`)
	dir := t.TempDir()
	cfg := explainWrite(t, dir, "127.0.0.1:2525", "127.0.0.1:2526", fmt.Sprintf(`dns: {servers: [%q], timeout: 2s}
state: {store: "memory:"}
filters:
  spf: {softfail: tag}
  scoring: {tag: 1}
`, dns.Addr()))
	msg := filepath.Join(dir, "message.eml")
	// Lines end with LF, as in a file on disk.
	if err := os.WriteFile(msg, []byte("From: mia@soft.test\nTo: bob@example.com\nSubject: hi\n\nHello.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := explainRun(t, cfg, "--ip", "127.0.8.32", "--helo", "mail.soft.test",
		"--from", "mia@soft.test", "--rcpt", "bob@example.com", "--message", msg)
	if code != 0 {
		t.Errorf("accepted: exit %d, want 0", code)
	}
	explainWant(t, "accepted", out,
		"CONNECT", "HELO mail.soft.test", "MAIL <mia@soft.test>", "RCPT <bob@example.com>",
		"spf", "score +1", "softfail",
		"DATA 65 bytes", // 5 lines, now ending CRLF
		"Received-SPF: softfail",
		"X-Mailgate-Score: 1.0 (spf-softfail)",
		"RESULT  250 2.0.0 Ok (would be relayed upstream)",
		"accepted: would be relayed upstream")

	// Without a message the data stage is not run, and said so.
	out, code = explainRun(t, cfg, "--ip", "127.0.8.32", "--helo", "mail.soft.test",
		"--from", "mia@soft.test", "--rcpt", "bob@example.com")
	if code != 0 {
		t.Errorf("accepted without message: exit %d", code)
	}
	explainWant(t, "without message", out, "250 2.1.5 Recipient ok (would be relayed upstream)",
		"no --message: the data-stage filters did not run")
}

func TestExplainUsage(t *testing.T) {
	t.Parallel()
	cfg := explainWrite(t, t.TempDir(), "127.0.0.1:2525", "127.0.0.1:2526", "")
	for _, args := range [][]string{
		{"--ip", "127.0.8.33", "--helo", "h.example.net", "--from", "a@example.net"}, // no --rcpt
		{"--ip", "not-an-ip", "--helo", "h.example.net", "--from", "a@example.net", "--rcpt", "b@example.com"},
		{"--ip", "127.0.8.33", "--helo", "h.example.net", "--from", "a@example.net", "--rcpt", "b@example.com", "--tls"},
		{"--ip", "127.0.8.33", "--helo", "h.example.net", "--from", "a@example.net", "--rcpt", "b@example.com", "--message", "/nonexistent"},
	} {
		if _, code := explainRun(t, cfg, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if _, _, code := runBinary(t, "explain", "--config", "/nonexistent.yaml", "--ip", "127.0.8.33", "--helo", "h",
		"--from", "a@example.net", "--rcpt", "b@example.com"); code != 2 {
		t.Errorf("missing config: exit %d, want 2", code)
	}
}

// timings are the only part of the output that changes between runs.
var explainTimings = regexp.MustCompile(`\b\d+(\.\d+)?(µs|ms|s)\b`)

// TestExplainGreylistUnchanged: explaining a greylisted triplet twice
// gives the same answer twice, records nothing (a later real attempt is
// still a new triplet), and reads what the real gateway recorded.
func TestExplainGreylistUnchanged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.db")
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	extra := fmt.Sprintf("state: {store: %q}\nfilters:\n  greylist: {delay: 1h}\n", "file:"+statePath)
	cfg := explainWrite(t, dir, addr, up.Addr(), extra)
	args := []string{"--ip", "127.0.8.40", "--helo", "mail.example.net", "--from", "grey@example.net", "--rcpt", "bob@example.com"}

	explainTwice := func(wants ...string) {
		t.Helper()
		var outs [2]string
		for i := range outs {
			out, code := explainRun(t, cfg, args...)
			if code != 1 {
				t.Errorf("greylisted: exit %d, want 1", code)
			}
			explainWant(t, "greylisted", out, append([]string{"greylist", "tempfail",
				"RESULT  451 4.7.1 Greylisted, please try again later",
				"would be deferred (temporary failure, the client retries) at rcpt by greylist: ",
				"read-only (dry run)"}, wants...)...)
			outs[i] = explainTimings.ReplaceAllString(out, "T")
		}
		if outs[0] != outs[1] {
			t.Errorf("explain changed its answer:\n%s\n---\n%s", outs[0], outs[1])
		}
	}
	// The triplet a real session would record is listed, not written.
	explainTwice("by greylist: new triplet (127.0.8.0/24)", "set grey:127.0.8.0/24|")
	if _, err := os.Stat(statePath); !os.IsNotExist(err) {
		t.Fatalf("explain created the state file: %v", err)
	}

	// The real gateway on the same file: its first attempt is still a
	// new triplet, so explain recorded nothing.
	g := startGateway(t, baseConfig(addr, up.Addr(), extra), addr)
	wantCode(t, "first real attempt", stateTry(t, "127.0.8.40", addr, "grey@example.net", "bob@example.com"), 451, "4.7.1")
	stateDecision(t, g, "127.0.8.40", "greylist", "new triplet")
	stateStop(t, g)

	// Now explain reads the triplet the gateway recorded, and still
	// changes nothing.
	explainTwice("by greylist: retry too early")
}
