package urls

import (
	"bytes"
	"cmp"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/publicsuffix"
	"gopkg.in/yaml.v3"
)

// hostCase is one line of testdata/hosts.yaml.
type hostCase struct {
	Host string `yaml:"host"`
	Want string `yaml:"want"`
	IP   bool   `yaml:"ip"`
}

func TestHost(t *testing.T) {
	var cases []hostCase
	load(t, "testdata/hosts.yaml", &cases)
	for _, tc := range cases {
		got, ok := Host(tc.Host)
		want := Target{Name: tc.Want, IP: tc.IP}
		if !ok {
			got = Target{}
		}
		if got != want || ok != (tc.Want != "") {
			t.Errorf("Host(%q) = %+v, %v; want %+v", tc.Host, got, ok, want)
		}
	}
}

// collectCase is one case of the other testdata files: one input (text,
// html or raw) and the targets wanted, in order.
type collectCase struct {
	Name string   `yaml:"name"`
	Text *string  `yaml:"text"`
	HTML *string  `yaml:"html"`
	Raw  *string  `yaml:"raw"`
	Max  int      `yaml:"max"`
	Want []string `yaml:"want"`
}

func TestCollect(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	n := 0
	for _, file := range files {
		if filepath.Base(file) == "hosts.yaml" {
			continue
		}
		var cases []collectCase
		load(t, file, &cases)
		for _, tc := range cases {
			n++
			t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml")+"/"+tc.Name, func(t *testing.T) {
				c := NewCollector(cmp.Or(tc.Max, 50))
				switch {
				case tc.Text != nil:
					c.Text(*tc.Text)
				case tc.HTML != nil:
					c.HTML([]byte(*tc.HTML))
				case tc.Raw != nil:
					c.Raw([]byte(*tc.Raw))
				default:
					t.Fatal("no input")
				}
				got := []string{}
				for _, tg := range c.Targets() {
					got = append(got, tg.Name)
				}
				if tc.Want == nil {
					tc.Want = []string{}
				}
				if !slices.Equal(got, tc.Want) {
					t.Errorf("got %q\nwant %q", got, tc.Want)
				}
			})
		}
	}
	if n < 50 {
		t.Fatalf("only %d cases in testdata", n)
	}
}

func load(t *testing.T, file string, v any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func TestQuery(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		want string
	}{
		{Target{Name: "example.com"}, "example.com"},
		{Target{Name: "192.0.2.1", IP: true}, "1.2.0.192"},
	} {
		if got := tc.t.Query(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.t, got, tc.want)
		}
	}
}

// checkTargets is the extractor's contract on any input: at most max
// targets, each once, each a registrable domain (or a global IPv4
// address) written as a list is asked about.
func checkTargets(t *testing.T, c *Collector, max int) {
	t.Helper()
	got := c.Targets()
	if len(got) > max {
		t.Fatalf("%d targets, max %d", len(got), max)
	}
	seen := map[string]bool{}
	for _, tg := range got {
		if seen[tg.Name] {
			t.Fatalf("%q twice", tg.Name)
		}
		seen[tg.Name] = true
		if tg.IP {
			if !global(tg.Name) {
				t.Fatalf("address %q is not a global one", tg.Name)
			}
			continue
		}
		if !validName(tg.Name) {
			t.Fatalf("target %q is not a valid lower-case name", tg.Name)
		}
		if d, err := publicsuffix.EffectiveTLDPlusOne(tg.Name); err != nil || d != tg.Name {
			t.Fatalf("target %q is not a registrable domain (%q, %v)", tg.Name, d, err)
		}
		if again, ok := Host(tg.Name); !ok || again != tg {
			t.Fatalf("target %q is not stable under Host: %+v", tg.Name, again)
		}
	}
}

func seeds(f *testing.F) {
	for _, s := range []string{
		"http://user@a.b.example.com:80/x", "www.пример.рф", "cheap.example.ru/x", "http://0x7f.1/",
		"http://3221225985/", "<a href=\"//x.example.com/\">t</a>", "=\r\nhttp://ev=69l.example.com/",
		"http:\\\\e.example.com", "http://%65.example.com", "http://[::1]/", "a.b.c.d.e.f.g.h",
	} {
		f.Add(s)
	}
}

func FuzzText(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		c := NewCollector(5)
		c.Text(s)
		checkTargets(t, c, 5)
	})
}

func FuzzHTML(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		c := NewCollector(5)
		c.HTML([]byte(s))
		checkTargets(t, c, 5)
	})
}

func FuzzRaw(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		c := NewCollector(5)
		c.Raw([]byte(s))
		checkTargets(t, c, 5)
	})
}

// FuzzHost: Host never panics, and what it returns is valid and a fixed
// point.
func FuzzHost(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		tg, ok := Host(s)
		if !ok {
			return
		}
		if tg.IP {
			if _, isIP, valid := parseIPv4(tg.Name); !isIP || !valid {
				t.Fatalf("Host(%q) = address %q that does not parse", s, tg.Name)
			}
		} else if !validName(tg.Name) || !utf8.ValidString(tg.Name) {
			t.Fatalf("Host(%q) = invalid name %q", s, tg.Name)
		}
		if again, ok := Host(tg.Name); !ok || again != tg {
			t.Fatalf("Host(%q) = %+v, but Host of that = %+v, %v", s, tg, again, ok)
		}
	})
}

// TestLargeInputLinear: a megabyte of host characters, or of scheme
// prefixes, is read quickly (no quadratic rescans).
func TestLargeInputLinear(t *testing.T) {
	for _, s := range []string{
		strings.Repeat("a", 1<<20),
		strings.Repeat("a.", 1<<19),
		strings.Repeat("http://", 1<<17),
		strings.Repeat("http://a", 1<<17),
		strings.Repeat("<a href=x ", 1<<16),
	} {
		c := NewCollector(50)
		c.Text(s)
		c.HTML([]byte(s))
		c.Raw([]byte(s))
	}
}

// Invalid UTF-8 (which YAML cannot hold) splits a name: no host is made
// of the replacement character.
func TestInvalidUTF8(t *testing.T) {
	c := NewCollector(50)
	c.Text("http://ex\xffample.com/ www.b\xc3.example.org http://fine.example.net/")
	c.HTML([]byte("<a href=\"http://bad\xfe.example.org/\">x</a>"))
	var got []string
	for _, tg := range c.Targets() {
		got = append(got, tg.Name)
	}
	if !slices.Equal(got, []string{"example.net"}) {
		t.Errorf("got %q", got)
	}
}
