package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailgate/internal/recorder"
)

// Client addresses of these tests: 127.0.9.5 (passes), 127.0.9.6 (denied
// by the listener's access rule), 127.0.9.7 (connects to the gateway
// directly, not through the balancer).

// startHAProxy runs Debian's HAProxy in TCP mode: a frontend on a free
// 127.0.0.1 port in front of backend, with serverOpts on the server line
// (send-proxy or send-proxy-v2). It returns the frontend's address.
func startHAProxy(t *testing.T, backend, serverOpts string) string {
	t.Helper()
	bin := requireTool(t, "haproxy")
	front := freeAddr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend smtp
    bind %s
    default_backend gateway

backend gateway
    server gw %s %s
`, front, backend, serverOpts)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	var log logBuffer
	cmd := exec.Command(bin, "-db", "-f", path) // -db: foreground, no daemon
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("haproxy output:\n%s", log.String())
		}
	})
	// Wait for the frontend's socket without connecting through it: a
	// probe would become a session at the gateway.
	deadline := time.Now().Add(10 * time.Second)
	for !haproxyListening(front) {
		select {
		case err := <-done:
			t.Fatalf("haproxy exited: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy not listening on %s:\n%s", front, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return front
}

// listening reports whether a TCP socket listens on addr (127.0.0.1:port),
// from /proc/net/tcp.
func haproxyListening(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf("0100007F:%04X 00000000:0000 0A", p) // 127.0.0.1:port, state LISTEN
	return strings.Contains(string(data), want)
}

func TestProxyProtocolHAProxy(t *testing.T) {
	// HAProxy's own health checks: with send-proxy-v2 they carry a LOCAL
	// header, a session from HAProxy's own address.
	for _, mode := range []string{"send-proxy", "send-proxy-v2 check inter 200ms"} {
		t.Run(strings.Fields(mode)[0], func(t *testing.T) {
			requireTool(t, "haproxy")
			up := startUpstream(t, recorder.Options{})
			gwAddr := freeAddr(t)
			g := startGateway(t, fmt.Sprintf(`hostname: mx.gateway.test
domains: [example.com, example.org]
listeners:
  - name: mx
    address: %s
    tls: none
    auth: off
    proxy_protocol: true
    trusted_proxies: [127.0.0.1/32]
    access: {deny: [127.0.9.6/32]}
upstream:
  servers:
    - {address: %s, tls: none}
  connect_timeout: 2s
  command_timeout: 3s
state: {store: "memory:"}
log: {format: json, level: debug}
`, gwAddr, up.Addr()), gwAddr)
			front := startHAProxy(t, gwAddr, mode)

			// Through HAProxy, the gateway sees the client, not HAProxy.
			c := client(t, "127.0.9.5", front)
			if err := send(c, "alice@example.net", []string{"bob@example.com"}, testMessage); err != nil {
				t.Fatalf("send through HAProxy: %v", err)
			}
			c.Quit()
			msgs, err := up.WaitMessages(1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if data := string(msgs[0].Data); !strings.HasPrefix(data, "Received: from client.example.net ([127.0.9.5])") {
				t.Errorf("Received header does not name the real client:\n%s", data)
			}
			sess := g.Log.WaitForClient(t, "session", "127.0.9.5")
			if sess["end"] != "quit" || sess["messages"] != float64(1) || sess["proxy"] != "127.0.0.1" {
				t.Errorf("session log line = %v", sess)
			}
			if r := g.Log.Find("PROXY header"); len(r) == 0 || r[0]["proxy"] == nil ||
				!strings.HasPrefix(r[0]["proxy"].(string), "127.0.0.1:") || r[0]["client"] == nil {
				t.Errorf("PROXY header debug line = %v", r)
			}

			// The listener's deny rule applies to the real client.
			r := dialRaw(t, "127.0.9.6", front)
			r.expect("554 5.7.1")
			g.Log.WaitForClient(t, "session", "127.0.9.6")

			// Nobody else may send a header: a direct connection from an
			// untrusted address is closed without a banner.
			d := dialRaw(t, "127.0.9.7", gwAddr)
			d.send("PROXY TCP4 192.0.2.1 127.0.0.1 40000 25\r\n")
			if !d.closed() {
				t.Fatal("the gateway kept a direct connection from an untrusted address open")
			}
			refused := waitForLogRecord(t, g, "PROXY protocol: connection refused", "peer", "127.0.9.7")
			if refused["reason"] != "not a trusted proxy" || refused["level"] != "WARN" {
				t.Errorf("refusal log line = %v", refused)
			}
			for _, rec := range g.Log.Find("session") {
				if rec["client"] == "127.0.9.7" || rec["client"] == "192.0.2.1" {
					t.Errorf("a session was started for the untrusted connection: %v", rec)
				}
			}

			if strings.Contains(mode, "check") {
				hc := waitForLogRecord(t, g, "PROXY header", "local_command", true)
				if c, _ := hc["client"].(string); !strings.HasPrefix(c, "127.0.0.1:") || hc["client"] != hc["proxy"] {
					t.Errorf("health check (LOCAL) not served as a session from HAProxy itself: %v", hc)
				}
				waitForLogRecord(t, g, "session", "client", "127.0.0.1")
			}
		})
	}
}

// waitForRecord waits for a log record with msg whose key is value.
func waitForLogRecord(t *testing.T, g *gateway, msg, key string, value any) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range g.Log.Find(msg) {
			if r[key] == value {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %q log line with %s=%v; log:\n%s", msg, key, value, g.Log.String())
	return nil
}
