package main

import (
	"bufio"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"220 mx ESMTP\r\n", "220 mx ESMTP", ""},
		{"250-mx\r\n250-SIZE 100\r\n250 8BITMIME\r\n", "250-mx / 250-SIZE 100 / 250 8BITMIME", ""},
		{"554 5.7.1 Message refused\n", "554 5.7.1 Message refused", ""},
		{"250\r\n", "250", ""},
		{"25\r\n", "", "bad reply"},
		{"250-mx\r\n", "", "EOF"},
	} {
		got, err := readReply(bufio.NewReader(strings.NewReader(tc.in)))
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("readReply(%q) = %q, %v; want %q, %s", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func FuzzReadReply(f *testing.F) {
	f.Add("250-a\r\n250 b\r\n")
	f.Add("554 no\r\n")
	f.Add(strings.Repeat("250-x\r\n", 102))
	f.Fuzz(func(t *testing.T, in string) {
		got, err := readReply(bufio.NewReader(strings.NewReader(in)))
		if err == nil && (len(got) < 3 || !strings.HasPrefix(in, got[:3])) {
			t.Fatalf("readReply(%q) = %q", in, got)
		}
	})
}
