package surbl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"mailgate/internal/dnslist"
	"mailgate/internal/dnstest"
	"mailgate/internal/mimeparse"
	"mailgate/internal/resolver"
	"mailgate/pipeline"
)

// timeout is the test resolver's: long enough for a loaded machine to
// answer from 127.0.0.1, short enough to keep the blackhole cases quick.
const timeout = 300 * time.Millisecond

// testCase is one file of testdata: the filter's YAML block (SPEC §3
// keys), the DNS data, the message (its MIME parse and its raw form),
// and the verdict wanted ("pass", "score N", or the exact reply) with
// its exact reason.
type testCase struct {
	Config struct {
		Zones      []yamlZone `yaml:"zones"`
		MaxDomains int        `yaml:"max_domains"`
		Action     string     `yaml:"action"`
		Score      float64    `yaml:"score"`
		Timeout    string     `yaml:"timeout"`
		OnDNSError string     `yaml:"on_dns_error"`
	} `yaml:"config"`
	DNS       []string `yaml:"dns"`
	Blackhole []string `yaml:"blackhole"`
	ServFail  []string `yaml:"servfail"`
	// Parse is "parsed" (default: Parts and Malformed below), "none"
	// (no MIME parse ran) or "skipped" (too large to parse).
	Parse     string     `yaml:"parse"`
	Malformed string     `yaml:"malformed"`
	Parts     []yamlPart `yaml:"parts"`
	Raw       string     `yaml:"raw"`
	Want      string     `yaml:"want"`
	Reason    string     `yaml:"reason"`
}

type yamlZone struct {
	Zone  string   `yaml:"zone"`
	Codes []string `yaml:"codes"`
	Mask  uint32   `yaml:"mask"`
}

type yamlPart struct {
	Type       string `yaml:"type"`
	Attachment bool   `yaml:"attachment"`
	Content    string `yaml:"content"`
}

// message builds what the mime filter would have left in t.MIME.
func (tc *testCase) message() *mimeparse.Message {
	switch tc.Parse {
	case "none":
		return nil
	case "skipped":
		return &mimeparse.Message{Skipped: true}
	}
	m := &mimeparse.Message{Malformed: tc.Malformed}
	for _, p := range tc.Parts {
		part := mimeparse.Part{ContentType: p.Type, Content: []byte(p.Content), HTML: p.Type == "text/html"}
		part.Text = (p.Type == "text/plain" || p.Type == "text/html") && !p.Attachment
		if p.Attachment {
			part.Disposition = "attachment"
		}
		m.Parts = append(m.Parts, part)
	}
	return m
}

// newResolver is the gateway's real resolver pointed at srv.
func newResolver(t testing.TB, srv *dnstest.Server) *resolver.Resolver {
	t.Helper()
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// show renders a verdict as the testdata files write it.
func show(v pipeline.Verdict) string {
	switch v.Action {
	case pipeline.Continue:
		return "pass"
	case pipeline.Score:
		return "score " + strconv.FormatFloat(v.Score, 'f', -1, 64)
	}
	return v.Reply.String()
}

func rawReader(s string) func() io.Reader {
	return func() io.Reader { return strings.NewReader(s) }
}

// TestCases runs testdata/*.yaml against a real DNS server and the real
// resolver.
func TestCases(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var tc testCase
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			if err := dec.Decode(&tc); err != nil {
				t.Fatal(err)
			}
			srv := dnstest.New(t, tc.DNS...)
			for _, z := range tc.Blackhole {
				srv.Blackhole(z)
			}
			for _, z := range tc.ServFail {
				srv.ServFail(z)
			}
			var zones []Zone
			for _, z := range tc.Config.Zones {
				zones = append(zones, Zone(z))
			}
			var to time.Duration
			if tc.Config.Timeout != "" {
				if to, err = time.ParseDuration(tc.Config.Timeout); err != nil {
					t.Fatal(err)
				}
			}
			f, err := New(Config{
				Zones:      zones,
				MaxDomains: tc.Config.MaxDomains,
				Action:     tc.Config.Action,
				Score:      tc.Config.Score,
				Timeout:    to,
				OnDNSError: tc.Config.OnDNSError,
				Resolver:   newResolver(t, srv),
			})
			if err != nil {
				t.Fatal(err)
			}
			raw := tc.Raw
			if raw == "" {
				raw = "Subject: the raw message must not be read\r\n\r\nhttp://raw.example/\r\n"
			}
			v := f.Check(context.Background(), tc.message(), rawReader(raw))
			if got := show(v); got != tc.Want {
				t.Errorf("verdict %q (%s)\nwant %q", got, v.Reason, tc.Want)
			}
			if tc.Reason != "" && v.Reason != tc.Reason {
				t.Errorf("reason:\n got %q\nwant %q", v.Reason, tc.Reason)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	r := newResolver(t, dnstest.New(t))
	ok := []Zone{{Zone: "multi.test"}}
	for _, tc := range []struct {
		name string
		c    Config
	}{
		{"no resolver", Config{Zones: ok}},
		{"no zones", Config{Resolver: r}},
		{"empty zone", Config{Resolver: r, Zones: []Zone{{Zone: ""}}}},
		{"bad zone name", Config{Resolver: r, Zones: []Zone{{Zone: "multi..test"}}}},
		{"zone twice", Config{Resolver: r, Zones: []Zone{{Zone: "multi.test"}, {Zone: "Multi.Test."}}}},
		{"code outside 127/8", Config{Resolver: r, Zones: []Zone{{Zone: "multi.test", Codes: []string{"10.0.0.2"}}}}},
		{"range backwards", Config{Resolver: r, Zones: []Zone{{Zone: "multi.test", Codes: []string{"127.0.0.9-127.0.0.2"}}}}},
		{"mask on 127", Config{Resolver: r, Zones: []Zone{{Zone: "multi.test", Mask: 0x7f000000}}}},
		{"negative max", Config{Resolver: r, Zones: ok, MaxDomains: -1}},
		{"negative timeout", Config{Resolver: r, Zones: ok, Timeout: -time.Second}},
		{"action", Config{Resolver: r, Zones: ok, Action: "discard"}},
		{"score without points", Config{Resolver: r, Zones: ok, Action: "score"}},
		{"on_dns_error", Config{Resolver: r, Zones: ok, OnDNSError: "reject"}},
	} {
		if _, err := New(tc.c); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	good := Config{Resolver: r, Action: "score", Score: 3, OnDNSError: "tempfail", MaxDomains: 10, Timeout: time.Second,
		Zones: []Zone{{Zone: "Multi.Test.", Mask: 0x5e}, {Zone: "uribl.test", Codes: []string{"127.0.0.2", "127.0.0.4-127.0.0.8"}}}}
	if _, err := New(good); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

// TestTimeoutBoundsAll: fifty domains on a list that never answers cost
// one filter timeout, not fifty resolver timeouts.
func TestTimeoutBoundsAll(t *testing.T) {
	srv := dnstest.New(t)
	srv.Blackhole("dead.test")
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Zones: []Zone{{Zone: "dead.test"}}, Timeout: 200 * time.Millisecond, OnDNSError: "tempfail", Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for i := range 50 {
		fmt.Fprintf(&text, "http://d%d.example/ ", i)
	}
	msg := &mimeparse.Message{Parts: []mimeparse.Part{{ContentType: "text/plain", Text: true, Content: []byte(text.String())}}}
	start := time.Now()
	v := f.Check(context.Background(), msg, nil)
	if d := time.Since(start); d < 200*time.Millisecond || d > time.Second {
		t.Errorf("took %v, want about the 200ms timeout", d)
	}
	if show(v) != "451 4.4.3 URL list lookup failed, try again later" || !strings.Contains(v.Reason, "dead.test: timeout ×50") {
		t.Errorf("verdict %q (%s)", show(v), v.Reason)
	}
}

// TestSessionDeadline: the session's context bounds the lookups too.
func TestSessionDeadline(t *testing.T) {
	srv := dnstest.New(t)
	srv.Blackhole("dead.test")
	f, err := New(Config{Zones: []Zone{{Zone: "dead.test"}}, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	v := f.Check(ctx, textMessage("http://x.example/"), nil)
	if d := time.Since(start); d > timeout/2 {
		t.Errorf("took %v past a 50ms session deadline", d)
	}
	if v.Action != pipeline.Continue || !strings.Contains(v.Reason, "dead.test: timeout") {
		t.Errorf("verdict %+v", v)
	}
}

func textMessage(s string) *mimeparse.Message {
	return &mimeparse.Message{Parts: []mimeparse.Part{{ContentType: "text/plain", Text: true, Content: []byte(s)}}}
}

// countingResolver measures how many lookups run at once.
type countingResolver struct {
	Resolver
	mu        sync.Mutex
	now, peak int
	names     []string
}

func (c *countingResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	c.mu.Lock()
	c.now++
	c.peak = max(c.peak, c.now)
	c.names = append(c.names, name)
	c.mu.Unlock()
	time.Sleep(5 * time.Millisecond) // let the others pile up
	defer func() {
		c.mu.Lock()
		c.now--
		c.mu.Unlock()
	}()
	return c.Resolver.LookupA(ctx, name)
}

// TestAllPairsBounded: every domain is asked of every zone, at most
// Concurrency at a time.
func TestAllPairsBounded(t *testing.T) {
	srv := dnstest.New(t, "d7.example.b.test. 300 IN A 127.0.0.2")
	cr := &countingResolver{Resolver: newResolver(t, srv)}
	f, err := New(Config{Zones: []Zone{{Zone: "a.test"}, {Zone: "b.test"}}, Resolver: cr})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for i := range 20 {
		fmt.Fprintf(&text, "http://www.d%d.example/x ", i)
	}
	v := f.Check(context.Background(), textMessage(text.String()), nil)
	if show(v) != "554 5.7.1 Message refused: URL domain d7.example is listed at b.test" {
		t.Errorf("verdict %q (%s)", show(v), v.Reason)
	}
	if len(cr.names) != 40 {
		t.Errorf("%d lookups, want 20 domains × 2 zones", len(cr.names))
	}
	if cr.peak > Concurrency || cr.peak < 2 {
		t.Errorf("%d lookups at once, want 2 to %d", cr.peak, Concurrency)
	}
}

// errReader fails like a broken spool file.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk error") }

// TestReadError: a message that cannot be read is deferred (451 4.3.0),
// never passed unchecked.
func TestReadError(t *testing.T) {
	f, err := New(Config{Zones: []Zone{{Zone: "multi.test"}}, Resolver: newResolver(t, dnstest.New(t))})
	if err != nil {
		t.Fatal(err)
	}
	v := f.Check(context.Background(), nil, func() io.Reader { return errReader{} })
	if show(v) != "451 4.3.0 Temporary local problem, try again later" || !strings.Contains(v.Reason, "disk error") {
		t.Errorf("verdict %q (%s)", show(v), v.Reason)
	}
}

// TestLongNameNotAsked: a domain too long to fit under the zone is not
// asked (and so not listed), and costs no error.
func TestLongNameNotAsked(t *testing.T) {
	srv := dnstest.New(t)
	zone := strings.Repeat("z", 60) + "." + strings.Repeat("y", 60) + ".test"
	f, err := New(Config{Zones: []Zone{{Zone: zone}}, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 60) + ".com"
	v := f.Check(context.Background(), textMessage("http://"+long+"/"), nil)
	if v.Action != pipeline.Continue || v.Reason != "none listed of 1 domain in 1 text part" {
		t.Errorf("verdict %+v", v)
	}
}

func TestStats(t *testing.T) {
	srv := dnstest.New(t,
		"listed.example.multi.test. 300 IN A 127.0.0.2",
		"blocked.example.multi.test. 300 IN A 127.0.0.1",
	)
	srv.Blackhole("dead.test")
	f, err := New(Config{Zones: []Zone{{Zone: "multi.test"}, {Zone: "dead.test"}}, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	f.Check(context.Background(), textMessage("http://listed.example/ http://blocked.example/ http://clean.example/"), nil)
	st := f.Stats()
	want := []dnslist.Stats{
		{Zone: "multi.test", Queries: 3, Listed: 1, Errors: 1, LastError: "resolver blocked by the list operator (127.0.0.1)"},
		{Zone: "dead.test", Queries: 3, Errors: 3, LastError: "timeout"},
	}
	for i, w := range want {
		got := st[i]
		got.LatencySum = 0
		if got != w {
			t.Errorf("stats[%d] = %+v\nwant %+v", i, got, w)
		}
	}
	if st[1].LatencySum < 3*timeout {
		t.Errorf("dead zone latency %v", st[1].LatencySum)
	}
}

// TestWhitelistedSkipped: through the pipeline, an allow-listed session
// is not judged by its links (an antispam filter).
func TestWhitelistedSkipped(t *testing.T) {
	srv := dnstest.New(t, "listed.example.multi.test. 300 IN A 127.0.0.2")
	f, err := New(Config{Zones: []Zone{{Zone: "multi.test"}}, Resolver: newResolver(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	p := pipeline.New(pipeline.Entry{Filter: f, Mode: pipeline.Enforce})
	tr := &pipeline.Transaction{MIME: textMessage("http://listed.example/")}
	s := &pipeline.Session{ID: "t", Client: netip.MustParseAddrPort("192.0.2.9:4000")}
	if v := p.Data(context.Background(), s, tr, nil); v.Action != pipeline.Reject {
		t.Fatalf("listed link not refused: %+v", v)
	}
	s.Whitelisted = true
	tr = &pipeline.Transaction{MIME: textMessage("http://listed.example/")}
	if v := p.Data(context.Background(), s, tr, nil); v.Action != pipeline.Continue {
		t.Errorf("whitelisted session refused: %+v", v)
	}
}

// BenchmarkCheck: a typical HTML newsletter with ten link domains, the
// answers in the resolver's cache.
func BenchmarkCheck(b *testing.B) {
	srv := dnstest.New(b)
	f, err := New(Config{Zones: []Zone{{Zone: "multi.test"}, {Zone: "uribl.test"}}, Resolver: newResolver(b, srv)})
	if err != nil {
		b.Fatal(err)
	}
	var html strings.Builder
	html.WriteString("<html><body><table>")
	for i := range 200 {
		fmt.Fprintf(&html, `<tr><td><a href="https://www.site%d.example/p?id=%d"><img src="https://cdn.site%d.example/i.png"></a> Lorem ipsum dolor sit amet.</td></tr>`, i%10, i, i%10)
	}
	html.WriteString("</table></body></html>")
	msg := &mimeparse.Message{Parts: []mimeparse.Part{{ContentType: "text/html", Text: true, HTML: true, Content: []byte(html.String())}}}
	ctx := context.Background()
	f.Check(ctx, msg, nil) // warm the cache
	b.ReportAllocs()
	b.SetBytes(int64(html.Len()))
	for b.Loop() {
		if v := f.Check(ctx, msg, nil); v.Action != pipeline.Continue {
			b.Fatalf("%+v", v)
		}
	}
}
