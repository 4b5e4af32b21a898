package relay

import (
	"context"
	"net/netip"
	"testing"

	"mailgate/internal/mailaddr"
	"mailgate/pipeline"
)

func TestRelay(t *testing.T) {
	f := New(Config{
		Domains:       []string{"Example.com", "example.org."},
		Networks:      []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		Authenticated: true,
	})
	noAuth := New(Config{Domains: []string{"example.com"}, Authenticated: false})
	cases := []struct {
		f      *Filter
		client string
		user   string
		rcpt   string
		want   pipeline.Action
	}{
		{f, "192.0.2.1", "", "bob@example.com", pipeline.Continue},
		{f, "192.0.2.1", "", "bob@EXAMPLE.ORG", pipeline.Continue},
		{f, "192.0.2.1", "", "bob@sub.example.com", pipeline.Reject},
		{f, "192.0.2.1", "", "bob@elsewhere.test", pipeline.Reject},
		{f, "192.0.2.1", "", "postmaster", pipeline.Continue},
		{f, "192.0.2.1", "", "bob@[198.51.100.1]", pipeline.Continue}, // our own address
		{f, "192.0.2.1", "", "bob@[198.51.100.2]", pipeline.Reject},
		{f, "10.1.2.3", "", "bob@elsewhere.test", pipeline.Continue},
		{f, "::ffff:10.1.2.3", "", "bob@elsewhere.test", pipeline.Continue},
		{f, "10.2.0.1", "", "bob@elsewhere.test", pipeline.Reject},
		{f, "192.0.2.1", "alice", "bob@elsewhere.test", pipeline.Continue},
		{noAuth, "192.0.2.1", "alice", "bob@elsewhere.test", pipeline.Reject},
	}
	for _, tc := range cases {
		s := &pipeline.Session{
			Client:   netip.AddrPortFrom(netip.MustParseAddr(tc.client), 40000),
			Local:    netip.MustParseAddrPort("198.51.100.1:25"),
			AuthUser: tc.user,
		}
		a, err := mailaddr.Parse(tc.rcpt)
		if err != nil {
			t.Fatal(err)
		}
		v := tc.f.Rcpt(context.Background(), s, &pipeline.Transaction{}, a)
		if v.Action != tc.want {
			t.Errorf("client %s user %q rcpt %s: %v (%s), want %v", tc.client, tc.user, tc.rcpt, v.Action, v.Reason, tc.want)
		}
		if v.Action == pipeline.Reject && v.Reply.String() != "554 5.7.1 Relay access denied" {
			t.Errorf("reply %q", v.Reply.String())
		}
	}
}
