package clamd_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailgate/internal/clamd"
	"mailgate/internal/clamdtest"
)

// benchMessage is a clean message of about size bytes: a text body and,
// past 8 KB, a base64 attachment of random bytes (the shape of most
// large mail).
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: a@example.com\r\nTo: b@example.org\r\nSubject: benchmark\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\n")
	for i := 0; b.Len() < min(size, 4000)-100; i++ {
		fmt.Fprintf(&b, "Line %d of a perfectly ordinary message.\r\n", i)
	}
	if rest := size - b.Len() - 200; rest > 4000 {
		b.WriteString("--b1\r\nContent-Type: application/octet-stream\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n")
		raw := make([]byte, rest*3/4)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range raw {
			raw[i] = byte(r.Uint32())
		}
		enc := base64.StdEncoding.EncodeToString(raw)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
	}
	b.WriteString("--b1--\r\n")
	return b.Bytes()
}

// BenchmarkScan: sequential scans of one message by a real clamd, on
// each of its sockets.
func BenchmarkScan(b *testing.B) {
	d := clamdtest.Start(b)
	for _, size := range []int{4 << 10, 280 << 10} {
		msg := benchMessage(size)
		for _, addr := range []string{d.Unix(), d.TCP()} {
			name := fmt.Sprintf("%dKB/%s", size>>10, strings.SplitN(addr, ":", 2)[0])
			b.Run(name, func(b *testing.B) {
				c, err := clamd.New(addr, 4)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(msg)))
				cpu0 := cpuTime()
				for b.Loop() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					r, err := c.Scan(ctx, bytes.NewReader(msg))
					cancel()
					if err != nil || r.Infected || r.Bytes != int64(len(msg)) {
						b.Fatalf("%+v, %v", r, err)
					}
				}
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}

// cpuTime is the CPU time (user and system) the test process has used:
// the client's share of a scan, which the wall time mixes with clamd's.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
