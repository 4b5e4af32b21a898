package test

// The spamd filter end to end: the real binary in front of the recording
// upstream, scoring with a real SpamAssassin spamd (internal/spamdtest:
// Debian's stock rules, no network tests), and clients from 127.0.7.0/24
// (this file's range).

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailgate/internal/recorder"
	"mailgate/internal/spamdtest"
)

const spamdGTUBE = "From: spammer@example.net\r\nTo: bob@example.com\r\nSubject: offer\r\n\r\n" +
	spamdtest.GTUBE + "\r\n"

// spamdHam is an ordinary message, dated now (SpamAssassin scores old
// dates).
func spamdHam() string {
	return "From: carol@example.net\r\nTo: bob@example.com\r\nSubject: lunch\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <spamd-e2e.1@example.net>\r\n\r\n" +
		"Hello Bob,\r\n\r\nshall we have lunch on Tuesday?\r\n\r\nCarol\r\n"
}

// spamdDelivered returns the one message the upstream got from sender
// (the gateway relays before it answers DATA: no wait needed).
func spamdDelivered(t *testing.T, up *recorder.Server, from string) string {
	t.Helper()
	var got []recorder.Message
	for _, m := range up.Messages() {
		if m.From == from {
			got = append(got, m)
		}
	}
	if len(got) != 1 {
		t.Fatalf("upstream has %d messages from %s, want 1", len(got), from)
	}
	return string(got[0].Data)
}

// spamdField returns a header field's unfolded value ("" if absent) and
// how often the field occurs.
func spamdField(data, name string) (string, int) {
	head, _, _ := strings.Cut(data, "\r\n\r\n")
	head = strings.ReplaceAll(head, "\r\n\t", " ")
	head = strings.ReplaceAll(head, "\r\n ", "  ")
	var value string
	n := 0
	for _, line := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			if n == 0 {
				value = strings.TrimSpace(v)
			}
			n++
		}
	}
	return value, n
}

// spamdTests returns the rule names of an X-Spam-Status value (folding
// leaves a space after a comma).
func spamdTests(status string) []string {
	_, tests, _ := strings.Cut(status, "tests=")
	return strings.FieldsFunc(tests, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// spamdDecision returns the spamd decision of the message log line of
// client.
func spamdDecision(t *testing.T, gw *gateway, client string) map[string]any {
	t.Helper()
	rec := gw.Log.WaitForClient(t, "message", client)
	ds, _ := rec["decisions"].([]any)
	for _, d := range ds {
		if m, ok := d.(map[string]any); ok && m["filter"] == "spamd" {
			return m
		}
	}
	t.Fatalf("no spamd decision in %v", rec)
	return nil
}

// One spamd for the whole file (it takes seconds to start), three
// gateways in front of it.
func TestContentSpamd(t *testing.T) {
	t.Parallel()
	sd := spamdtest.Start(t)
	defer func() {
		if t.Failed() {
			t.Logf("spamd log:\n%s", sd.Log())
		}
	}()

	// Refuse at 10, tag at 5, over TCP; an allow-listed sender.
	up, addr, gw := plainGateway(t, fmt.Sprintf(`filters:
  spamd: {address: %q, reject_score: 10, tag_score: 5, timeout: 20s}
  senders: {allow: [trusted@example.net]}
`, sd.Addr()))

	t.Run("gtube refused", func(t *testing.T) {
		err := sendOne(t, "127.0.7.1", addr, "spammer@example.net", spamdGTUBE)
		wantCode(t, "GTUBE", err, 550, "5.7.1")
		msg := err.(*smtp.SMTPError).Message
		if !strings.HasPrefix(msg, "Message refused as spam (score 100") || !strings.HasSuffix(msg, ")") {
			t.Fatalf("reply text %q", msg)
		}
		for _, m := range up.Messages() {
			if m.From == "spammer@example.net" {
				t.Fatal("the refused message reached the upstream")
			}
		}
		d := spamdDecision(t, gw, "127.0.7.1")
		if r := fmt.Sprint(d["reason"]); d["verdict"] != "reject" || !strings.Contains(r, ">= reject_score 10 (") ||
			!strings.Contains(r, "GTUBE") {
			t.Errorf("decision %v", d)
		}
	})
	t.Run("ham delivered with status", func(t *testing.T) {
		// A forged verdict from the sender is replaced by ours.
		text := "X-Spam-Status: No, score=-100.0 required=5.0 tests=none\r\nX-Spam-Flag: NO\r\n" + spamdHam()
		if err := sendOne(t, "127.0.7.2", addr, "carol@example.net", text); err != nil {
			t.Fatal(err)
		}
		data := spamdDelivered(t, up, "carol@example.net")
		st, n := spamdField(data, "X-Spam-Status")
		if n != 1 || !strings.HasPrefix(st, "No, score=") || !strings.Contains(st, " required=5.0 tests=") ||
			strings.Contains(st, "-100.0") {
			t.Errorf("X-Spam-Status %q (%d fields):\n%s", st, n, data)
		}
		if sc, n := spamdField(data, "X-Spam-Score"); n != 1 || !strings.Contains(st, "score="+sc+" ") {
			t.Errorf("X-Spam-Score %q (%d fields) does not match %q", sc, n, st)
		}
		if _, n := spamdField(data, "X-Spam-Flag"); n != 0 {
			t.Errorf("ham flagged:\n%s", data)
		}
		// Above our Received field, like the other filters' fields.
		if strings.Index(data, "X-Spam-Status:") > strings.Index(data, "Received:") {
			t.Errorf("X-Spam-Status below Received:\n%s", data)
		}
		d := spamdDecision(t, gw, "127.0.7.2")
		if d["verdict"] != "continue" || !strings.Contains(fmt.Sprint(d["reason"]), "< tag_score 5") {
			t.Errorf("decision %v", d)
		}
	})
	t.Run("allow-listed sender not scored", func(t *testing.T) {
		if err := sendOne(t, "127.0.7.3", addr, "trusted@example.net", spamdGTUBE); err != nil {
			t.Fatalf("GTUBE from an allow-listed sender: %v", err)
		}
		data := spamdDelivered(t, up, "trusted@example.net")
		if strings.Contains(data, "X-Spam-") {
			t.Errorf("allow-listed message scored:\n%s", data)
		}
		if d := spamdDecision(t, gw, "127.0.7.3"); d["skipped"] != true {
			t.Errorf("decision %v, want skipped", d)
		}
	})

	t.Run("tag only", func(t *testing.T) {
		// reject_score 0 never refuses; over the unix socket.
		up, addr, _ := plainGateway(t, fmt.Sprintf(`filters:
  spamd: {address: "unix:%s", reject_score: 0, tag_score: 2, timeout: 20s}
`, sd.Socket()))
		if err := sendOne(t, "127.0.7.4", addr, "spammer@example.net", spamdGTUBE); err != nil {
			t.Fatalf("GTUBE with tag_score only: %v", err)
		}
		data := spamdDelivered(t, up, "spammer@example.net")
		if fl, n := spamdField(data, "X-Spam-Flag"); fl != "YES" || n != 1 {
			t.Errorf("X-Spam-Flag %q (%d):\n%s", fl, n, data)
		}
		if st, _ := spamdField(data, "X-Spam-Status"); !strings.HasPrefix(st, "Yes, score=100") ||
			!strings.Contains(st, " required=2.0 tests=") || !slices.Contains(spamdTests(st), "GTUBE") {
			t.Errorf("X-Spam-Status %q", st)
		}
		if sc, _ := spamdField(data, "X-Spam-Score"); !strings.HasPrefix(sc, "100") {
			t.Errorf("X-Spam-Score %q", sc)
		}
	})

	t.Run("shadow", func(t *testing.T) {
		// mode: shadow logs the refusal and delivers the message as it
		// came: neither refused nor flagged.
		up, addr, gw := plainGateway(t, fmt.Sprintf(`filters:
  spamd: {address: %q, reject_score: 10, mode: shadow, timeout: 20s}
`, sd.Addr()))
		if err := sendOne(t, "127.0.7.7", addr, "spammer@example.net", spamdGTUBE); err != nil {
			t.Fatalf("GTUBE in shadow mode: %v", err)
		}
		data := spamdDelivered(t, up, "spammer@example.net")
		for _, name := range []string{"X-Spam-Flag", "X-Spam-Score", "X-Spam-Status"} {
			if v, n := spamdField(data, name); n != 0 {
				t.Errorf("%s: %q added in shadow mode:\n%s", name, v, data)
			}
		}
		if d := spamdDecision(t, gw, "127.0.7.7"); d["verdict"] != "reject" || d["shadow"] != true {
			t.Errorf("decision %v, want a shadow reject", d)
		}
	})

	t.Run("spamd unavailable", func(t *testing.T) {
		// Nothing listens there: on_error decides.
		dead := freeAddr(t)
		_, tempAddr, _ := plainGateway(t, fmt.Sprintf("filters:\n  spamd: {address: %q, on_error: tempfail, timeout: 5s}\n", dead))
		err := sendOne(t, "127.0.7.5", tempAddr, "carol@example.net", spamdHam())
		wantCode(t, "spamd down, on_error tempfail", err, 451, "4.7.1")
		if msg := err.(*smtp.SMTPError).Message; msg != "Spam check unavailable, try again later" {
			t.Errorf("reply text %q", msg)
		}

		up, accAddr, gw := plainGateway(t, fmt.Sprintf("filters:\n  spamd: {address: %q, on_error: accept, timeout: 5s}\n", dead))
		if err := sendOne(t, "127.0.7.6", accAddr, "carol@example.net", spamdHam()); err != nil {
			t.Fatalf("spamd down, on_error accept: %v", err)
		}
		if data := spamdDelivered(t, up, "carol@example.net"); strings.Contains(data, "X-Spam-") {
			t.Errorf("unscored message tagged:\n%s", data)
		}
		if d := spamdDecision(t, gw, "127.0.7.6"); !strings.HasPrefix(fmt.Sprint(d["reason"]), "spamd unavailable: ") {
			t.Errorf("decision %v", d)
		}
		if len(gw.Log.Find("spamd unavailable, message not scored")) == 0 {
			t.Errorf("no warning logged:\n%s", gw.Log.String())
		}
	})
}
