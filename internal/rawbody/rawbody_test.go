package rawbody

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestQPDecode(t *testing.T) {
	for in, want := range map[string]string{
		"a=3Db":            "a=b",
		"soft=\r\nbreak":   "softbreak",
		"soft=\nbreak":     "softbreak",
		"keep = and =zz":   "keep = and =zz",
		"end=":             "end=",
		"end=\r":           "end=\r",
		"=E2=82=AC":        "€",
		"lower =e2=82=ac.": "lower €.",
	} {
		if got := string(QPDecode([]byte(in))); got != want {
			t.Errorf("QPDecode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBody(t *testing.T) {
	for in, want := range map[string]string{
		"A: b\r\n c\r\n\r\nbody\r\n":      "body\r\n",
		"A: b\r\nnot a field\r\nmore\r\n": "not a field\r\nmore\r\n",
		"A: b\r\n":                        "",
		"\r\nbody":                        "body",
	} {
		if got := Body([]byte(in)); string(got) != want {
			t.Errorf("Body(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTexts(t *testing.T) {
	text := "Your parcel is waiting at http://listed.example/track - confirm soon.\r\n"
	enc := base64.StdEncoding.EncodeToString([]byte(text))
	msg := "Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsoft=\r\nbreak =3D\r\n" +
		"--b\r\nContent-Transfer-Encoding: base64\r\n\r\n" + enc[:60] + "\r\n" + enc[60:] + "\r\n" +
		"--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR and more bytes")) + "\r\n--b--\r\n"
	got := Texts([]byte(msg))
	if len(got) != 2 {
		t.Fatalf("%d readings, want the body and one base64 text: %q", len(got), got)
	}
	if !strings.Contains(string(got[0]), "softbreak =") || strings.Contains(string(got[0]), "Subject") {
		t.Errorf("body %q: want the header skipped and quoted-printable undone", got[0])
	}
	if string(got[1]) != text {
		t.Errorf("base64 text %q, want %q", got[1], text)
	}
}

// FuzzBase64Texts: any text encoded as a mail client encodes it (76
// characters a line) comes back whole from a raw body.
func FuzzBase64Texts(f *testing.F) {
	f.Add("please log in at http://example.com/ today", uint8(76))
	f.Add("x", uint8(60))
	f.Fuzz(func(t *testing.T, text string, width uint8) {
		if len(text) < 12 || !isText([]byte(text)) {
			return // shorter encodings are not taken for base64
		}
		w := max(int(width)/4*4, minBase64Line+4)
		enc := base64.StdEncoding.EncodeToString([]byte(text))
		var body strings.Builder
		body.WriteString("some text before\r\n")
		for len(enc) > w {
			body.WriteString(enc[:w] + "\r\n")
			enc = enc[w:]
		}
		body.WriteString(enc + "\r\n-- \r\na signature\r\n")
		got := Base64Texts([]byte(body.String()))
		if len(got) != 1 || string(got[0]) != text {
			t.Fatalf("%q (width %d): got %q", text, w, got)
		}
	})
}
