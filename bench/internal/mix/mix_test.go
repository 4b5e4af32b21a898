package mix

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"net/mail"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

func TestParseMix(t *testing.T) {
	cycle, err := ParseMix(DefaultMix)
	if err != nil {
		t.Fatal(err)
	}
	count := map[Kind]int{}
	for _, k := range cycle {
		count[k]++
	}
	if len(cycle) != 20 || count[Text] != 10 || count[HTML] != 7 || count[Attach] != 3 {
		t.Fatalf("cycle %v: want 20 messages, 10 text, 7 html, 3 attach", cycle)
	}
	// interleaved: never two attachments in a row
	for i := range cycle {
		if cycle[i] == Attach && cycle[(i+1)%len(cycle)] == Attach {
			t.Errorf("cycle %v: two attachments in a row", cycle)
		}
	}
	for _, bad := range []string{"", "text", "text:x", "pdf:3", "text:0"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

// zoneKey is the public key that bench.zone publishes for
// bench._domainkey.example.net.
func zoneKey(t *testing.T) string {
	t.Helper()
	zone, err := os.ReadFile("../../dnsserver/bench.zone")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^bench\._domainkey\.example\.net\.\s+\d+\s+IN\s+TXT\s+(.*)$`).FindSubmatch(zone)
	if m == nil {
		t.Fatal("bench.zone has no bench._domainkey.example.net TXT record")
	}
	return strings.Join(regexp.MustCompile(`"([^"]*)"`).FindAllString(string(m[1]), -1), "")
}

func TestMessagesVerify(t *testing.T) {
	txt := strings.ReplaceAll(zoneKey(t), `"`, "")
	key, err := BenchKey()
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	if !strings.Contains(txt, "p="+base64.StdEncoding.EncodeToString(der)) {
		t.Fatalf("bench.zone's key %q is not bench-dkim.pem's public key", txt)
	}
	lookup := func(domain string) ([]string, error) {
		if domain != "bench._domainkey.example.net" {
			t.Errorf("looked up %q", domain)
		}
		return []string{txt}, nil
	}
	for _, tc := range []struct {
		k      Kind
		tamper bool
		want   []string
	}{
		{Text, false, []string{"https://www." + ShopDomain + "/"}},
		{HTML, false, []string{"href=3D\"https://click." + TrackDomain, "cdn." + CDNDomain}},
		{Attach, false, []string{"application/pdf", "news." + NewsDomain}},
		{Listed, false, []string{ListedDomain}},
		{EICAR, false, []string{"eicar-"}},
		{Text, true, nil},
	} {
		o := Options{Seed: 7, Tamper: tc.tamper}
		msg, err := Build(o, tc.k, 3)
		if err != nil {
			t.Fatal(err)
		}
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) != 1 {
			t.Fatalf("%s: verify: %v, %d signatures", tc.k, err, len(vs))
		}
		if (vs[0].Err == nil) == tc.tamper {
			t.Errorf("%s tamper=%v: DKIM result %v", tc.k, tc.tamper, vs[0].Err)
		}
		if _, err := mail.ReadMessage(bytes.NewReader(msg)); err != nil {
			t.Errorf("%s: %v", tc.k, err)
		}
		unwrapped := bytes.ReplaceAll(msg, []byte("=\r\n"), nil) // quoted-printable soft breaks
		for _, w := range tc.want {
			if !bytes.Contains(unwrapped, []byte(w)) {
				t.Errorf("%s: no %q in the message", tc.k, w)
			}
		}
		if bytes.Contains(msg, []byte("\n\n")) || bytes.Count(msg, []byte("\n")) != bytes.Count(msg, []byte("\r\n")) {
			t.Errorf("%s: bare LF in the message", tc.k)
		}
	}
}

func TestSizesAndUniqueness(t *testing.T) {
	cycle, _ := ParseMix(DefaultMix)
	msgs, err := BuildAll(Options{Seed: 1}, cycle, 40)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, m := range msgs {
		n := len(m)
		switch cycle[i%len(cycle)] {
		case Text:
			if n < 1000 || n > 4000 {
				t.Errorf("text message of %d bytes", n)
			}
		case HTML:
			if n < 5000 || n > 16000 {
				t.Errorf("html message of %d bytes", n)
			}
		case Attach:
			if n < 270000 || n > 290000 {
				t.Errorf("attachment message of %d bytes", n)
			}
		}
		if seen[string(m)] {
			t.Errorf("message %d repeats another", i)
		}
		seen[string(m)] = true
	}
	first := 0
	for cycle[first] != Attach {
		first++
	}
	other, _ := Build(Options{Seed: 2}, Attach, first)
	if bytes.Equal(other[len(other)-2000:], msgs[first][len(msgs[first])-2000:]) {
		t.Error("two seeds give the same attachment")
	}
}

func TestDotStuff(t *testing.T) {
	got := string(DotStuff([]byte(".a\r\nb\r\n.\r\n..c")))
	if want := "..a\r\nb\r\n..\r\n...c\r\n"; got != want {
		t.Errorf("DotStuff = %q, want %q", got, want)
	}
}

func FuzzParseMix(f *testing.F) {
	for _, s := range []string{DefaultMix, "eicar:1", "text:3,html:0", "html:1000,attach:999", "x:1", ",", "text:-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cycle, err := ParseMix(s)
		if err != nil {
			return
		}
		if len(cycle) == 0 || len(cycle) > 5*1000 {
			t.Fatalf("ParseMix(%q): a cycle of %d", s, len(cycle))
		}
		for _, k := range cycle {
			if _, err := ParseMix(string(k) + ":1"); err != nil {
				t.Fatalf("ParseMix(%q) gave unknown kind %q", s, k)
			}
		}
	})
}
