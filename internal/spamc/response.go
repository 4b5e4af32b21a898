package spamc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Bounds on what is read from spamd: its replies are a few lines and a
// list of rule names; anything bigger is not spamd.
const (
	maxLineLength = 4096
	maxHeaders    = 32
	maxBody       = 64 << 10
)

// ParseResponse reads spamd's reply to CHECK (withBody false) or SYMBOLS
// (withBody true): the status line, the headers and, for SYMBOLS, the
// comma-separated rule names. A non-zero status is returned as *Error.
func ParseResponse(br *bufio.Reader, withBody bool) (*Result, error) {
	line, err := readLine(br)
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("spamd closed the connection without a reply")
		}
		return nil, err
	}
	code, text, err := parseStatus(line)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, &Error{Code: code, Text: text}
	}

	var res *Result
	length := int64(-1)
	for n := 0; ; n++ {
		if n > maxHeaders {
			return nil, errors.New("spamc: too many header lines in spamd's reply")
		}
		line, err := readLine(br)
		if err != nil {
			return nil, fmt.Errorf("spamc: reading spamd's reply headers: %w", err)
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("spamc: malformed header line %q in spamd's reply", clip(line))
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "spam":
			if res != nil {
				return nil, errors.New("spamc: two Spam headers in spamd's reply")
			}
			if res, err = parseSpam(value); err != nil {
				return nil, err
			}
		case "content-length":
			if length >= 0 {
				return nil, errors.New("spamc: two Content-length headers in spamd's reply")
			}
			l, err := strconv.ParseInt(value, 10, 64)
			if err != nil || l < 0 {
				return nil, fmt.Errorf("spamc: bad Content-length %q in spamd's reply", clip(value))
			}
			length = l
		}
	}
	if res == nil {
		return nil, errors.New("spamc: no Spam header in spamd's reply")
	}
	if !withBody {
		return res, nil
	}

	var body []byte
	if length >= 0 {
		if length > maxBody {
			return nil, fmt.Errorf("spamc: spamd's reply body of %d bytes is over %d", length, maxBody)
		}
		body = make([]byte, length)
		if _, err := io.ReadFull(br, body); err != nil {
			return nil, fmt.Errorf("spamc: reading spamd's reply body: %w", err)
		}
	} else {
		// Protocol 1.2 and older: the body runs to the end.
		if body, err = io.ReadAll(io.LimitReader(br, maxBody+1)); err != nil {
			return nil, fmt.Errorf("spamc: reading spamd's reply body: %w", err)
		}
		if len(body) > maxBody {
			return nil, fmt.Errorf("spamc: spamd's reply body is over %d bytes", maxBody)
		}
	}
	if res.Symbols, err = parseSymbols(string(body)); err != nil {
		return nil, err
	}
	return res, nil
}

// readLine reads one line, without its CRLF or LF.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > maxLineLength {
			return "", fmt.Errorf("spamc: line over %d bytes in spamd's reply", maxLineLength)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(b) > 0:
			return "", io.ErrUnexpectedEOF
		case err != nil:
			return "", err
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		return line, nil
	}
}

// parseStatus reads "SPAMD/1.1 0 EX_OK": the code and the text after it.
func parseStatus(line string) (code int, text string, err error) {
	rest, ok := strings.CutPrefix(line, "SPAMD/")
	if !ok {
		return 0, "", fmt.Errorf("spamc: not a spamd reply: %q", clip(line))
	}
	version, rest, ok := strings.Cut(rest, " ")
	if !ok || !isVersion(version) {
		return 0, "", fmt.Errorf("spamc: bad spamd status line %q", clip(line))
	}
	num, text, _ := strings.Cut(rest, " ")
	code, err = strconv.Atoi(num)
	if err != nil || code < 0 || code > 255 || num != strconv.Itoa(code) {
		return 0, "", fmt.Errorf("spamc: bad code in spamd status line %q", clip(line))
	}
	return code, printable(text), nil
}

func isVersion(v string) bool {
	major, minor, ok := strings.Cut(v, ".")
	return ok && isDigits(major) && isDigits(minor)
}

func isDigits(s string) bool {
	if s == "" || len(s) > 3 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseSpam reads "True ; 15.0 / 5.0".
func parseSpam(v string) (*Result, error) {
	flag, scores, ok := strings.Cut(v, ";")
	if !ok {
		return nil, fmt.Errorf("spamc: bad Spam header %q", clip(v))
	}
	res := &Result{}
	switch strings.ToLower(strings.TrimSpace(flag)) {
	case "true", "yes":
		res.Spam = true
	case "false", "no":
	default:
		return nil, fmt.Errorf("spamc: bad Spam header %q", clip(v))
	}
	score, threshold, ok := strings.Cut(scores, "/")
	if !ok {
		return nil, fmt.Errorf("spamc: bad Spam header %q", clip(v))
	}
	var err error
	if res.Score, err = parseScore(score); err != nil {
		return nil, fmt.Errorf("spamc: bad score in Spam header %q", clip(v))
	}
	if res.Threshold, err = parseScore(threshold); err != nil {
		return nil, fmt.Errorf("spamc: bad threshold in Spam header %q", clip(v))
	}
	return res, nil
}

// parseScore accepts decimal numbers only (no NaN, Inf or hex).
func parseScore(s string) (float64, error) {
	s = strings.TrimSpace(s)
	for i, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c == '.' || (c == '-' || c == '+') && i == 0) {
			return 0, errors.New("not a number")
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, errors.New("not a number")
	}
	return f, nil
}

// maxSymbols bounds the rule names kept (a message rarely hits 50).
const maxSymbols = 500

// parseSymbols reads the comma-separated rule names of a SYMBOLS reply.
// Rule names are letters, digits and underscores; anything else is not
// a rule name, and a reply carrying it is refused rather than copied into
// a header.
func parseSymbols(body string) ([]string, error) {
	body = strings.TrimSpace(body)
	if body == "" {
		return nil, nil
	}
	var out []string
	for _, s := range strings.Split(body, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !isRuleName(s) {
			return nil, fmt.Errorf("spamc: bad rule name %q in spamd's reply", clip(s))
		}
		if len(out) == maxSymbols {
			return nil, fmt.Errorf("spamc: more than %d rule names in spamd's reply", maxSymbols)
		}
		out = append(out, s)
	}
	return out, nil
}

func isRuleName(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// printable keeps spamd's error text safe for logs.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// clip shortens what is quoted in errors.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
