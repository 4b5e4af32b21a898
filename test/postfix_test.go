package test

import (
	"strings"
	"testing"
	"time"

	"mailgate/internal/postfixtest"
)

// The gateway in front of a real internal server: Debian's Postfix, with
// virtual mailboxes for two users of example.com. Mail is delivered into
// its mailboxes; Postfix's own "User unknown" refusal reaches the client
// verbatim; relaying is still refused by the gateway.
func TestPostfixUpstream(t *testing.T) {
	if err := postfixtest.Available(); err != nil {
		if inCI() {
			t.Fatalf("Postfix is required in CI: %v", err)
		}
		t.Skip(err)
	}
	pf := postfixtest.Start(t, postfixtest.Options{
		Domains: []string{"example.com"},
		Users:   []string{"bob", "carol"},
	})
	addr := freeAddr(t)
	g := startGateway(t, baseConfig(addr, pf.Addr, ""), addr)

	c := client(t, "127.0.0.80", addr)
	if err := c.Mail("alice@example.net", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("nobody@example.com", nil)
	wantCode(t, "unknown user at Postfix", err, 550, "5.1.1")
	if !strings.Contains(err.Error(), "User unknown") {
		t.Errorf("Postfix's refusal was not passed verbatim: %v", err)
	}
	wantCode(t, "relay attempt", c.Rcpt("someone@elsewhere.test", nil), 554, "5.7.1")
	for _, r := range []string{"bob@example.com", "carol@example.com"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(testMessage))
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	for _, r := range []string{"bob@example.com", "carol@example.com"} {
		msgs, err := pf.WaitDelivered(r, 1, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %v\n%s", r, err, pf.Log())
		}
		m := strings.ReplaceAll(string(msgs[0]), "\r\n", "\n")
		if !strings.Contains(strings.ReplaceAll(m, "\n\t", " "), "by mx.gateway.test with ESMTP id ") {
			t.Errorf("%s: our Received header is missing:\n%s", r, m)
		}
		if !strings.Contains(m, "Hello Bob.") {
			t.Errorf("%s: body missing:\n%s", r, m)
		}
	}
	rec := g.Log.WaitForClient(t, "message", "127.0.0.80")
	if rec["outcome"] != "delivered" {
		t.Errorf("message log: %v", rec)
	}
}
