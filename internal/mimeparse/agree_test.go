package mimeparse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestAgreesWithMultipart checks the structure scan against Go's
// mime/multipart (an independent reading of RFC 2046) on random nested
// multiparts full of lines that nearly are boundaries: both must find the
// same leaf parts, at the same depths, with the same bodies.
// MIMEPARSE_AGREE=N runs N messages (default 2000) with seed
// MIMEPARSE_SEED.
func TestAgreesWithMultipart(t *testing.T) {
	n := 2000
	if s, err := strconv.Atoi(os.Getenv("MIMEPARSE_AGREE")); err == nil {
		n = s
	}
	seed, _ := strconv.ParseUint(os.Getenv("MIMEPARSE_SEED"), 10, 64)
	r := rand.New(rand.NewPCG(seed, 42))
	lim := Limits{MaxDepth: 50, MaxParts: 10000}
	compared := 0
	for i := 0; i < n; i++ {
		g := &gen{r: r}
		data := g.message()
		want, err := reference(data)
		if err != nil {
			continue // mime/multipart gives up on some of what mail allows
		}
		m, err := Parse(bytes.NewReader(data), int64(len(data)), lim)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range m.Parts {
			got = append(got, fmt.Sprintf("%d %q", p.Depth, p.Content))
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("message:\n%s\ngot:\n%s\nmime/multipart:\n%s", data, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		compared++
	}
	t.Logf("%d of %d messages compared", compared, n)
	if compared < n/4 {
		t.Errorf("only %d messages compared: the generator tests little", compared)
	}
}

// reference lists the leaf parts of a message with mime/multipart.
func reference(data []byte) ([]string, error) {
	i := bytes.Index(data, []byte("\r\n\r\n"))
	if i < 0 {
		return nil, errors.New("no header")
	}
	_, params, err := mime.ParseMediaType(strings.TrimPrefix(string(data[:i]), "Content-Type: "))
	if err != nil {
		return nil, err
	}
	var out []string
	err = referenceParts(bytes.NewReader(data[i+4:]), params["boundary"], 1, &out)
	return out, err
}

func referenceParts(r io.Reader, boundary string, depth int, out *[]string) error {
	mr := multipart.NewReader(r, boundary)
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		mtype, params, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err == nil && strings.HasPrefix(mtype, "multipart/") && params["boundary"] != "" {
			if err := referenceParts(p, params["boundary"], depth+1, out); err != nil {
				return err
			}
			continue
		}
		body, err := io.ReadAll(p)
		if err != nil {
			return err
		}
		*out = append(*out, fmt.Sprintf("%d %q", depth, body))
	}
}

// gen writes random nested multiparts whose boundaries are prefixes of
// each other, with lines that nearly are boundaries.
type gen struct {
	r      *rand.Rand
	b      bytes.Buffer
	bounds []string // the boundaries in use, outermost first
	n      int
}

var genBoundaries = []string{"a", "ab", "a-b", "b", "=_x", "ab--", "x", "abc", "-"}

func (g *gen) pick(list ...string) string { return list[g.r.IntN(len(list))] }

func (g *gen) line(s string) { g.b.WriteString(s + "\r\n") }

func (g *gen) message() []byte {
	b := g.pick(genBoundaries...)
	g.line("Content-Type: multipart/mixed; boundary=\"" + b + "\"")
	g.line("")
	g.body(b, 1)
	return g.b.Bytes()
}

// noise writes lines that nearly are boundaries (and some that are, of
// an enclosing multipart, to end it early).
func (g *gen) noise(n int) {
	for i := 0; i < n; i++ {
		b := g.pick(append(g.bounds, genBoundaries...)...)
		g.line(g.pick("text", "", " ", "x --"+b+" y", "--"+b+"x", "--"+b+"--x", "a--"+b+" ", "---"+b, "--"+b+" and more"))
	}
}

// body writes the body of a multipart with boundary b at depth.
func (g *gen) body(b string, depth int) {
	g.bounds = append(g.bounds, b)
	defer func() { g.bounds = g.bounds[:len(g.bounds)-1] }()
	g.noise(g.r.IntN(3))
	for p := 1 + g.r.IntN(3); p > 0; p-- {
		g.line("--" + b + g.pick("", "", " ", "\t "))
		inner := g.pick(genBoundaries...)
		if depth < 6 && g.r.IntN(3) == 0 && !strings.HasPrefix(inner, b) && !strings.HasPrefix(b, inner) {
			g.line("Content-Type: multipart/alternative; boundary=\"" + inner + "\"")
			g.line("")
			g.body(inner, depth+1)
			continue
		}
		g.line("Content-Type: text/plain")
		g.line("")
		g.n++
		g.line(fmt.Sprintf("part %d", g.n))
		g.noise(g.r.IntN(4))
	}
	g.line("--" + b + "--" + g.pick("", "", " "))
	g.noise(g.r.IntN(2))
}
