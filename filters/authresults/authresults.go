// Package authresults reports the sender authentication checks to the
// internal server (SPEC §4 data, RFC 8601): it adds one
// Authentication-Results header field with the gateway's hostname as
// authserv-id and the SPF, DKIM and DMARC results of the transaction,
//
//	Authentication-Results: mx1.example.com;
//		spf=pass smtp.mailfrom=example.org;
//		dkim=pass header.d=example.org header.s=s2026;
//		dmarc=pass header.from=example.org
//
// ("mx1.example.com; none" when nothing was checked), and removes every
// Authentication-Results field of the incoming message that claims our
// authserv-id: only the gateway speaks for the gateway, so a sender cannot
// forge "dkim=pass" for the internal server to trust (RFC 8601 §5).
// Fields of other authserv-ids are kept.
//
// The filter has no YAML block: it runs whenever filters.spf, filters.dkim
// or filters.dmarc is configured, with the top-level hostname.
package authresults

import (
	"context"
	"errors"
	"strings"

	"github.com/emersion/go-msgauth/authres"

	"mailgate/pipeline"
)

// Config names the authserv-id.
type Config struct {
	// Hostname is the authserv-id: the gateway's hostname.
	Hostname string
}

// Filter adds our Authentication-Results and drops forged ones.
type Filter struct {
	id string
}

// New validates c and returns the filter.
func New(c Config) (*Filter, error) {
	id := strings.TrimSuffix(c.Hostname, ".")
	if id == "" {
		return nil, errors.New("authresults: no hostname for the authserv-id")
	}
	for i := 0; i < len(id); i++ {
		if !tokenChar(id[i]) {
			return nil, errors.New("authresults: hostname " + id + " is not a valid authserv-id")
		}
	}
	return &Filter{id: id}, nil
}

func (*Filter) Name() string        { return "authresults" }
func (*Filter) Kind() pipeline.Kind { return pipeline.Policy }

// Data adds the header field and the rule that drops forged ones.
func (f *Filter) Data(_ context.Context, _ *pipeline.Session, t *pipeline.Transaction, _ *pipeline.Message) pipeline.Verdict {
	t.AddDropHeader(f.Forged)
	t.AddHeaders = append(t.AddHeaders, f.Header(t.AuthResults))
	return pipeline.Pass()
}

// Forged reports whether a header field (name as written, the whole raw
// field) is an Authentication-Results field claiming our authserv-id.
func (f *Filter) Forged(name string, field []byte) bool {
	if !strings.EqualFold(strings.TrimSpace(name), "Authentication-Results") {
		return false
	}
	_, value, _ := strings.Cut(string(field), ":")
	id, ok := AuthservID(value)
	return ok && strings.EqualFold(strings.TrimSuffix(id, "."), f.id)
}

// Header is the complete Authentication-Results field for the results,
// one result per line.
func (f *Filter) Header(results []pipeline.AuthResult) string {
	const name = "Authentication-Results: "
	var resinfo []*authres.GenericResult
	for _, r := range results {
		if g := generic(r); g.Method != "" {
			resinfo = append(resinfo, g)
		}
	}
	if len(resinfo) == 0 {
		return name + authres.Format(f.id, nil) + "\r\n"
	}
	var b strings.Builder
	b.WriteString(name + f.id + ";")
	for i, r := range resinfo {
		// Format with an empty identity gives "; method=result props".
		line := strings.TrimSpace(strings.TrimPrefix(authres.Format("", []authres.Result{r}), ";"))
		if i < len(resinfo)-1 {
			line += ";"
		}
		b.WriteString(fold(line))
	}
	b.WriteString("\r\n")
	return b.String()
}

// generic turns one result into go-msgauth's form. Property holds one or
// more "ptype.property=value" pairs separated by spaces.
func generic(r pipeline.AuthResult) *authres.GenericResult {
	params := map[string]string{}
	for _, p := range strings.Fields(r.Property) {
		k, v, ok := strings.Cut(p, "=")
		if k = keyword(k); ok && k != "" {
			params[k] = value(v, 253)
		}
	}
	if r.Reason != "" {
		params["reason"] = value(r.Reason, 200)
	}
	result := keyword(r.Result)
	if result == "" {
		result = "none"
	}
	return &authres.GenericResult{Method: keyword(r.Method), Value: authres.ResultValue(result), Params: params}
}

// keyword keeps the characters of a method, result or property name.
func keyword(s string) string {
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' {
			return c
		}
		return -1
	}, s)
}

// value keeps what go-msgauth can write safely in a value: printable
// ASCII without the quote and backslash it does not escape, no CR or LF
// that would end the header field, and no ";": valid inside a quoted
// reason, but naive parsers (go-msgauth's among them) split results there,
// and a reason quoting a hostile name could then forge one.
func value(s string, max int) string {
	s = strings.Map(func(c rune) rune {
		if c < ' ' || c > '~' || c == '"' || c == '\\' || c == ';' {
			return -1
		}
		return c
	}, s)
	if len(s) > max {
		s = s[:max]
	}
	return s
}

// fold starts a result on its own line and folds it further before 78
// columns, only at spaces outside quoted strings (inside one, a fold would
// change the value).
func fold(line string) string {
	var b strings.Builder
	col := 8
	b.WriteString("\r\n\t")
	for i, w := range words(line) {
		if i > 0 {
			if col+1+len(w) > 78 {
				b.WriteString("\r\n\t")
				col = 8
			} else {
				b.WriteByte(' ')
				col++
			}
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}

// words splits at the spaces outside quoted strings.
func words(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case c == '\\' && quoted:
			i++
		case c == ' ' && !quoted:
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
