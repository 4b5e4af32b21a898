// Package mix builds the messages of the content benchmark
// (bench/content.sh): a fixed, realistic mix of short plain-text mail,
// HTML newsletters with links and mail with a 200 KB PDF attachment,
// each DKIM-signed by example.net, whose SPF and DMARC records
// (p=reject) are in bench/dnsserver/bench.zone. So every filter of the
// content pipeline does its whole work and every message passes: DKIM
// verifies, DMARC aligns, SPF passes, every link's domain is looked up
// and found clean (NXDOMAIN), and ClamAV finds nothing.
//
// Every message is unique (Message-ID, a line of its text, the
// attachment's bytes), as real mail is: clamd caches the verdicts of
// objects it has seen, and a pool of repeated messages would measure
// that cache. The messages are built (and signed) before anything is
// timed; bench/mixsource sends them, bench/clamdrate scans them.
package mix

import (
	"bytes"
	"crypto"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"mime/quotedprintable"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"crypto/x509"
	"encoding/pem"

	"github.com/emersion/go-msgauth/dkim"
)

// Kind is one kind of message.
type Kind string

// The kinds of the mix, and the probes that must be refused.
const (
	Text   Kind = "text"   // ~2 KB text/plain, one link in the signature
	HTML   Kind = "html"   // ~7 KB multipart/alternative, quoted-printable HTML: 10 links and an image, 4 domains
	Attach Kind = "attach" // text part with a link + a 200 KB application/pdf, base64
	// Probes.
	EICAR Kind = "eicar" // text + an attached EICAR test file: a virus
	// Listed is a text/plain message linking to mailgate-bench-listed.com,
	// which surbl.bench.test lists. Plain text, not HTML: Haraka's uribl
	// plugin (2.0.0) finds no links in multipart messages at all.
	Listed Kind = "listed"
)

// DefaultMix is the benchmark's mix: half short text, a third HTML, the
// rest with an attachment.
const DefaultMix = "text:50,html:35,attach:15"

// Link domains: each is a registrable domain under a real public suffix
// (URL-list filters skip names whose TLD they do not know), none on
// Haraka's uribl.excludes, none listed on surbl.bench.test.
const (
	ShopDomain   = "mailgate-bench-shop.com"
	NewsDomain   = "mailgate-bench-news.net"
	TrackDomain  = "mailgate-bench-track.com"
	CDNDomain    = "mailgate-bench-cdn.org"
	ListedDomain = "mailgate-bench-listed.com"
)

//go:embed bench-dkim.pem
var benchKeyPEM []byte

// BenchKey is the DKIM key whose public half is
// bench._domainkey.example.net in the bench zone.
func BenchKey() (crypto.Signer, error) {
	rest := benchKeyPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("mix: no PRIVATE KEY block in bench-dkim.pem")
		}
		if b.Type != "PRIVATE KEY" {
			continue
		}
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("mix: bench-dkim.pem: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("mix: bench-dkim.pem: not a signing key")
		}
		return s, nil
	}
}

// Options say what the messages look like.
type Options struct {
	From     string // header From and DKIM identity: sender@example.net
	To       string // header To
	Selector string // DKIM selector ("bench"); the domain is From's
	Key      crypto.Signer
	// AttachSize is the attachment's size before base64 (200 KB).
	AttachSize int
	// Seed makes the messages of one run differ from another's.
	Seed uint64
	// Tamper changes the body after signing: DKIM fails (probe).
	Tamper bool
	// Date is the Date header (zero: now).
	Date time.Time
}

// Defaults fills zero fields.
func (o *Options) Defaults() error {
	if o.From == "" {
		o.From = "sender@example.net"
	}
	if o.To == "" {
		o.To = "user@example.com"
	}
	if o.Selector == "" {
		o.Selector = "bench"
	}
	if o.AttachSize == 0 {
		o.AttachSize = 200 << 10
	}
	if o.Date.IsZero() {
		o.Date = time.Now()
	}
	if o.Key == nil {
		k, err := BenchKey()
		if err != nil {
			return err
		}
		o.Key = k
	}
	return nil
}

// ParseMix turns "text:50,html:35,attach:15" into the order one cycle
// of messages is sent in: the weights divided by their greatest common
// divisor, interleaved (smooth weighted round robin), so any run of 20
// consecutive messages has the mix's proportions.
func ParseMix(s string) ([]Kind, error) {
	type entry struct {
		k         Kind
		w, credit int
	}
	var es []entry
	g, total := 0, 0
	for f := range strings.SplitSeq(s, ",") {
		name, ws, ok := strings.Cut(strings.TrimSpace(f), ":")
		w, err := strconv.Atoi(ws)
		k := Kind(name)
		if !ok || err != nil || w < 0 || w > 1000 {
			return nil, fmt.Errorf("mix %q: want kind:weight,... (weights 0-1000)", s)
		}
		switch k {
		case Text, HTML, Attach, EICAR, Listed:
		default:
			return nil, fmt.Errorf("mix %q: unknown kind %q (text, html, attach, eicar, listed)", s, name)
		}
		if w == 0 {
			continue
		}
		es = append(es, entry{k: k, w: w})
		g = gcd(g, w)
		total += w
	}
	if total == 0 {
		return nil, fmt.Errorf("mix %q: no weights", s)
	}
	total /= g
	out := make([]Kind, 0, total)
	for range total {
		best := 0
		for i := range es {
			es[i].credit += es[i].w / g
			if es[i].credit > es[best].credit {
				best = i
			}
		}
		es[best].credit -= total
		out = append(out, es[best].k)
	}
	return out, nil
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// BuildAll builds n messages, message i of kind cycle[i%len(cycle)], on
// all CPUs.
func BuildAll(o Options, cycle []Kind, n int) ([][]byte, error) {
	if err := o.Defaults(); err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	errs := make([]error, n)
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				next.Lock()
				j := i
				i++
				next.Unlock()
				if j >= n {
					return
				}
				out[j], errs[j] = Build(o, cycle[j%len(cycle)], j)
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// Build returns message i of kind k, DKIM-signed, with CRLF line ends
// (not dot-stuffed: see DotStuff).
func Build(o Options, k Kind, i int) ([]byte, error) {
	if err := o.Defaults(); err != nil {
		return nil, err
	}
	domain := o.From[strings.LastIndexByte(o.From, '@')+1:]
	r := rand.New(rand.NewPCG(o.Seed, uint64(i)))
	id := fmt.Sprintf("%x.%d", o.Seed, i)

	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...); b.WriteString("\r\n") }
	subject := subjects[r.IntN(len(subjects))]
	w("From: Alex Sender <%s>", o.From)
	w("To: Jamie User <%s>", o.To)
	w("Subject: %s (%s)", subject, id)
	w("Date: %s", o.Date.Format(time.RFC1123Z))
	w("Message-ID: <%s@%s>", id, domain)
	w("MIME-Version: 1.0")

	switch k {
	case Text, Listed:
		w("Content-Type: text/plain; charset=utf-8")
		w("Content-Transfer-Encoding: 8bit")
		w("")
		link := "https://www." + ShopDomain + "/"
		if k == Listed {
			link = "https://www." + ListedDomain + "/win"
		}
		writeText(&b, r, id, 4, link)
	case HTML:
		boundary := "alt-" + id
		w("Content-Type: multipart/alternative; boundary=%q", boundary)
		w("")
		w("--%s", boundary)
		w("Content-Type: text/plain; charset=utf-8")
		w("Content-Transfer-Encoding: 8bit")
		w("")
		writeText(&b, r, id, 3, "https://www."+ShopDomain+"/")
		w("--%s", boundary)
		w("Content-Type: text/html; charset=utf-8")
		w("Content-Transfer-Encoding: quoted-printable")
		w("")
		writeHTML(&b, r, id)
		w("--%s--", boundary)
	case Attach, EICAR:
		boundary := "mixed-" + id
		w("Content-Type: multipart/mixed; boundary=%q", boundary)
		w("")
		w("--%s", boundary)
		w("Content-Type: text/plain; charset=utf-8")
		w("Content-Transfer-Encoding: 8bit")
		w("")
		writeText(&b, r, id, 2, "https://news."+NewsDomain+"/reports/"+id)
		w("--%s", boundary)
		var data []byte
		name := "report-" + id + ".pdf"
		if k == EICAR {
			name = "eicar-" + id + ".com"
			w("Content-Type: application/octet-stream; name=%q", name)
			data = []byte(eicar())
		} else {
			w("Content-Type: application/pdf; name=%q", name)
			data = fakePDF(o.Seed, i, o.AttachSize)
		}
		w("Content-Disposition: attachment; filename=%q", name)
		w("Content-Transfer-Encoding: base64")
		w("")
		writeBase64(&b, data)
		w("--%s--", boundary)
	default:
		return nil, fmt.Errorf("mix: unknown kind %q", k)
	}

	signer, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 domain,
		Selector:               o.Selector,
		Signer:                 o.Key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"},
	})
	if err != nil {
		return nil, err
	}
	if _, err := signer.Write(b.Bytes()); err != nil {
		return nil, err
	}
	if err := signer.Close(); err != nil {
		return nil, err
	}
	msg := append([]byte(signer.Signature()), b.Bytes()...)
	if o.Tamper {
		// a changed word in the first body line: the body hash fails
		at := bytes.Index(msg, []byte("\r\n\r\n")) + 4
		if j := bytes.IndexByte(msg[at:], ' '); j > 0 {
			msg[at+j-1] ^= 0x20 // flips the case of a letter
		}
	}
	return msg, nil
}

var subjects = []string{
	"Quarterly numbers", "Re: meeting on Thursday", "Your order has shipped",
	"Weekly newsletter", "Invoice attached", "Project status", "Re: Re: the draft",
	"Travel plans", "Team lunch", "Release notes",
}

var paragraphs = []string{
	"Thanks for sending the figures over so quickly. I went through them this morning and most of it lines up with what we discussed last week, but the second table still has the old totals for the northern region.",
	"Could you have another look before Friday? If it is easier we can go through it together on a call; I am free most of Thursday afternoon and could also do early on Friday.",
	"The shipment left the warehouse yesterday evening and should reach you within three working days. You can follow its progress with the link below; tracking updates usually appear a few hours after pickup.",
	"As mentioned in the meeting, the new schedule starts at the beginning of next month. Please let me know if any of the dates do not work for your team so that we can adjust them early.",
	"I attached the latest version of the report. The summary on the first page is new, and the appendix now lists every site separately, as requested by the auditors.",
	"We are still waiting for the final quote from the supplier. Once it arrives I will forward it to everyone on this list together with a short comparison of the three offers.",
	"Many thanks again for your help with the migration. Everything has been running smoothly since Monday, and the users have noticed that the new system is considerably faster.",
	"Please remember that the office will be closed on the public holiday. Urgent requests can still be sent to the usual address and will be handled by whoever is on call.",
}

// writeText writes n paragraphs, a line unique to the message, and a
// signature with one link.
func writeText(b *bytes.Buffer, r *rand.Rand, id string, n int, link string) {
	b.WriteString("Hello Jamie,\r\n\r\n")
	for range n {
		writeWrapped(b, paragraphs[r.IntN(len(paragraphs))], 72)
		b.WriteString("\r\n")
	}
	fmt.Fprintf(b, "Reference: %s\r\n\r\nBest regards,\r\nAlex\r\n-- \r\nAlex Sender, Example Net Ltd\r\n%s\r\n", id, link)
}

func writeWrapped(b *bytes.Buffer, s string, width int) {
	line := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && line+1+len(word) > width {
			b.WriteString("\r\n")
			line = 0
		} else if i > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(word)
		line += len(word)
	}
	b.WriteString("\r\n")
}

// writeHTML writes a newsletter (10 links and an image on 4 domains),
// quoted-printable.
func writeHTML(b *bytes.Buffer, r *rand.Rand, id string) {
	var h strings.Builder
	h.WriteString(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>Newsletter</title>` +
		`<style>body{font-family:Arial,sans-serif;color:#333}td{padding:8px}.btn{background:#0a6;color:#fff}</style></head><body>` + "\n")
	fmt.Fprintf(&h, `<table width="600" align="center"><tr><td><img src="https://cdn.%s/img/logo.png" alt="Example Net" width="200" height="50"></td></tr>`+"\n", CDNDomain)
	// inline styles on every element, as newsletter tools write them
	const td = `style="padding:12px 24px;font-family:Arial,Helvetica,sans-serif;font-size:14px;line-height:20px;color:#333333;background-color:#ffffff;border-bottom:1px solid #eeeeee"`
	const btn = `style="display:inline-block;padding:8px 16px;background-color:#00aa66;color:#ffffff;text-decoration:none;border-radius:4px;font-weight:bold"`
	for j := range 4 {
		fmt.Fprintf(&h, `<tr><td %s><h2 style="margin:0 0 8px 0;font-size:18px;color:#222222">%s</h2><p style="margin:0 0 8px 0">%s</p><p style="margin:0 0 8px 0">%s</p>`+
			`<p style="margin:0"><a href="https://www.%s/offers/%d?ref=%s&amp;utm_source=newsletter&amp;utm_medium=email" %s>Read more</a> `+
			`<a href="https://click.%s/c/%s/%d" style="color:#999999;font-size:11px">track</a></p></td></tr>`+"\n",
			td, subjects[r.IntN(len(subjects))], paragraphs[r.IntN(len(paragraphs))], paragraphs[r.IntN(len(paragraphs))],
			ShopDomain, j, id, btn, TrackDomain, id, j)
	}
	fmt.Fprintf(&h, `<tr><td><p>Reference %s. <a href="https://news.%s/archive">Archive</a> | <a href="https://news.%s/unsubscribe?id=%s">Unsubscribe</a></p></td></tr>`+"\n",
		id, NewsDomain, NewsDomain, id)
	h.WriteString("</table></body></html>\n")
	qp := quotedprintable.NewWriter(b)
	_, _ = qp.Write([]byte(strings.ReplaceAll(h.String(), "\n", "\r\n")))
	_ = qp.Close()
	b.WriteString("\r\n")
}

// fakePDF is size bytes that start and end like a PDF, random between
// (so neither clamd nor a compressor finds them like any other
// message's).
func fakePDF(seed uint64, i, size int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(i))
	data := make([]byte, size)
	_, _ = rand.NewChaCha8(key).Read(data)
	head := fmt.Sprintf("%%PDF-1.4\n%%mailgate bench %x.%d\n1 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n", seed, i, size)
	copy(data, head)
	copy(data[len(data)-len("\nendstream\nendobj\n%%EOF\n"):], "\nendstream\nendobj\n%%EOF\n")
	return data
}

func writeBase64(b *bytes.Buffer, data []byte) {
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString("\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc)
	b.WriteString("\r\n")
}

// eicar is the anti-virus test file, assembled at run time so this
// source is not itself flagged by a scanner.
func eicar() string {
	return `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*"
}

// DotStuff returns msg as the DATA of an SMTP transaction: a leading dot
// doubled on each line, ending with CRLF.
func DotStuff(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+64)
	start := true
	for _, c := range msg {
		if start && c == '.' {
			out = append(out, '.')
		}
		out = append(out, c)
		start = c == '\n'
	}
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}
