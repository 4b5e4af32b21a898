package attachments

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"mailgate/config"
	"mailgate/internal/mimeparse"
	"mailgate/internal/spool"
	"mailgate/pipeline"
)

var (
	exe  = append([]byte("MZ\x90\x00\x03\x00\x00\x00"), make([]byte, 100)...)
	elf  = append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 100)...)
	pdf  = []byte("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n")
	text = []byte("just some text\r\n")
)

// entry is one file of a test zip.
type entry struct {
	name      string
	data      []byte
	encrypted bool // flagged encrypted (the data is stored as is)
}

func buildZip(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for _, e := range entries {
		if e.encrypted {
			fw, err := w.CreateRaw(&zip.FileHeader{Name: e.name, Method: zip.Store, Flags: 0x1,
				CompressedSize64: uint64(len(e.data)), UncompressedSize64: uint64(len(e.data))})
			if err != nil {
				t.Fatal(err)
			}
			fw.Write(e.data)
			continue
		}
		fw, err := w.Create(e.name)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(e.data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// part is an attachment as the mime filter would parse it.
func part(name string, content []byte) mimeparse.Part {
	return mimeparse.Part{ContentType: "application/octet-stream", Detected: mimeparse.Detect(content),
		Filename: name, Disposition: "attachment", Content: content, Depth: 1}
}

func defaultFilter(t testing.TB, mod func(*Config)) *Filter {
	t.Helper()
	c := Config{DenyExtensions: config.DefaultDenyExtensions, ScanArchives: true}
	if mod != nil {
		mod(&c)
	}
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestNames(t *testing.T) {
	f := defaultFilter(t, func(c *Config) { c.DenyExtensions = append(c.DenyExtensions, "tar.gz", ".PS1") })
	for name, want := range map[string]string{
		"report.pdf":          "",
		"invoice.pdf.EXE":     "exe",
		"a.tar.exe":           "exe",
		"a.exe.pdf":           "",
		"exe":                 "",
		"evil.exe.":           "exe",
		"evil.exe . . ":       "exe",
		"evil.exe\x00.pdf":    "exe",
		`C:\temp\evil.Scr`:    "scr",
		"../../evil.js":       "js",
		"evil.exe:stream.txt": "exe",
		"meeting 10:30.pdf":   "",
		"backup.TAR.GZ":       "tar.gz",
		"run.ps1":             "ps1",
		"archive.gz":          "",
		"€ invoice.pdf.exe":   "exe",
		"":                    "",
	} {
		if got := f.barredName(name); got != want {
			t.Errorf("barredName(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	nested := buildZip(t, file("docs/readme.txt", text), file("inner.zip", buildZip(t, file("tool.SCR", text))))
	deep := buildZip(t, file("mid.zip", buildZip(t, file("inner.zip", buildZip(t, file("evil.exe", exe))))))
	many := make([]entry, 0, 1002)
	for i := 0; i < 1001; i++ {
		many = append(many, file(fmt.Sprintf("f%04d.txt", i), text))
	}
	many = append(many, file("last.jpg", exe))
	typed := func(c *Config) { c.DenyTypes = []string{"application/x-msdownload", "application/x-executable"} }
	for _, c := range []struct {
		name   string
		mod    func(*Config)
		parts  []mimeparse.Part
		reply  string // "" for pass
		reason string // a part of the log reason
	}{
		{"clean pdf", nil, []mimeparse.Part{part("report.pdf", pdf)}, "", ""},
		{"exe by name", nil, []mimeparse.Part{part("report.pdf", pdf), part("invoice.pdf.EXE", pdf)},
			"554 5.7.1 Message refused: attachment invoice.pdf.EXE is not allowed (exe)", "part 2"},
		{"exe by another spelling", nil,
			[]mimeparse.Part{{ContentType: "application/pdf", Detected: "application/pdf", Filename: "a.pdf", AltNames: []string{"b.txt", "a.vbs"}}},
			"554 5.7.1 Message refused: attachment a.vbs is not allowed (vbs)", ""},
		{"name sanitised", nil, []mimeparse.Part{part("x\r\nRCPT TO:<a@b>"+strings.Repeat("a", 200)+".bat", text)},
			"554 5.7.1 Message refused: attachment x??RCPT TO:<a@b>" + strings.Repeat("a", 84) + " is not allowed (bat)", ""},
		{"exe content with an innocent name, types not barred", nil, []mimeparse.Part{part("photo.jpg", exe)}, "", ""},
		{"exe content with an innocent name", typed, []mimeparse.Part{part("photo.jpg", exe)},
			"554 5.7.1 Message refused: attachment photo.jpg is not allowed (application/x-msdownload)", "detected type"},
		{"unnamed ELF", typed, []mimeparse.Part{{ContentType: "text/plain", Text: true, Detected: "text/plain"}, {ContentType: "application/octet-stream", Detected: mimeparse.Detect(elf), Content: elf}},
			"554 5.7.1 Message refused: attachment (unnamed part 2) is not allowed (application/x-executable)", ""},
		{"exe in zip", nil, []mimeparse.Part{part("invoice.zip", buildZip(t, file("readme.txt", text), file("payload.exe", exe)))},
			"554 5.7.1 Message refused: attachment invoice.zip is not allowed (payload.exe inside: exe)", `zip entry "payload.exe"`},
		{"zip judged by content, not name", nil, []mimeparse.Part{part("photos.dat", buildZip(t, file("x/y/run.cmd", text)))},
			"554 5.7.1 Message refused: attachment photos.dat is not allowed (x/y/run.cmd inside: cmd)", ""},
		{"exe content in zip", typed, []mimeparse.Part{part("pics.zip", buildZip(t, file("pic.jpg", exe)))},
			"554 5.7.1 Message refused: attachment pics.zip is not allowed (pic.jpg inside: application/x-msdownload)", ""},
		{"zip in zip", nil, []mimeparse.Part{part("outer.zip", nested)},
			"554 5.7.1 Message refused: attachment outer.zip is not allowed (inner.zip/tool.SCR inside: scr)", ""},
		{"only one level of nesting", nil, []mimeparse.Part{part("deep.zip", deep)}, "", ""},
		{"archives not scanned", func(c *Config) { c.ScanArchives = false },
			[]mimeparse.Part{part("invoice.zip", buildZip(t, file("payload.exe", exe)))}, "", ""},
		{"clean zip", typed, []mimeparse.Part{part("docs.zip", buildZip(t, file("a.pdf", pdf), file("b.txt", text)))}, "", ""},
		{"encrypted zip, names still judged", nil, []mimeparse.Part{part("secret.zip", buildZip(t, secret("secret.exe", exe)))},
			"554 5.7.1 Message refused: attachment secret.zip is not allowed (secret.exe inside: exe)", ""},
		{"encrypted zip passes", typed, []mimeparse.Part{part("secret.zip", buildZip(t, secret("secret.dat", exe)))},
			"", "encrypted entries not scanned"},
		{"corrupt zip passes", nil, []mimeparse.Part{part("broken.zip", []byte("PK\x03\x04 this is not really a zip"))},
			"", "unreadable zip, not scanned"},
		{"all names judged", nil, []mimeparse.Part{part("many.zip", buildZip(t, append(many[:1001:1001], file("z.exe", text))...))},
			"554 5.7.1 Message refused: attachment many.zip is not allowed (z.exe inside: exe)", ""},
		{"contents of the first 1000 entries", typed, []mimeparse.Part{part("many.zip", buildZip(t, many...))},
			"", "contents of the first 1000 of 1002 entries scanned"},
		{"tempfail", func(c *Config) { c.Action = Tempfail }, []mimeparse.Part{part("a.js", text)},
			"451 4.7.1 Message refused: attachment a.js is not allowed (js)", ""},
	} {
		f := defaultFilter(t, c.mod)
		v := f.check(&mimeparse.Message{Parts: c.parts})
		switch {
		case c.reply == "" && v.Action != pipeline.Continue:
			t.Errorf("%s: %v %s (%s)", c.name, v.Action, v.Reply, v.Reason)
		case c.reply != "" && v.Reply.String() != c.reply:
			t.Errorf("%s: reply %q\nwant        %q", c.name, v.Reply.String(), c.reply)
		case !strings.Contains(v.Reason, c.reason):
			t.Errorf("%s: reason %q, want %q in it", c.name, v.Reason, c.reason)
		}
	}
}

// TestBudget: a nested zip that unpacks to more than the budget is not
// unpacked.
func TestBudget(t *testing.T) {
	big := make([]byte, MaxUnpacked+1000)
	var inner bytes.Buffer
	w := zip.NewWriter(&inner)
	fw, _ := w.CreateHeader(&zip.FileHeader{Name: "zeros.bin", Method: zip.Store})
	fw.Write(big)
	fw, _ = w.Create("evil.exe")
	fw.Write(exe)
	w.Close()
	outer := buildZip(t, file("inner.zip", inner.Bytes()))
	if len(outer) > 1<<20 {
		t.Fatalf("outer zip of %d bytes: meant to be small", len(outer))
	}
	f := defaultFilter(t, nil)
	v := f.check(&mimeparse.Message{Parts: []mimeparse.Part{part("bomb.zip", outer)}})
	if v.Action != pipeline.Continue || !strings.Contains(v.Reason, "nested zip not scanned: more than 10485760 bytes decompressed") {
		t.Errorf("verdict %v %q", v.Action, v.Reason)
	}
	// The budget is charged for what was read, never more than allowed.
	budget := int64(100)
	zr, _ := zip.NewReader(bytes.NewReader(outer), int64(len(outer)))
	if _, err := whole(zr.File[0], &budget); err != errBudget || budget != 0 {
		t.Errorf("whole: %v, budget %d", err, budget)
	}
	if _, err := head(zr.File[0], &budget); err != errBudget {
		t.Errorf("head with no budget: %v", err)
	}
}

// TestData: the filter parses the message itself when no mime filter ran,
// and reads t.MIME when one did.
func TestData(t *testing.T) {
	zipped := buildZip(t, file("payload.exe", exe))
	msg := "From: a@example.net\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
		"--b\r\nContent-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString(zipped) + "\r\n--b--\r\n"
	m := spool.New(1<<20, 1<<20, "")
	defer m.Close()
	m.Write([]byte(msg))
	f := defaultFilter(t, nil)
	v := f.Data(context.Background(), &pipeline.Session{}, &pipeline.Transaction{}, m)
	if v.Reply.String() != "554 5.7.1 Message refused: attachment invoice.zip is not allowed (payload.exe inside: exe)" {
		t.Errorf("reply %q (%s)", v.Reply.String(), v.Reason)
	}
	tx := &pipeline.Transaction{MIME: &mimeparse.Message{}}
	if v := f.Data(context.Background(), &pipeline.Session{}, tx, m); v.Action != pipeline.Continue {
		t.Errorf("with an empty t.MIME: %v", v.Action)
	}
}

func TestNew(t *testing.T) {
	for _, c := range []Config{
		{Action: "bounce"},
		{DenyExtensions: []string{""}},
		{DenyExtensions: []string{"a/b"}},
		{DenyTypes: []string{"exe"}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	f := defaultFilter(t, nil)
	if f.Name() != "attachments" || f.Kind() != pipeline.Policy {
		t.Error("name/kind")
	}
}

// FuzzScanZip: no zip, however broken, panics the filter or escapes the
// budget.
func FuzzScanZip(f *testing.F) {
	f.Add(buildZip(f, file("a.txt", text), file("inner.zip", buildZip(f, file("b.bin", exe)))))
	f.Add(buildZip(f, secret("s.dat", exe)))
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	flt := defaultFilter(f, func(c *Config) { c.DenyTypes = []string{"application/x-msdownload"} })
	f.Fuzz(func(t *testing.T, data []byte) {
		budget := int64(MaxUnpacked)
		flt.scanZip(data, &budget, false)
		if budget < 0 {
			t.Fatalf("budget %d", budget)
		}
	})
}

func file(name string, data []byte) entry   { return entry{name: name, data: data} }
func secret(name string, data []byte) entry { return entry{name: name, data: data, encrypted: true} }

// TestUnparsed: a message too deep (or too large) to parse has its raw
// file names judged.
func TestUnparsed(t *testing.T) {
	var b strings.Builder
	b.WriteString("Subject: deep\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i-1, i)
	}
	clean := b.String() + "--b12\r\nContent-Type: application/pdf;\r\n\tname=\"report.pdf\"\r\n\r\n%PDF\r\n"
	evil := b.String() + "--b12\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n\tfilename*=utf-8''invoice%2Epdf%2Eexe\r\n\r\nTVqQ\r\n"
	f := defaultFilter(t, nil)
	for _, c := range []struct {
		name, msg, reply string
		mime             *mimeparse.Message
	}{
		{"deep, clean", clean, "", nil},
		{"deep, barred name", evil, "554 5.7.1 Message refused: attachment invoice.pdf.exe is not allowed (exe)", nil},
		{"too large to parse", evil, "554 5.7.1 Message refused: attachment invoice.pdf.exe is not allowed (exe)", &mimeparse.Message{Skipped: true}},
		{"parsed: the parts count, not raw lines", evil, "", &mimeparse.Message{}},
	} {
		m := spool.New(1<<20, 1<<20, "")
		m.Write([]byte(c.msg))
		v := f.Data(context.Background(), &pipeline.Session{}, &pipeline.Transaction{MIME: c.mime}, m)
		m.Close()
		if got := v.Reply.String(); c.reply == "" && v.Action != pipeline.Continue || c.reply != "" && got != c.reply {
			t.Errorf("%s: %v %q (%s)", c.name, v.Action, got, v.Reason)
		}
		if c.reply != "" && !strings.HasPrefix(v.Reason, "unparsed message") {
			t.Errorf("%s: reason %q", c.name, v.Reason)
		}
	}
}

func TestRawNames(t *testing.T) {
	msg := "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\ncontent-type: text/plain; name=a.txt\r\n" +
		"X-Other: name=no.exe\r\nContent-Disposition : attachment;\r\n filename=\"b.pdf\"\r\n\r\n" +
		strings.Repeat("y", 100<<10) + "\r\nContent-Type: application/zip; name=c.zip\r\n"
	got, err := rawNames(strings.NewReader(msg), 1<<20)
	if err != nil || strings.Join(got, ",") != "a.txt,b.pdf,c.zip" {
		t.Errorf("rawNames = %q, %v", got, err)
	}
	got, _ = rawNames(strings.NewReader(msg), 200)
	if strings.Join(got, ",") != "a.txt,b.pdf" {
		t.Errorf("rawNames within 200 bytes = %q", got)
	}
}
