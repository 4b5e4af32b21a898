package spamc

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// respCase is one testdata/*.txt file: "key: value" lines (method:
// check|symbols, want: ... or error: ..., eol: lf), "--", then spamd's
// reply. Its LFs become CRLFs unless eol: lf, and {len} is the length of
// what follows the first empty line (the body).
type respCase struct {
	name, method, want, err string
	reply                   []byte
}

func loadCases(t testing.TB) []respCase {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	var out []respCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		head, reply, ok := strings.Cut(string(b), "--\n")
		if !ok {
			t.Fatalf("%s: no -- line", f)
		}
		c := respCase{name: filepath.Base(f)}
		eol := "crlf"
		for _, line := range strings.Split(head, "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "method":
				c.method = v
			case "want":
				c.want = v
			case "error":
				c.err = v
			case "eol":
				eol = v
			default:
				t.Fatalf("%s: unknown key %q", f, k)
			}
		}
		nl := "\r\n"
		if eol == "lf" {
			nl = "\n"
		}
		reply = strings.ReplaceAll(reply, "\n", nl)
		if _, body, ok := strings.Cut(reply, nl+nl); ok {
			reply = strings.Replace(reply, "{len}", strconv.Itoa(len(body)), 1)
		}
		c.reply = []byte(reply)
		out = append(out, c)
	}
	return out
}

func summary(r *Result) string {
	return fmt.Sprintf("spam=%t score=%g threshold=%g symbols=%s", r.Spam, r.Score, r.Threshold, strings.Join(r.Symbols, ","))
}

func TestParseResponse(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res, err := ParseResponse(bufio.NewReader(strings.NewReader(string(c.reply))), c.method == "symbols")
			switch {
			case c.err != "":
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, %v; want error containing %q", res, err, c.err)
				}
				var se *Error
				if strings.HasPrefix(c.err, "EX_") && !errors.As(err, &se) {
					t.Fatalf("error %v is not an *Error", err)
				}
			case err != nil:
				t.Fatalf("error %v, want %s", err, c.want)
			case summary(res) != c.want:
				t.Fatalf("got  %s\nwant %s", summary(res), c.want)
			}
		})
	}
}

func TestExitName(t *testing.T) {
	for code, want := range map[int]string{0: "EX_OK", 69: "EX_UNAVAILABLE", 76: "EX_PROTOCOL", 79: "EX_TIMEOUT", 3: "EX_3"} {
		if got := ExitName(code); got != want {
			t.Errorf("ExitName(%d) = %s, want %s", code, got, want)
		}
	}
}

// Whatever spamd (or anything on its port) says, the parser returns a
// sane result or an error, and never a rule name that could break the
// header it is copied into.
func FuzzParseResponse(f *testing.F) {
	for _, c := range loadCases(f) {
		f.Add(c.reply, c.method == "symbols")
	}
	f.Fuzz(func(t *testing.T, reply []byte, withBody bool) {
		res, err := ParseResponse(bufio.NewReader(strings.NewReader(string(reply))), withBody)
		if err != nil {
			var se *Error
			if errors.As(err, &se) && (se.Code <= 0 || se.Code > 255 || strings.ContainsAny(se.Text, "\r\n")) {
				t.Fatalf("bad *Error %+v", se)
			}
			return
		}
		if math.IsNaN(res.Score) || math.IsInf(res.Score, 0) || math.IsNaN(res.Threshold) || math.IsInf(res.Threshold, 0) {
			t.Fatalf("non-finite score %+v", res)
		}
		if !withBody && res.Symbols != nil {
			t.Fatalf("symbols without a body: %+v", res)
		}
		if len(res.Symbols) > maxSymbols {
			t.Fatalf("%d symbols", len(res.Symbols))
		}
		for _, s := range res.Symbols {
			if s == "" || !isRuleName(s) {
				t.Fatalf("bad rule name %q", s)
			}
		}
	})
}
