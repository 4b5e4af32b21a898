package test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailgate/internal/recorder"
)

// A message for a local domain reaches the upstream, with the gateway's
// Received header on top, and the client's 250 comes after the upstream's.
func TestDeliverInbound(t *testing.T) {
	up, addr, g := plainGateway(t, "")

	c := client(t, "127.0.0.2", addr)
	if err := send(c, "alice@example.net", []string{"bob@example.com", "carol@EXAMPLE.org"}, testMessage); err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs, err := up.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "alice@example.net" || strings.Join(m.Rcpts, ",") != "bob@example.com,carol@example.org" {
		t.Errorf("upstream got from %q rcpts %q", m.From, m.Rcpts)
	}
	if m.Helo != "mx.gateway.test" {
		t.Errorf("gateway introduced itself upstream as %q, want its hostname", m.Helo)
	}
	data := string(m.Data)
	if !strings.HasPrefix(data, "Received: from client.example.net ([127.0.0.2])") {
		t.Errorf("message does not start with our Received header:\n%s", data)
	}
	if unfolded := strings.ReplaceAll(data, "\r\n\t", " "); !strings.Contains(unfolded, "by mx.gateway.test with ESMTP id ") {
		t.Errorf("Received header lacks by/with/id:\n%s", data)
	}
	if !strings.HasSuffix(data, testMessage) {
		t.Errorf("message body changed:\n%q", data)
	}
	msg := g.Log.WaitForClient(t, "message", "127.0.0.2")
	if msg["outcome"] != "delivered" || msg["from"] != "alice@example.net" || msg["client"] != "127.0.0.2" {
		t.Errorf("message log line = %v", msg)
	}
	c.Quit()
	sess := g.Log.WaitForClient(t, "session", "127.0.0.2")
	if sess["end"] != "quit" || sess["messages"] != float64(1) || sess["helo"] != "client.example.net" {
		t.Errorf("session log line = %v", sess)
	}
}

// The upstream's refusal of a recipient reaches the client verbatim.
func TestUpstreamRcptRefusalVerbatim(t *testing.T) {
	up := startUpstream(t, recorder.Options{RejectRcpt: func(rcpt string) string {
		if strings.HasPrefix(rcpt, "nobody@") {
			return "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"
		}
		return ""
	}})
	addr := freeAddr(t)
	startGateway(t, baseConfig(addr, up.Addr(), ""), addr)
	c := client(t, "127.0.0.3", addr)
	if err := c.Mail("alice@example.net", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("nobody@example.com", nil)
	wantCode(t, "RCPT unknown user", err, 550, "5.1.1")
	if !strings.Contains(err.Error(), "Recipient address rejected: User unknown") {
		t.Errorf("refusal text not passed verbatim: %v", err)
	}
	if err := c.Rcpt("bob@example.com", nil); err != nil {
		t.Fatalf("second recipient: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(testMessage))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	msgs, _ := up.WaitMessages(1, 5*time.Second)
	if len(msgs) != 1 || strings.Join(msgs[0].Rcpts, ",") != "bob@example.com" {
		t.Fatalf("upstream messages = %+v", msgs)
	}
}

// The upstream's refusal of the message at end of DATA is passed back, and
// a 4xx stays a 4xx.
func TestUpstreamDataRefusalVerbatim(t *testing.T) {
	reply := "554 5.7.1 Message content rejected by policy"
	up := startUpstream(t, recorder.Options{DataReply: func([]byte) string { return reply }})
	addr := freeAddr(t)
	startGateway(t, baseConfig(addr, up.Addr(), ""), addr)
	c := client(t, "127.0.0.4", addr)
	err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage)
	wantCode(t, "DATA refused upstream", err, 554, "5.7.1")

	reply = "452 4.3.1 Insufficient system storage"
	err = send(c, "alice@example.net", []string{"bob@example.com"}, testMessage)
	wantCode(t, "DATA tempfailed upstream", err, 452, "4.3.1")
}

// Failover: the first upstream refuses connections, the second takes the
// mail.
func TestUpstreamFailover(t *testing.T) {
	dead := freeAddr(t) // nothing listens here
	up := startUpstream(t, recorder.Options{})
	addr := freeAddr(t)
	cfg := strings.Replace(baseConfig(addr, dead, ""), "    - {address: "+dead+", tls: none}",
		"    - {address: "+dead+", tls: none}\n    - {address: "+up.Addr()+", tls: none}", 1)
	startGateway(t, cfg, addr)
	for i := 0; i < 3; i++ {
		c := client(t, "127.0.0.5", addr)
		if err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		c.Quit()
	}
	if _, err := up.WaitMessages(3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// Every upstream failure becomes a 4xx for the client: nothing is
// acknowledged that the upstream did not take.
func TestUpstreamFailuresAreTempfails(t *testing.T) {
	cases := []struct {
		name  string
		fault recorder.Fault
		// stage at which the client sees the 4xx: "rcpt" or "data"
		stage string
	}{
		{"refused banner", recorder.FaultRefuseBanner, "rcpt"},
		{"never greets", recorder.FaultNoBanner, "rcpt"},
		{"closes after RCPT", recorder.FaultCloseAfterRcpt, "data"},
		{"reset mid-DATA", recorder.FaultResetMidData, "data"},
		{"hangs at end of DATA", recorder.FaultHangAtDataEnd, "data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, recorder.Options{})
			up.SetFault(tc.fault)
			addr := freeAddr(t)
			startGateway(t, baseConfig(addr, up.Addr(), ""), addr)
			c := client(t, "127.0.0.6", addr)
			if err := c.Mail("alice@example.net", nil); err != nil {
				t.Fatal(err)
			}
			err := c.Rcpt("bob@example.com", nil)
			if tc.stage == "rcpt" {
				wantCode(t, "RCPT", err, 451, "4.4.1")
				return
			}
			if err != nil {
				t.Fatalf("RCPT: %v", err)
			}
			w, err := c.Data()
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte(testMessage + strings.Repeat("filler line\r\n", 2000)))
			err = w.Close()
			wantCode(t, "end of DATA", err, 451, "4.4.1")
			if len(up.Messages()) != 0 {
				t.Fatalf("upstream recorded a message")
			}
		})
	}
}

// No upstream reachable at all: 451 4.4.1, quickly, at the first RCPT.
func TestNoUpstream(t *testing.T) {
	addr := freeAddr(t)
	startGateway(t, baseConfig(addr, freeAddr(t), ""), addr)
	c := client(t, "127.0.0.7", addr)
	if err := c.Mail("alice@example.net", nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	wantCode(t, "RCPT", c.Rcpt("bob@example.com", nil), 451, "4.4.1")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to give up", d)
	}
}

// Upstream TLS: STARTTLS with the certificate verified against the
// configured CA and server name; a wrong server name fails closed (4xx).
func TestUpstreamTLSVerified(t *testing.T) {
	pki, err := recorder.NewPKI("mail.internal")
	if err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t, recorder.Options{TLSConfig: pki.ServerTLSConfig(), RequireTLS: true})
	for _, tc := range []struct {
		serverName string
		ok         bool
	}{{"mail.internal", true}, {"other.internal", false}} {
		t.Run(tc.serverName, func(t *testing.T) {
			addr := freeAddr(t)
			dir := t.TempDir()
			ca := filepath.Join(dir, "ca.pem")
			os.WriteFile(ca, pki.CAPEM, 0o644)
			cfg := strings.Replace(baseConfig(addr, up.Addr(), ""),
				"{address: "+up.Addr()+", tls: none}",
				"{address: "+up.Addr()+", tls: starttls, ca: "+ca+", server_name: "+tc.serverName+"}", 1)
			startGateway(t, cfg, addr)
			before := len(up.Messages())
			c := client(t, "127.0.0.8", addr)
			err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage)
			if !tc.ok {
				wantCode(t, "RCPT with unverifiable upstream", err, 451, "4.4.1")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := up.WaitMessages(before+1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !msgs[len(msgs)-1].TLS {
				t.Error("upstream did not receive the message over TLS")
			}
		})
	}
}

// Upstream sessions are reused across client sessions; one that the
// upstream closed while idle is replaced without the client noticing.
func TestUpstreamSessionReuse(t *testing.T) {
	up, addr, _ := plainGateway(t, "")
	for i := 0; i < 3; i++ {
		c := client(t, "127.0.0.9", addr)
		if err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		c.Quit()
	}
	if _, err := up.WaitMessages(3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := up.Sessions(); n != 1 {
		t.Errorf("3 client sessions used %d upstream sessions, want 1 (reused)", n)
	}

	// The upstream restarts: the idle session is dead.
	upAddr := up.Addr()
	up.Close()
	up2 := startUpstream(t, recorder.Options{Addr: upAddr})
	c := client(t, "127.0.0.9", addr)
	if err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage); err != nil {
		t.Fatalf("after upstream restart: %v", err)
	}
	if _, err := up2.WaitMessages(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// SIGTERM drains: no new connections, idle sessions get 421, a message
// being received is finished and delivered.
func TestDrainOnSIGTERM(t *testing.T) {
	up, addr, g := plainGateway(t, "")

	busy := dialRaw(t, "127.0.0.10", addr)
	busy.greet()
	busy.openData()
	busy.send("Subject: in flight\r\n\r\nfirst half\r\n")

	idle := dialRaw(t, "127.0.0.11", addr)
	idle.greet()

	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	idle.expect("421 4.3.2")
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections while draining")
		}
		time.Sleep(20 * time.Millisecond)
	}
	busy.send("second half\r\n.\r\n")
	busy.expect("250 ")
	busy.send("QUIT\r\n")
	select {
	case err := <-g.done:
		if err != nil {
			t.Errorf("gateway exit: %v", err)
		}
		g.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not exit after draining")
	}
	msgs, err := up.WaitMessages(1, time.Second)
	if err != nil || !strings.Contains(string(msgs[0].Data), "first half\r\nsecond half\r\n") {
		t.Fatalf("in-flight message not delivered whole: %v", err)
	}
}
