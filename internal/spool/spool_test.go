package spool

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestSpool(t *testing.T) {
	head := "Subject: x\r\nReceived: y\r\n\r\n"
	for _, tc := range []struct {
		name             string
		size             int
		onDisk, oversize bool
	}{
		{"memory", 100, false, false},
		{"disk", 5000, true, false},
		{"oversize", 20000, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(1024, 10000, t.TempDir())
			defer m.Close()
			body := strings.Repeat("b", tc.size)
			for _, chunk := range []string{head, body[:tc.size/2], body[tc.size/2:]} {
				if _, err := m.Write([]byte(chunk)); err != nil {
					t.Fatal(err)
				}
			}
			if m.OnDisk() != tc.onDisk || m.Oversize() != tc.oversize || m.Size() != int64(len(head)+tc.size) {
				t.Fatalf("onDisk %v oversize %v size %d", m.OnDisk(), m.Oversize(), m.Size())
			}
			got, _ := io.ReadAll(m.Reader())
			want := (head + body)[:min(len(head)+tc.size, 10000)]
			if string(got) != want {
				t.Errorf("read back %d bytes, want %d", len(got), len(want))
			}
			if h := m.Header(1 << 20); string(h) != head {
				t.Errorf("header %q", h)
			}
			// Readers are independent.
			a, _ := io.ReadAll(m.Reader())
			if !bytes.Equal(a, got) {
				t.Error("second reader differs")
			}
		})
	}
}
