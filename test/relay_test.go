package test

import (
	"testing"
	"time"

	"mailgate/internal/recorder"
)

// Relay control: local domains are open to all, other domains only for
// relay.networks (or authenticated users, see TestAuth*).
func TestRelayControl(t *testing.T) {
	up, addr, g := plainGateway(t, "relay: {networks: [127.0.0.20/32]}\n")

	stranger := client(t, "127.0.0.21", addr)
	if err := stranger.Mail("alice@example.net", nil); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"someone@elsewhere.test", "bob@sub.example.com", "bob@example.com.evil.test"} {
		err := stranger.Rcpt(rcpt, nil)
		wantCode(t, "relay to "+rcpt, err, 554, "5.7.1")
		if want := "Relay access denied"; !containsText(err, want) {
			t.Errorf("%s: reply %v does not say %q", rcpt, err, want)
		}
	}
	if up.Sessions() != 0 {
		t.Errorf("a refused relay attempt opened %d upstream sessions", up.Sessions())
	}
	stranger.Quit()
	rec := g.Log.WaitForClient(t, "message", "127.0.0.21")
	if rec["outcome"] != "rejected at rcpt" || len(rec["rejected_rcpts"].([]any)) != 3 {
		t.Errorf("log of the refused relay attempt: %v", rec)
	}

	trusted := client(t, "127.0.0.20", addr)
	if err := send(trusted, "app@example.com", []string{"someone@elsewhere.test"}, testMessage); err != nil {
		t.Fatalf("relay from trusted network: %v", err)
	}
	if _, err := up.WaitMessages(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// Every relay-exploit form is refused, even when it names a local domain.
func TestRelayExploits(t *testing.T) {
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	// Even a trusted network may not use these forms.
	startGateway(t, baseConfig(addr, up.Addr(), "relay: {networks: [127.0.0.22/32]}\n"), addr)
	exploits := []string{
		"<victim%elsewhere.test@example.com>", // percent hack
		"<victim%elsewhere.test>",             // percent hack without domain
		"<elsewhere.test!victim>",             // bang path
		"<elsewhere.test!victim@example.com>", // bang path via local domain
		"<@example.com:victim@elsewhere.test>",
		"<@example.com,@example.org:victim@elsewhere.test>", // source routes
		`<"victim@elsewhere.test"@example.com>`,             // quoted local parts
		`<"victim%elsewhere.test"@example.com>`,
		`<"elsewhere.test!victim"@example.com>`,
		"<victim@elsewhere.test@example.com>", // several @
		"<victim@[192.0.2.1]>",                // literal that is not ours
		"<victim>",                            // no domain
	}
	for _, src := range []string{"127.0.0.23", "127.0.0.22"} {
		r := dialRaw(t, src, addr)
		r.greet()
		r.cmd("MAIL FROM:<alice@example.net>", "250")
		for _, e := range exploits {
			got := r.cmd("RCPT TO:"+e, "5")
			if got[:3] != "554" && got[:3] != "501" && got[:3] != "553" {
				t.Errorf("from %s RCPT TO:%s -> %q, want a 5xx refusal", src, e, got)
			}
			if got[:3] == "250" {
				t.Errorf("exploit accepted: %s", e)
			}
		}
		r.cmd("QUIT", "221")
	}
	if n := len(up.Messages()); n != 0 {
		t.Fatalf("upstream recorded %d messages", n)
	}
}

// An address literal naming the gateway's own address is local.
func TestOwnAddressLiteralIsLocal(t *testing.T) {
	_, addr, _ := plainGateway(t, "")
	r := dialRaw(t, "127.0.0.24", addr)
	r.greet()
	r.cmd("MAIL FROM:<alice@example.net>", "250")
	r.cmd("RCPT TO:<postmaster@[127.0.0.1]>", "250")
	r.cmd("RCPT TO:<postmaster>", "250")
}
