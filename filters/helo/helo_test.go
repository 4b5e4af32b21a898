package helo

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"

	"mailgate/pipeline"
)

var own = []string{"mx1.example.com", "Example.com", "example.org."}

func session(client, helo string) *pipeline.Session {
	ip := netip.MustParseAddr(client)
	local := netip.MustParseAddrPort("198.51.100.1:25")
	if ip.Is6() && !ip.Is4In6() {
		local = netip.MustParseAddrPort("[2001:db8::1]:25")
	}
	return &pipeline.Session{Client: netip.AddrPortFrom(ip, 40000), Local: local, Helo: helo}
}

// TestData runs testdata/helo.txt: "client HELO -> reply" lines, with
// every check on.
func TestData(t *testing.T) {
	f, err := New(Config{RequireFQDN: true, RejectOwnName: true, RejectIPLiteralMismatch: true, OwnNames: own})
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.Open("testdata/helo.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	n := 0
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		in, want, ok := strings.Cut(line, " -> ")
		fields := strings.Fields(in)
		if !ok || len(fields) != 2 {
			t.Fatalf("bad line %q", line)
		}
		n++
		v := f.Helo(context.Background(), session(fields[0], fields[1]))
		got := "pass"
		if v.Action != pipeline.Continue {
			got = v.Reply.String()
			if v.Reason == "" {
				t.Errorf("%s: no reason", line)
			}
		}
		if got != want {
			t.Errorf("client %s HELO %s: %q (%s), want %q", fields[0], fields[1], got, v.Reason, want)
		}
	}
	if err := sc.Err(); err != nil || n == 0 {
		t.Fatalf("reading testdata: %v, %d cases", err, n)
	}
}

// TestSwitches turns each check off, and tries the score action.
func TestSwitches(t *testing.T) {
	cases := []struct {
		name   string
		c      Config
		client string
		helo   string
		action pipeline.Action
		tag    string
	}{
		{"non-FQDN allowed", Config{RejectOwnName: true, RejectIPLiteralMismatch: true}, "192.0.2.10", "localhost", pipeline.Continue, ""},
		{"invalid allowed", Config{}, "192.0.2.10", "mail!.example.net", pipeline.Continue, ""},
		{"bare IP allowed", Config{}, "192.0.2.10", "192.0.2.10", pipeline.Continue, ""},
		{"bare own IP", Config{RejectOwnName: true}, "192.0.2.10", "198.51.100.1", pipeline.Reject, ""},
		{"own name allowed", Config{RequireFQDN: true, RejectIPLiteralMismatch: true, OwnNames: own}, "192.0.2.10", "mx1.example.com", pipeline.Continue, ""},
		{"mismatch allowed", Config{RequireFQDN: true, RejectOwnName: true}, "192.0.2.10", "[192.0.2.11]", pipeline.Continue, ""},
		{"own IP, mismatch only", Config{RejectIPLiteralMismatch: true}, "192.0.2.10", "[198.51.100.1]", pipeline.Reject, ""},
		{"score non-FQDN", Config{RequireFQDN: true, Action: "score", Score: 2}, "192.0.2.10", "localhost", pipeline.Score, "helo-non-fqdn"},
		{"score invalid", Config{RequireFQDN: true, Action: "score"}, "192.0.2.10", "a..b", pipeline.Score, "helo-invalid"},
		{"score forged", Config{RejectOwnName: true, OwnNames: own, Action: "score"}, "192.0.2.10", "example.com", pipeline.Score, "helo-forged"},
		{"score mismatch", Config{RejectIPLiteralMismatch: true, Action: "score"}, "192.0.2.10", "[192.0.2.11]", pipeline.Score, "helo-literal-mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			v := f.Helo(context.Background(), session(tc.client, tc.helo))
			if v.Action != tc.action {
				t.Fatalf("%v (%s), want %v", v.Action, v.Reason, tc.action)
			}
			if v.Action == pipeline.Score && (v.Tag != tc.tag || v.Score != max(tc.c.Score, 1)) {
				t.Errorf("score %v %q, want %v %q", v.Score, v.Tag, max(tc.c.Score, 1), tc.tag)
			}
		})
	}
}

// The reply never echoes what the client sent.
func TestNoEcho(t *testing.T) {
	f, _ := New(Config{RequireFQDN: true, RejectOwnName: true, RejectIPLiteralMismatch: true, OwnNames: own})
	for _, helo := range []string{"evil", "evil!.example", "[evil]", "1.2.3.4", "[192.0.2.99]", "mx1.example.com"} {
		v := f.Helo(context.Background(), session("192.0.2.10", helo))
		if v.Action != pipeline.Reject {
			t.Errorf("%s: %v", helo, v.Action)
		}
		if r := v.Reply.String(); strings.Contains(r, strings.Trim(helo, "[]")) {
			t.Errorf("%s: reply %q echoes it", helo, r)
		}
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{Action: "tempfail"}); err == nil {
		t.Error("action tempfail accepted")
	}
}
