package test

// The ClamAV filter end to end: the real binary in front of the recording
// upstream, scanning with a real clamd (internal/clamdtest, with its own
// one-signature database), and clients from 127.0.4.0/24 (this file's
// range).

import (
	"fmt"
	"strings"
	"testing"

	"mailgate/internal/clamdtest"
	"mailgate/internal/recorder"
)

// clamavGateway starts an upstream and a gateway scanning with clamd at
// address; block is the rest of the filters.clamav block.
func clamavGateway(t *testing.T, address, block string, filters ...string) (*recorder.Server, string, *gateway) {
	t.Helper()
	extra := fmt.Sprintf("filters:\n  clamav: {address: %q, timeout: 5s%s}\n", address, block)
	for _, f := range filters {
		extra += "  " + f + "\n"
	}
	return plainGateway(t, extra)
}

const clamavVirusText = "Message refused: virus found (" + clamdtest.Signature + ")"
const clamavDownText = "Virus scanner unavailable, try again later"

// The test virus plainly, base64-attached and zipped is refused with its
// name, even from an allow-listed sender; clean mail, zip attachment and
// all, is delivered.
func TestClamAVVirusRefused(t *testing.T) {
	t.Parallel()
	d := clamdtest.Start(t)
	up, addr, _ := clamavGateway(t, d.Unix(), "", "senders: {allow: [trusted@example.net]}")
	for i, m := range clamdtest.Messages() {
		for _, sender := range []string{"alice", "trusted"} {
			from := fmt.Sprintf("%s-%d@example.net", sender, i)
			if sender == "trusted" {
				if !m.Virus {
					continue
				}
				from = "trusted@example.net"
			}
			err := sendOne(t, "127.0.4.1", addr, from, m.Text)
			what := m.Name + " from " + from
			if m.Virus {
				refusedUndelivered(t, up, what, err, 554, "5.7.1", clamavVirusText, from)
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			stateGot(t, up, from, "bob@example.com")
			if got := stateFrom(up, from)[0].Data; !strings.Contains(string(got), m.Text) {
				t.Fatalf("%s: the upstream got a different message:\n%s", what, got)
			}
		}
	}
	stateTotal(t, up, 2)
}

// clamd killed mid-test: 451 4.3.0 and nothing delivered; started again:
// delivered again, viruses refused again. Over TCP this time.
func TestClamAVDown(t *testing.T) {
	t.Parallel()
	d := clamdtest.Start(t)
	up, addr, g := clamavGateway(t, d.TCP(), ", on_error: tempfail")
	msgs := clamdtest.Messages()
	virus, clean := msgs[len(msgs)-1], msgs[0]
	if !virus.Virus || clean.Virus {
		t.Fatalf("messages: %s, %s", virus.Name, clean.Name)
	}

	if err := sendOne(t, "127.0.4.2", addr, "before@example.net", clean.Text); err != nil {
		t.Fatalf("clamd up: %v", err)
	}
	stateGot(t, up, "before@example.net", "bob@example.com")

	d.Stop()
	for _, m := range []clamdtest.Message{clean, virus} {
		from := "down-" + m.Name + "@example.net"
		refusedUndelivered(t, up, m.Name+" while clamd is down", sendOne(t, "127.0.4.2", addr, from, m.Text),
			451, "4.3.0", clamavDownText, from)
	}
	if !strings.Contains(g.Log.String(), `"reason":"clamd unavailable: clamd: dial tcp`) {
		t.Errorf("no decision reason for the failed scan in the log")
	}

	d.Start()
	if err := sendOne(t, "127.0.4.2", addr, "after@example.net", clean.Text); err != nil {
		t.Fatalf("clamd restarted: %v", err)
	}
	stateGot(t, up, "after@example.net", "bob@example.com")
	refusedUndelivered(t, up, "virus after the restart", sendOne(t, "127.0.4.2", addr, "virus@example.net", virus.Text),
		554, "5.7.1", clamavVirusText, "virus@example.net")
	stateTotal(t, up, 2)
}

// on_error: accept delivers while clamd is down, with a warning; the
// gateway starts without clamd.
func TestClamAVDownAccept(t *testing.T) {
	t.Parallel()
	d := clamdtest.Start(t)
	d.Stop()
	up, addr, g := clamavGateway(t, d.Unix(), ", on_error: accept")
	if err := sendOne(t, "127.0.4.3", addr, "unscanned@example.net", testMessage); err != nil {
		t.Fatalf("clamd down, on_error accept: %v", err)
	}
	stateGot(t, up, "unscanned@example.net", "bob@example.com")
	warn := g.Log.WaitFor(t, "clamav: clamd gave no verdict, message delivered UNSCANNED (on_error: accept)", 1)
	if warn[0]["level"] != "WARN" {
		t.Errorf("warning logged at %v", warn[0]["level"])
	}
	if !strings.Contains(g.Log.String(), `"reason":"unscanned: clamd: dial unix`) {
		t.Errorf("the message's decision does not say unscanned")
	}

	d.Start()
	refusedUndelivered(t, up, "virus with clamd back", sendOne(t, "127.0.4.3", addr, "virus@example.net", "Subject: x\r\n\r\n"+clamdtest.EICAR()+"\r\n"),
		554, "5.7.1", clamavVirusText, "virus@example.net")
}
