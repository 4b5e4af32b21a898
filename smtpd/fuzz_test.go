package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// acceptAll is a Handler that says yes to everything.
type acceptAll struct{}

func (acceptAll) Connect(context.Context) *Reply                   { return nil }
func (acceptAll) Helo(context.Context, string, bool) *Reply        { return nil }
func (acceptAll) TLSStarted(tls.ConnectionState)                   {}
func (acceptAll) AuthStart(context.Context) *Reply                 { return nil }
func (acceptAll) Authenticated(string)                             {}
func (acceptAll) AuthFailed(string)                                {}
func (acceptAll) Mail(context.Context, Path, MailParams) *Reply    { return nil }
func (acceptAll) Rcpt(context.Context, Path) *Reply                { return nil }
func (acceptAll) DataStart(context.Context) *Reply                 { return nil }
func (acceptAll) Reset()                                           {}
func (acceptAll) Close(Stats)                                      {}
func (acceptAll) Data(context.Context, *Message, DataResult) Reply { return replyOK }

type denyAll struct{}

func (denyAll) Verify(string, string) bool { return false }

// FuzzSession feeds arbitrary client input to a whole session: the engine
// must never panic, must answer every line with well-formed replies and
// must end the session once the client is gone.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO x\r\nMAIL FROM:<> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<postmaster>\r\nDATA\r\n.\n.\r\n",
		"EHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN dXNlcg==\r\ncGFzcw==\r\nVRFY x\r\nEXPN y\r\nNOOP\r\nRSET\r\n",
		"\x00\xff\r\nGET / HTTP/1.0\r\n",
		"EHLO x\r\nMAIL FROM:<@a,@b:c@d> X=Y\r\nRCPT TO:<\"q\\\"@\"@e>\r\nBDAT 10 LAST\r\n",
	} {
		f.Add([]byte(s))
	}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := NewServer(Config{
			Name: "fuzz", Hostname: "mx.fuzz.test", TLSMode: TLSNone, AuthMode: AuthOptional,
			AuthMechanisms: []string{"PLAIN", "LOGIN"}, Authenticator: denyAll{}, MaxAuthFailures: 3,
			MaxLineLength: 512, MaxCommands: 50, MaxErrors: 10, MaxMessageSize: 1 << 16,
			SpoolThreshold: 1 << 12, SpoolDir: t.TempDir(),
			GreetingTimeout: time.Second, CommandTimeout: time.Second, DataTimeout: 2 * time.Second,
		}, func(ConnInfo) Handler { return acceptAll{} }, log)
		client, server := net.Pipe()
		out := pipeSession(t, newConn(srv, server), client, in)
		for _, line := range bytes.Split(bytes.TrimSuffix(out, []byte("\r\n")), []byte("\r\n")) {
			if len(line) < 4 || line[0] < '2' || line[0] > '5' || line[3] != ' ' && line[3] != '-' {
				t.Fatalf("malformed reply line %q for input %q", line, in)
			}
		}
	})
}

// pipeSession serves c, writes in from the client end of its pipe, closes
// it and returns all the server wrote; it fails if the session does not
// end once the client has left.
func pipeSession(t *testing.T, c *conn, client net.Conn, in []byte) []byte {
	t.Helper()
	done := make(chan struct{})
	go func() { c.serve(); close(done) }()
	var out bytes.Buffer
	readDone := make(chan struct{})
	go func() { io.Copy(&out, client); close(readDone) }()
	client.SetWriteDeadline(time.Now().Add(2 * time.Second))
	client.Write(in)
	client.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("session did not end after the client left; input %q", in)
	}
	<-readDone
	return out.Bytes()
}
