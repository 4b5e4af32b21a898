package test

// The MIME parse and the attachment and content policies end to end: the
// real binary in front of the recording upstream, real clients, clients
// from 127.0.3.0/24 (this file's range). Every test has a gateway and
// client addresses of its own, so they run in parallel.

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"mailgate/internal/recorder"
)

// mimeMessage is a multipart/mixed message from sender with a text part
// and one attachment (name, content type, bytes; none if name is "").
func mimeMessage(from, text, name, ctype string, data []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: bob@example.com\r\nSubject: test\r\nMIME-Version: 1.0\r\n", from)
	b.WriteString("Content-Type: multipart/mixed; boundary=\"==b1==\"\r\n\r\n")
	b.WriteString("--==b1==\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n")
	if name != "" {
		fmt.Fprintf(&b, "--==b1==\r\nContent-Type: %s; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\n", ctype, name, name)
		b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
		enc := base64.StdEncoding.EncodeToString(data)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
	}
	b.WriteString("--==b1==--\r\n")
	return b.String()
}

var (
	mimeExe = append([]byte("MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff"), make([]byte, 200)...)
	mimePDF = []byte("%PDF-1.4\n1 0 obj\n<</Type/Catalog>>\nendobj\ntrailer\n<</Root 1 0 R>>\n%%EOF\n")
)

func mimeZip(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	fw, err := w.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mimeDelivered fails unless the upstream got exactly one message from
// sender, and returns it.
func mimeDelivered(t *testing.T, up *recorder.Server, what string, err error, from string) []byte {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	stateGot(t, up, from, "bob@example.com")
	return stateFrom(up, from)[0].Data
}

// Attachments: barred names are refused, in the message, inside a zip and
// inside a structure too deep to parse, even from an allow-listed sender;
// a clean PDF is delivered.
func TestMIMEAttachments(t *testing.T) {
	t.Parallel()
	up, addr, g := plainGateway(t, "filters:\n  attachments: {}\n  senders: {allow: [trusted@example.net]}\n")

	err := sendOne(t, "127.0.3.1", addr, "exe@example.net",
		mimeMessage("exe@example.net", "Your invoice.", "invoice.pdf.exe", "application/octet-stream", mimeExe))
	refusedUndelivered(t, up, "exe attachment", err, 554, "5.7.1",
		"Message refused: attachment invoice.pdf.exe is not allowed (exe)", "exe@example.net")

	err = sendOne(t, "127.0.3.1", addr, "trusted@example.net",
		mimeMessage("trusted@example.net", "From a friend.", "SETUP.EXE", "application/x-msdownload", mimeExe))
	refusedUndelivered(t, up, "exe from an allow-listed sender", err, 554, "5.7.1",
		"Message refused: attachment SETUP.EXE is not allowed (exe)", "trusted@example.net")

	err = sendOne(t, "127.0.3.2", addr, "zip@example.net",
		mimeMessage("zip@example.net", "Documents attached.", "documents.zip", "application/zip", mimeZip(t, "scan/invoice.scr", mimeExe)))
	refusedUndelivered(t, up, "exe in a zip", err, 554, "5.7.1",
		"Message refused: attachment documents.zip is not allowed (scan/invoice.scr inside: scr)", "zip@example.net")
	stateDecision(t, g, "127.0.3.2", "attachments", `zip entry "scan/invoice.scr"`)

	// A message in a digest that declares no type is a message (RFC 2046
	// §5.1.5), attachments and all, not a text part.
	inner := mimeMessage("mallory@example.net", "Run this.", "tool.scr", "application/octet-stream", mimeExe)
	digest := "From: list@example.net\r\nTo: bob@example.com\r\nSubject: digest\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/digest; boundary=\"dg\"\r\n\r\n--dg\r\n\r\n" + inner + "--dg--\r\n"
	err = sendOne(t, "127.0.3.2", addr, "list@example.net", digest)
	refusedUndelivered(t, up, "exe in a digest's message", err, 554, "5.7.1",
		"Message refused: attachment tool.scr is not allowed (scr)", "list@example.net")

	// Nested too deep to parse: the raw file names are judged.
	bomb := strings.Replace(mimeBomb("deep@example.net", 30), "Content-Type: text/plain\r\n",
		"Content-Type: application/octet-stream; name=\"payload.exe\"\r\n", 1)
	err = sendOne(t, "127.0.3.2", addr, "deep@example.net", bomb)
	refusedUndelivered(t, up, "exe in a bomb", err, 554, "5.7.1",
		"Message refused: attachment payload.exe is not allowed (exe)", "deep@example.net")

	msg := mimeMessage("pdf@example.net", "The report.", "report.pdf", "application/pdf", mimePDF)
	got := mimeDelivered(t, up, "clean PDF", sendOne(t, "127.0.3.3", addr, "pdf@example.net", msg), "pdf@example.net")
	if !bytes.Contains(got, []byte(msg)) {
		t.Errorf("the upstream got a different message:\n%s", got)
	}
	if bytes.Contains(got, []byte("X-Mailgate-MIME")) {
		t.Errorf("a parsed message was marked unparsed:\n%s", got)
	}
	stateTotal(t, up, 1)
}

// Content rules: a deny_body line in a decoded part is refused without
// echoing anything; a deny_headers field too.
func TestMIMEContentRules(t *testing.T) {
	t.Parallel()
	up, addr, g := plainGateway(t, `filters:
  content:
    deny_body: ['(?i)wire transfer.*urgent']
    deny_headers: ['^Subject: .*CODEWORD']
`)
	// Base64, so that only the decoded text matches.
	body := base64.StdEncoding.EncodeToString([]byte("Dear Bob,\r\nplease make the Wire Transfer today, it is URGENT.\r\n"))
	msg := "From: ceo@example.net\r\nTo: bob@example.com\r\nSubject: payment\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body + "\r\n"
	refusedUndelivered(t, up, "deny_body", sendOne(t, "127.0.3.4", addr, "ceo@example.net", msg), 554, "5.7.1",
		"Message refused by content policy", "ceo@example.net")
	d := stateDecision(t, g, "127.0.3.4", "content", "deny_body[0]")
	if r := d["reason"].(string); !strings.Contains(r, "line 2 of part 1") {
		t.Errorf("decision reason %q", r)
	}

	msg = "From: a@example.net\r\nTo: bob@example.com\r\nSubject: the CODEWORD\r\n\r\nhello\r\n"
	refusedUndelivered(t, up, "deny_headers", sendOne(t, "127.0.3.5", addr, "hdr@example.net", msg), 554, "5.7.1",
		"Message refused by content policy", "hdr@example.net")
	stateDecision(t, g, "127.0.3.5", "content", "deny_headers[0]")

	// With no attachments filter, attachments are read for their header
	// only (filters.mime): the text part beside one is still read.
	msg = mimeMessage("att@example.net", "Please make the wire transfer, it is urgent.", "doc.pdf", "application/pdf", mimePDF)
	refusedUndelivered(t, up, "deny_body beside an attachment", sendOne(t, "127.0.3.9", addr, "att@example.net", msg), 554, "5.7.1",
		"Message refused by content policy", "att@example.net")
	if r := stateDecision(t, g, "127.0.3.9", "content", "deny_body[0]")["reason"].(string); !strings.Contains(r, "line 1 of part 1") {
		t.Errorf("decision reason %q", r)
	}

	mimeDelivered(t, up, "clean", sendOne(t, "127.0.3.5", addr, "clean@example.net", testMessage), "clean@example.net")
	stateTotal(t, up, 1)
}

// mimeBomb is a message of multiparts nested n deep, never closed: enmime
// alone takes exponential time on it.
func mimeBomb(from string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: bob@example.com\r\nSubject: bomb\r\nX-Mailgate-MIME: parsed (forged)\r\nMIME-Version: 1.0\r\n", from)
	b.WriteString("Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i-1, i)
	}
	fmt.Fprintf(&b, "--b%d\r\nContent-Type: text/plain\r\n\r\nboom\r\n", n)
	return b.String()
}

// A 30-deep unclosed multipart bomb is handled at once: under the default
// malformed: accept it is delivered marked unparsed (a forged mark
// removed); under malformed: reject it is refused.
func TestMIMEBomb(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"accept", "reject"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			src := map[string]string{"accept": "127.0.3.6", "reject": "127.0.3.7"}[policy]
			up, addr, _ := plainGateway(t, fmt.Sprintf("filters:\n  mime: {malformed: %s}\n  content: {deny_body: [nothing-matches-this]}\n", policy))
			from := "bomb-" + policy + "@example.net"
			start := time.Now()
			err := sendOne(t, src, addr, from, mimeBomb(from, 30))
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the bomb took %v", d)
			}
			if policy == "reject" {
				refusedUndelivered(t, up, "bomb", err, 554, "5.6.0",
					"Message refused: malformed MIME structure (multipart nesting deeper than 10 levels)", from)
				return
			}
			got := string(mimeDelivered(t, up, "bomb", err, from))
			if !strings.Contains(got, "X-Mailgate-MIME: unparsed (multipart nesting deeper than 10 levels)\r\n") {
				t.Errorf("no X-Mailgate-MIME header:\n%.600s", got)
			}
			if strings.Contains(got, "forged") {
				t.Errorf("the sender's X-Mailgate-MIME went through:\n%.600s", got)
			}
		})
	}
}

// Shadow mode: a barred attachment is logged as a refusal that was not
// applied, and delivered.
func TestMIMEShadow(t *testing.T) {
	t.Parallel()
	up, addr, g := plainGateway(t, "filters:\n  attachments: {mode: shadow, deny_extensions: [exe], deny_types: [application/x-msdownload]}\n")
	msg := mimeMessage("shadow@example.net", "Try this.", "tool.exe", "application/octet-stream", mimeExe)
	mimeDelivered(t, up, "exe in shadow mode", sendOne(t, "127.0.3.8", addr, "shadow@example.net", msg), "shadow@example.net")
	d := stateDecision(t, g, "127.0.3.8", "attachments", `file name "tool.exe"`)
	if d["verdict"] != "reject" || d["shadow"] != true {
		t.Errorf("shadow decision %v", d)
	}
}
