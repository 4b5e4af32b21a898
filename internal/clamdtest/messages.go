package clamdtest

import (
	"archive/zip"
	"bytes"
	"embed"
	"encoding/base64"
	"path"
	"slices"
	"strings"
)

//go:embed testdata/messages/*.eml
var messageFiles embed.FS

// Message is a test message: Name is its file name without ".eml"; those
// whose name starts with "virus-" carry the EICAR test string, plainly, as
// a base64 attachment or inside a zip attachment.
type Message struct {
	Name  string
	Text  string // CRLF line ends
	Virus bool
}

// Messages returns the test messages of testdata/messages, sorted by
// name, with their placeholders filled in: {{EICAR}}, {{EICAR_BASE64}},
// {{EICAR_ZIP_BASE64}} (a zip holding eicar.com), {{CLEAN_ZIP_BASE64}}
// (a zip holding a text file). The virus is put in at run time so no
// file of the repository carries it.
func Messages() []Message {
	eicar := EICAR()
	fill := strings.NewReplacer(
		"{{EICAR}}", eicar,
		"{{EICAR_BASE64}}", wrap(base64.StdEncoding.EncodeToString([]byte(eicar))),
		"{{EICAR_ZIP_BASE64}}", wrap(base64.StdEncoding.EncodeToString(Zip("eicar.com", eicar))),
		"{{CLEAN_ZIP_BASE64}}", wrap(base64.StdEncoding.EncodeToString(Zip("report.txt", strings.Repeat("All is well.\r\n", 100)))),
	)
	entries, err := messageFiles.ReadDir("testdata/messages")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	var out []Message
	for _, e := range entries {
		b, err := messageFiles.ReadFile(path.Join("testdata/messages", e.Name()))
		if err != nil {
			panic(err)
		}
		name := strings.TrimSuffix(e.Name(), ".eml")
		out = append(out, Message{Name: name, Text: fill.Replace(string(b)), Virus: strings.HasPrefix(name, "virus-")})
	}
	slices.SortFunc(out, func(a, b Message) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Zip returns a zip archive holding one deflated file.
func Zip(name, content string) []byte {
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	w, err := z.Create(name)
	if err == nil {
		_, err = w.Write([]byte(content))
	}
	if err == nil {
		err = z.Close()
	}
	if err != nil {
		panic(err) // in memory: cannot fail
	}
	return buf.Bytes()
}

// wrap cuts base64 into 76-character lines (RFC 2045).
func wrap(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76])
		b.WriteString("\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}
