package clamd

import (
	"errors"
	"strings"
	"testing"
)

func TestParseReply(t *testing.T) {
	for _, tc := range []struct {
		reply string
		want  Result
		err   string // substring of the error; "" for none
	}{
		{"stream: OK\x00", Result{}, ""},
		{"stream: OK\n", Result{}, ""},
		{"stream: OK", Result{}, ""},
		{"stream: Eicar-Signature FOUND\x00", Result{Infected: true, Signature: "Eicar-Signature"}, ""},
		{"stream: Win.Test.EICAR_HDB-1 FOUND\x00", Result{Infected: true, Signature: "Win.Test.EICAR_HDB-1"}, ""},
		{"stream: Mailgate.Test.EICAR.UNOFFICIAL FOUND", Result{Infected: true, Signature: "Mailgate.Test.EICAR.UNOFFICIAL"}, ""},
		// ExtendedDetectionInfo appends the hash and size.
		{"stream: Eicar-Signature(44d88612fea8a8f36de82e1278abb02f:68) FOUND\x00", Result{Infected: true, Signature: "Eicar-Signature"}, ""},
		// A name with parentheses of its own is kept.
		{"stream: Odd(name) FOUND", Result{Infected: true, Signature: "Odd(name)"}, ""},
		{"stream: Heuristics.Phishing.Email.SpoofedDomain FOUND", Result{Infected: true, Signature: "Heuristics.Phishing.Email.SpoofedDomain"}, ""},
		{"INSTREAM size limit exceeded. ERROR\x00", Result{}, "StreamMaxLength"},
		{"stream: Can't allocate memory ERROR\x00", Result{}, "scan error: stream: Can't allocate memory"},
		{"ERROR", Result{}, "no reason given"},
		{"UNKNOWN COMMAND\x00", Result{}, "unexpected reply"},
		{"COMMAND READ TIMED OUT\x00", Result{}, "unexpected reply"},
		{"", Result{}, "unexpected reply"},
		{"\x00", Result{}, "unexpected reply"},
		{"stream: FOUND", Result{}, "unexpected reply"},
		{"stream:  FOUND", Result{}, "unexpected reply"},
		{"stream: OKAY", Result{}, "unexpected reply"},
		{"stream: ok", Result{}, "unexpected reply"},
		{"1: stream: OK", Result{}, "unexpected reply"}, // a session's number is parseSessionReply's
		{"OK", Result{}, "unexpected reply"},
	} {
		got, err := ParseReply(tc.reply)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseReply(%q): error %v, want %q", tc.reply, err, tc.err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseReply(%q) = %+v, want %+v", tc.reply, got, tc.want)
		}
	}
	if _, err := ParseReply("INSTREAM size limit exceeded. ERROR"); !errors.Is(err, ErrSizeLimit) {
		t.Errorf("size limit: %v is not ErrSizeLimit", err)
	}
	var re *ReplyError
	if _, err := ParseReply("stream: lstat() failed ERROR"); !errors.As(err, &re) || re.Msg != "stream: lstat() failed" {
		t.Errorf("ERROR reply: %#v", err)
	}
}

func TestParseSessionReply(t *testing.T) {
	for _, tc := range []struct {
		reply string
		id    int
		want  Result
		err   string
	}{
		{"1: stream: OK", 1, Result{}, ""},
		{"12: stream: Eicar FOUND", 12, Result{Infected: true, Signature: "Eicar"}, ""},
		{"3: INSTREAM size limit exceeded. ERROR", 3, Result{}, "StreamMaxLength"},
		{"3: stream: lstat() failed ERROR", 3, Result{}, "scan error: stream: lstat() failed"},
		{"2: stream: OK", 3, Result{}, "not numbered 3"},
		{"stream: OK", 1, Result{}, "unexpected reply"},
		{"COMMAND READ TIMED OUT\n", 1, Result{}, "unexpected reply"},
		{"1:stream: OK", 1, Result{}, "unexpected reply"},
		{"01: stream: OK", 1, Result{}, "unexpected reply"},
		{"1: 2: stream: OK", 1, Result{}, "unexpected reply"},
	} {
		got, err := parseSessionReply(tc.reply, tc.id)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("parseSessionReply(%q, %d): error %v, want %q", tc.reply, tc.id, err, tc.err)
			continue
		}
		if got != tc.want {
			t.Errorf("parseSessionReply(%q, %d) = %+v, want %+v", tc.reply, tc.id, got, tc.want)
		}
	}
}

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct{ in, network, addr string }{
		{"unix:/run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"tcp:127.0.0.1:3310", "tcp", "127.0.0.1:3310"},
		{"127.0.0.1:3310", "tcp", "127.0.0.1:3310"},
		{"clamav:3310", "tcp", "clamav:3310"},
		{"tcp:[::1]:3310", "tcp", "[::1]:3310"},
		{"unix:relative.sock", "", ""},
		{"clamav", "", ""},
		{"tcp:clamav", "", ""},
		{"clamav:", "", ""},
		{"", "", ""},
	} {
		n, a, err := ParseAddress(tc.in)
		if n != tc.network || a != tc.addr || (err == nil) != (tc.network != "") {
			t.Errorf("ParseAddress(%q) = %q, %q, %v; want %q, %q", tc.in, n, a, err, tc.network, tc.addr)
		}
	}
}

// FuzzParseReply: no reply crashes the parser, and nothing but the exact
// clean reply is taken for clean.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"stream: OK\x00", "stream: Eicar-Signature FOUND\x00",
		"stream: X(0a:1) FOUND", "INSTREAM size limit exceeded. ERROR\x00", "stream: x ERROR\n",
		"ERROR", "UNKNOWN COMMAND", "stream: (:) FOUND", "stream: ( FOUND"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		r, err := ParseReply(reply)
		trimmed := strings.TrimRight(reply, "\x00\r\n")
		switch {
		case err != nil:
			if r != (Result{}) {
				t.Fatalf("%q: error %v with result %+v", reply, err, r)
			}
		case !r.Infected:
			if trimmed != "stream: OK" {
				t.Fatalf("%q taken for clean", reply)
			}
		default:
			if r.Signature == "" || !strings.HasSuffix(trimmed, " FOUND") ||
				!strings.HasPrefix(trimmed, "stream: ") || !strings.Contains(trimmed, r.Signature) {
				t.Fatalf("%q: infected with %q", reply, r.Signature)
			}
		}
		if err != nil && !strings.HasPrefix(err.Error(), "clamd: ") {
			t.Fatalf("%q: error %q does not say clamd", reply, err)
		}
	})
}
