package mix

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"mailgate/internal/mimeparse"
)

// What the CPU-heavy steps of the gateway's content pipeline cost per
// message of each kind of the mix, outside the server (go test -bench):
// the MIME parse every content filter reads (filters/mime) and the DKIM
// verification (filters/dkim, go-msgauth). bench/content.sh measures
// the whole gateway; these say where its time per message goes.
//
//	go test -run '^$' -bench . ./bench/internal/mix/

func benchMessages(b *testing.B) map[Kind][]byte {
	b.Helper()
	out := map[Kind][]byte{}
	for _, k := range []Kind{Text, HTML, Attach} {
		m, err := Build(Options{Seed: 1}, k, 1)
		if err != nil {
			b.Fatal(err)
		}
		out[k] = m
	}
	return out
}

// BenchmarkMIMEParse: each kind of message, with attachments decoded
// whole, sniffed (filters.attachments on) and skipped (off).
func BenchmarkMIMEParse(b *testing.B) {
	modes := map[string]mimeparse.AttachmentContent{
		"decode": mimeparse.DecodeAttachments, "sniff": mimeparse.SniffAttachments, "skip": mimeparse.SkipAttachments,
	}
	for k, m := range benchMessages(b) {
		for name, mode := range modes {
			b.Run(string(k)+"/"+name, func(b *testing.B) {
				b.SetBytes(int64(len(m)))
				b.ReportAllocs()
				for b.Loop() {
					msg, err := mimeparse.Parse(bytes.NewReader(m), int64(len(m)), mimeparse.Limits{Attachments: mode})
					if err != nil || msg.Malformed != "" {
						b.Fatalf("%v %q", err, msg.Malformed)
					}
				}
			})
		}
	}
}

func BenchmarkDKIMVerify(b *testing.B) {
	key, err := BenchKey()
	if err != nil {
		b.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	txt := []string{"v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)}
	opts := &dkim.VerifyOptions{LookupTXT: func(string) ([]string, error) { return txt, nil }}
	for k, m := range benchMessages(b) {
		b.Run(string(k), func(b *testing.B) {
			b.SetBytes(int64(len(m)))
			b.ReportAllocs()
			for b.Loop() {
				vs, err := dkim.VerifyWithOptions(bytes.NewReader(m), opts)
				if err != nil || len(vs) != 1 || vs[0].Err != nil {
					b.Fatalf("%v %v", err, vs)
				}
			}
		})
	}
}
