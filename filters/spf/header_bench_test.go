package spf

import (
	"net/netip"
	"testing"

	"blitiri.com.ar/go/spf"

	"mailgate/internal/mailaddr"
	"mailgate/pipeline"
)

// BenchmarkReceivedSPF: the trace field is built for every message.
func BenchmarkReceivedSPF(b *testing.B) {
	f := &Filter{hostname: "mx.example.org"}
	s := &pipeline.Session{Client: netip.MustParseAddrPort("192.0.2.1:4000"), Helo: "mail.example.com"}
	from, _ := mailaddr.Parse("bob@example.com")
	c := check{result: spf.Pass, domain: "example.com", sender: "bob@example.com", identity: "mailfrom"}
	b.ReportAllocs()
	for b.Loop() {
		_ = f.receivedSPF(s, from, c)
	}
}
