package pipeline

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The gateway's Received field: the client's HELO, name and address, with
// nothing in the HELO that could read as another host or address to the
// servers and spam scorers that parse the field.
func TestReceivedField(t *testing.T) {
	s := &Session{Helo: "evil (x) [1.2.3.4]; by\r\nfoo", ClientHostname: "mail.example.net", Extended: true,
		Client: netip.MustParseAddrPort("93.184.215.14:40000")}
	tx := &Transaction{Rcpts: []Address{{Local: "bob", Domain: "example.com"}}}
	now := time.Date(2026, 11, 24, 1, 2, 3, 0, time.UTC)
	got := ReceivedField("mx.gateway.test", s, tx, "abc.1", now)
	want := "Received: from evilx1.2.3.4by??foo (mail.example.net [93.184.215.14])\r\n" +
		"\tby mx.gateway.test with ESMTP id abc.1 for <bob@example.com>;\r\n" +
		"\tTue, 24 Nov 2026 01:02:03 +0000\r\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	s.Client = netip.MustParseAddrPort("[2001:db8::1]:25")
	s.Helo = ""
	tx.Rcpts = append(tx.Rcpts, Address{Local: "carol", Domain: "example.com"})
	got = ReceivedField("mx.gateway.test", s, tx, "abc.2", now)
	if !strings.Contains(got, "from unknown (mail.example.net [IPv6:2001:db8::1])") || strings.Contains(got, "for <") {
		t.Errorf("IPv6, no HELO, two recipients: %q", got)
	}
}
