package test

// URL block lists (filters.surbl) end to end: the real binary, a real DNS
// server in this process (dnstest) holding the lists, and the recording
// upstream. Clients come from 127.0.6.0/24 (this file's range); every
// test has a gateway and client addresses of its own.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"mailgate/internal/dnstest"
	"mailgate/internal/recorder"
)

// surblZones are the lists of these tests: a combined list read by
// bitmask, as multi.surbl.org is (8 = phishing, 16 = malware), and one
// read by return codes, as multi.uribl.com is.
const surblZones = `[{zone: multi.surbl.test, mask: 24}, {zone: black.uribl.test, codes: ["127.0.0.2-127.0.0.14"]}]`

// surblDNS lists a phishing domain (bit 8), a spamvertised one, a
// phishing site on a bare address, and a domain that is only on a list
// of multi.surbl.test the mask does not select (bit 64).
var surblDNS = []string{
	"spam-shop.example.multi.surbl.test. 300 IN A 127.0.0.8",
	"pills.example.black.uribl.test. 300 IN A 127.0.0.2",
	"1.2.0.192.multi.surbl.test. 300 IN A 127.0.0.16",
	"listed.example.multi.surbl.test. 300 IN A 127.0.0.24",
	"other-list.example.multi.surbl.test. 300 IN A 127.0.0.64",
}

// surblGateway starts the DNS server, the upstream and a gateway with
// the filters given (YAML lines under "filters:").
func surblGateway(t *testing.T, filters string, dnsSetup func(*dnstest.Server)) (*recorder.Server, string, *gateway) {
	t.Helper()
	dns := dnstest.New(t, surblDNS...)
	if dnsSetup != nil {
		dnsSetup(dns)
	}
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	extra := fmt.Sprintf("dns: {servers: [%q], timeout: 500ms}\nstate: {store: \"memory:\"}\nfilters:\n%s",
		dns.Addr(), filters)
	return up, addr, startGateway(t, baseConfig(addr, up.Addr(), extra), addr)
}

// surblText is a plain-text message.
func surblText(from, body string) string {
	return fmt.Sprintf("From: %s\r\nTo: bob@example.com\r\nSubject: offer\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", from, body)
}

// surblQPHTML is a multipart/alternative message whose HTML part is
// quoted-printable, the link's host broken by a soft line break: only a
// decoder finds "spam-shop.example".
func surblQPHTML(from string) string {
	return "From: " + from + "\r\nTo: bob@example.com\r\nSubject: Your order\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=\"alt-1\"\r\n\r\n" +
		"--alt-1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the HTML version.\r\n" +
		"--alt-1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"<html><body><p>Confirm your order <a href=3D\"https://secure.spam-sh=\r\n" +
		"op.example/confirm?id=3D42\">here</a>.</p></body></html>\r\n" +
		"--alt-1--\r\n"
}

// Listed domains are refused wherever the link is: an HTML href in a
// quoted-printable part, plain text, a numeric host, a host under a
// listed domain. Clean mail, and a domain on a list the mask does not
// select, are delivered as sent.
func TestSURBL(t *testing.T) {
	t.Parallel()
	up, addr, g := surblGateway(t, "  surbl: {zones: "+surblZones+"}\n", nil)

	err := sendOne(t, "127.0.6.1", addr, "qp@example.net", surblQPHTML("qp@example.net"))
	refusedUndelivered(t, up, "HTML href in a quoted-printable part", err, 554, "5.7.1",
		"Message refused: URL domain spam-shop.example is listed at multi.surbl.test", "qp@example.net")
	stateDecision(t, g, "127.0.6.1", "surbl", "listed: spam-shop.example at multi.surbl.test=127.0.0.8")

	err = sendOne(t, "127.0.6.2", addr, "text@example.net",
		surblText("text@example.net", "Cheap meds at http://www.pills.example/buy today only!"))
	refusedUndelivered(t, up, "plain-text URL", err, 554, "5.7.1",
		"Message refused: URL domain pills.example is listed at black.uribl.test", "text@example.net")

	err = sendOne(t, "127.0.6.3", addr, "ip@example.net",
		surblText("ip@example.net", "Log in to your bank: http://3221225985/login.php"))
	refusedUndelivered(t, up, "numeric host", err, 554, "5.7.1",
		"Message refused: URL domain 192.0.2.1 is listed at multi.surbl.test", "ip@example.net")

	err = sendOne(t, "127.0.6.4", addr, "sub@example.net",
		surblText("sub@example.net", "Details: http://a.b.listed.example/x"))
	refusedUndelivered(t, up, "host under a listed domain", err, 554, "5.7.1",
		"Message refused: URL domain listed.example is listed at multi.surbl.test", "sub@example.net")

	clean := surblText("clean@example.net",
		"The agenda is at https://intranet.example.org/agenda and http://other-list.example/ (not phishing).\r\n"+
			"See also www.example.com and report.pdf.")
	if err := sendOne(t, "127.0.6.5", addr, "clean@example.net", clean); err != nil {
		t.Fatalf("clean message: %v", err)
	}
	stateGot(t, up, "clean@example.net", "bob@example.com")
	if got := string(stateFrom(up, "clean@example.net")[0].Data); !strings.Contains(got, clean) {
		t.Errorf("the upstream got a different message:\n%s", got)
	}
	stateDecision(t, g, "127.0.6.5", "surbl", "none listed of 3 domains")
	stateTotal(t, up, 1)
}

// A list that does not answer: by default the message is delivered (a
// dead list never blocks mail); with on_dns_error: tempfail it is
// deferred, so the sender retries. Either way within the timeout.
func TestSURBLDeadList(t *testing.T) {
	t.Parallel()
	dead := func(s *dnstest.Server) { s.Blackhole("multi.surbl.test") }
	for _, policy := range []string{"skip", "tempfail"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			src := map[string]string{"skip": "127.0.6.10", "tempfail": "127.0.6.11"}[policy]
			from := "dead-" + policy + "@example.net"
			up, addr, g := surblGateway(t,
				"  surbl: {zones: [{zone: multi.surbl.test}], timeout: 1s, on_dns_error: "+policy+"}\n", dead)
			start := time.Now()
			err := sendOne(t, src, addr, from, surblText(from, "See http://spam-shop.example/ now."))
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("a dead list held the message %v", d)
			}
			if policy == "tempfail" {
				refusedUndelivered(t, up, "dead list", err, 451, "4.4.3", "URL list lookup failed, try again later", from)
				return
			}
			if err != nil {
				t.Fatalf("dead list, skip: %v", err)
			}
			stateGot(t, up, from, "bob@example.com")
			stateDecision(t, g, src, "surbl", "lookups failed (multi.surbl.test: timeout ×1), skipped")
		})
	}
}

// action: score: a listing adds points instead of refusing; the
// scoring filter's tag threshold tells the internal server in a header.
func TestSURBLScore(t *testing.T) {
	t.Parallel()
	up, addr, g := surblGateway(t,
		"  surbl: {zones: "+surblZones+", action: score, score: 3}\n  scoring: {reject: 5, tag: 1}\n", nil)
	from := "score@example.net"
	if err := sendOne(t, "127.0.6.20", addr, from, surblText(from, "http://pills.example/")); err != nil {
		t.Fatalf("scored message: %v", err)
	}
	stateGot(t, up, from, "bob@example.com")
	if got := string(stateFrom(up, from)[0].Data); !strings.Contains(got, "X-Mailgate-Score: 3") || !strings.Contains(got, "surbl") {
		t.Errorf("no X-Mailgate-Score header naming surbl:\n%.600s", got)
	}
	d := stateDecision(t, g, "127.0.6.20", "surbl", "listed: pills.example at black.uribl.test=127.0.0.2")
	if d["verdict"] != "score" {
		t.Errorf("decision %v, want a score", d)
	}
}
