package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitLog waits until the log holds want.
func (l *lockedBuffer) waitLog(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(l.String(), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("log lacks %q:\n%s", want, l.String())
}

// proxyServer is a PROXY listener on 127.0.0.1 whose handler reports each
// connection's ConnInfo.
type proxyServer struct {
	addr  string
	infos chan ConnInfo
	log   *lockedBuffer
	srv   *Server
}

func startProxyServer(t *testing.T, pc ProxyConfig, mod func(*Config)) *proxyServer {
	t.Helper()
	ps := &proxyServer{infos: make(chan ConnInfo, 16), log: &lockedBuffer{}}
	cfg := Config{Name: "mx", Hostname: "mx.test", MaxLineLength: 512, MaxMessageSize: 1 << 20,
		GreetingTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second,
		Proxy: &pc}
	if mod != nil {
		mod(&cfg)
	}
	ps.srv = NewServer(cfg, func(info ConnInfo) Handler {
		ps.infos <- info
		return acceptAll{}
	}, slog.New(slog.NewTextHandler(ps.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps.addr = l.Addr().String()
	go ps.srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ps.srv.Shutdown(ctx)
	})
	return ps
}

// dial connects from src (a loopback address).
func (ps *proxyServer) dial(t *testing.T, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func (ps *proxyServer) info(t *testing.T) ConnInfo {
	t.Helper()
	select {
	case i := <-ps.infos:
		return i
	case <-time.After(5 * time.Second):
		t.Fatalf("no session started; log:\n%s", ps.log)
	}
	return ConnInfo{}
}

// refused fails unless the server closes c without writing anything.
func refused(t *testing.T, c net.Conn) {
	t.Helper()
	got, err := io.ReadAll(c)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading: %v (got %q)", err, got)
	}
	if len(got) != 0 {
		t.Fatalf("server wrote %q, want the connection closed without a banner", got)
	}
}

// talk reads the banner, says EHLO and QUIT, and returns the banner.
func talk(t *testing.T, c net.Conn, br *bufio.Reader) string {
	t.Helper()
	banner, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("banner: %v", err)
	}
	if _, err := c.Write([]byte("EHLO client.example\r\n")); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("EHLO reply: %v", err)
		}
		if !strings.HasPrefix(line, "250") {
			t.Fatalf("EHLO reply %q", line)
		}
		if line[3] == ' ' {
			break
		}
	}
	return banner
}

var trustLoopback = ProxyConfig{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.9.1/32")}}

func tcpAddr(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestProxyV1(t *testing.T) {
	ps := startProxyServer(t, trustLoopback, nil)
	c := ps.dial(t, "127.0.9.1")
	// The header and the first command in one segment, as a balancer
	// forwarding a pipelining client may send them.
	c.Write([]byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n"))
	br := bufio.NewReader(c)
	if banner := talk(t, c, br); !strings.HasPrefix(banner, "220 mx.test ESMTP") {
		t.Fatalf("banner %q", banner)
	}
	info := ps.info(t)
	if info.Remote.String() != "192.0.2.7:40000" || info.Local.String() != "198.51.100.1:25" || info.Proxy.Addr().String() != "127.0.9.1" {
		t.Fatalf("ConnInfo %+v, want the header's addresses", info)
	}
}

func TestProxyV2(t *testing.T) {
	ps := startProxyServer(t, trustLoopback, nil)
	for _, tc := range []struct{ src, dst string }{
		{"203.0.113.9:51000", "198.51.100.1:25"},
		{"[2001:db8::7]:51001", "[2001:db8::25]:25"},
		{"[::ffff:203.0.113.10]:51002", "[::ffff:198.51.100.1]:25"}, // IPv4-mapped: seen as IPv4
	} {
		c := ps.dial(t, "127.0.9.1")
		h := proxyproto.HeaderProxyFromAddrs(2, tcpAddr(tc.src), tcpAddr(tc.dst))
		hb, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		// Header and EHLO in one write: what follows the header is SMTP.
		c.Write(append(hb, "EHLO client.example\r\n"...))
		br := bufio.NewReader(c)
		if banner, _ := br.ReadString('\n'); !strings.HasPrefix(banner, "220 ") {
			t.Fatalf("banner %q", banner)
		}
		if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "250") {
			t.Fatalf("EHLO after the header: %q", line)
		}
		info := ps.info(t)
		want := netip.MustParseAddrPort(tc.src)
		want = netip.AddrPortFrom(want.Addr().Unmap(), want.Port())
		if info.Remote != want || info.Local.Port() != 25 || info.Proxy.Addr().String() != "127.0.9.1" {
			t.Fatalf("header from %s: ConnInfo %+v", tc.src, info)
		}
		if info.Remote.Addr().Is4In6() || info.Local.Addr().Is4In6() {
			t.Fatalf("IPv4-mapped address not unmapped: %+v", info)
		}
		c.Close()
	}
}

// A v2 LOCAL header (the balancer's own health check) and a v1 UNKNOWN one
// are sessions from the balancer itself.
func TestProxyLocalAndUnknown(t *testing.T) {
	ps := startProxyServer(t, trustLoopback, nil)
	local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	for _, hdr := range [][]byte{local, []byte("PROXY UNKNOWN\r\n")} {
		c := ps.dial(t, "127.0.9.1")
		c.Write(hdr)
		talk(t, c, bufio.NewReader(c))
		info := ps.info(t)
		if info.Remote.Addr().String() != "127.0.9.1" || info.Remote != info.Proxy {
			t.Fatalf("header %q: ConnInfo %+v, want the balancer's own address", hdr, info)
		}
		c.Close()
	}
}

// A client that is not a trusted balancer is closed without a banner, even
// with a well-formed header (it could claim any address).
func TestProxyUntrusted(t *testing.T) {
	ps := startProxyServer(t, trustLoopback, nil)
	c := ps.dial(t, "127.0.9.2")
	c.Write([]byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n"))
	refused(t, c)
	ps.log.waitLog(t, `msg="PROXY protocol: connection refused" listener=mx peer=127.0.9.2 reason="not a trusted proxy"`)
	select {
	case info := <-ps.infos:
		t.Fatalf("a session was started: %+v", info)
	default:
	}
}

func TestProxyMalformedOrMissing(t *testing.T) {
	ps := startProxyServer(t, trustLoopback, nil)
	for _, tc := range []struct{ send, log string }{
		{"EHLO client.example\r\n", "no PROXY header (the load balancer must use send-proxy"},
		{"PROXY TCP4 bogus 198.51.100.1 40000 25\r\n", "malformed PROXY header"},
		{"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\n", "malformed PROXY header"},
		{"PROXY TCP9 192.0.2.7 198.51.100.1 40000 25\r\n", "malformed PROXY header"},
		{"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n", "malformed PROXY header"},
		{"\r\n\r\n\x00\r\nQUIT\n\x21\x99\x00\x00", "malformed PROXY header"},         // v2 signature, bad family
		{"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x01\x02", "malformed PROXY header"}, // truncated, then closed
	} {
		c := ps.dial(t, "127.0.9.1")
		c.Write([]byte(tc.send))
		if strings.HasSuffix(tc.send, "\x01\x02") {
			c.(*net.TCPConn).CloseWrite()
		}
		refused(t, c)
		ps.log.waitLog(t, tc.log)
	}
	select {
	case info := <-ps.infos:
		t.Fatalf("a session was started: %+v", info)
	default:
	}
}

// A balancer's TCP health check (connect, close) is not worth a warning.
func TestProxyHealthCheckQuiet(t *testing.T) {
	ps := startProxyServer(t, trustLoopback, nil)
	c := ps.dial(t, "127.0.9.1")
	c.Close()
	ps.log.waitLog(t, `reason="closed before sending a PROXY header"`)
	if strings.Contains(ps.log.String(), "level=WARN") {
		t.Fatalf("health check logged as a warning:\n%s", ps.log)
	}
}

// A silent connection is closed after the header timeout, and while it
// waits the listener serves others (the header is never read in Accept).
func TestProxyHeaderTimeout(t *testing.T) {
	pc := trustLoopback
	pc.HeaderTimeout = 300 * time.Millisecond
	ps := startProxyServer(t, pc, nil)
	silent := ps.dial(t, "127.0.9.1")
	start := time.Now()

	c := ps.dial(t, "127.0.9.1")
	c.Write([]byte("PROXY TCP4 192.0.2.8 198.51.100.1 40000 25\r\n"))
	talk(t, c, bufio.NewReader(c))
	if info := ps.info(t); info.Remote.Addr().String() != "192.0.2.8" {
		t.Fatalf("ConnInfo %+v", info)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Fatalf("the second connection waited %v behind the silent one", d)
	}

	refused(t, silent)
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("silent connection closed after %v, want about 300ms", d)
	}
	ps.log.waitLog(t, "no PROXY header within 300ms")
}

// Implicit TLS behind a balancer: the header comes first on the wire, then
// the TLS handshake, and the engine still sees a TLS connection.
func TestProxyImplicitTLS(t *testing.T) {
	cert := selfSigned(t)
	ps := startProxyServer(t, trustLoopback, func(c *Config) {
		c.TLSMode = TLSImplicit
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		c.AuthMode = AuthOptional
		c.AuthMechanisms = []string{"PLAIN"}
		c.Authenticator = denyAll{}
	})
	raw := ps.dial(t, "127.0.9.1")
	hb, _ := proxyproto.HeaderProxyFromAddrs(2, tcpAddr("192.0.2.9:41000"), tcpAddr("198.51.100.1:465")).Format()
	raw.Write(hb)
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS after the PROXY header: %v", err)
	}
	br := bufio.NewReader(tc)
	if banner := talk(t, tc, br); !strings.HasPrefix(banner, "220 ") {
		t.Fatalf("banner %q", banner)
	}
	if info := ps.info(t); info.Remote.String() != "192.0.2.9:41000" {
		t.Fatalf("ConnInfo %+v", info)
	}
	// AUTH is offered only on TLS: the engine saw the *tls.Conn.
	tc.Write([]byte("EHLO again.example\r\n"))
	var ehlo strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		ehlo.WriteString(line)
		if line[3] == ' ' {
			break
		}
	}
	if !strings.Contains(ehlo.String(), "AUTH PLAIN") {
		t.Fatalf("AUTH not offered over implicit TLS behind the balancer:\n%s", ehlo.String())
	}
}

// Shutdown does not wait for connections still waiting for their header.
func TestProxyShutdownWhileWaiting(t *testing.T) {
	ps := startProxyServer(t, trustLoopback, nil)
	c := ps.dial(t, "127.0.9.1")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := ps.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	refused(t, c)
	if strings.Contains(ps.log.String(), "level=WARN") {
		t.Fatalf("shutdown logged a refusal:\n%s", ps.log)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mx.test"},
		DNSNames: []string{"mx.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// addrConn gives a net.Pipe end TCP addresses, so a fuzzed session comes
// from a trusted balancer.
type addrConn struct {
	net.Conn
	remote, local net.Addr
}

func (a addrConn) RemoteAddr() net.Addr { return a.remote }
func (a addrConn) LocalAddr() net.Addr  { return a.local }

// FuzzProxyHeader feeds arbitrary bytes to a PROXY listener from a trusted
// balancer: the engine must never panic, and either close without a word
// or greet; a session starts only with an address it can use.
func FuzzProxyHeader(f *testing.F) {
	v2, _ := proxyproto.HeaderProxyFromAddrs(2, tcpAddr("203.0.113.9:51000"), tcpAddr("198.51.100.1:25")).Format()
	v2local, _ := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	for _, s := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n"),
		[]byte("PROXY TCP6 2001:db8::1 2001:db8::2 40000 25\r\nQUIT\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY TCP4 999.0.2.7 198.51.100.1 40000 25\r\n"),
		append(v2, "EHLO x\r\n"...), v2local, v2[:20],
		[]byte("EHLO x\r\n"),
	} {
		f.Add(s)
	}
	pc := &ProxyConfig{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, HeaderTimeout: time.Second}
	f.Fuzz(func(t *testing.T, in []byte) {
		infos := make(chan ConnInfo, 1)
		srv := NewServer(Config{Name: "fuzz", Hostname: "mx.fuzz.test", MaxLineLength: 512, MaxMessageSize: 1 << 16,
			GreetingTimeout: time.Second, CommandTimeout: time.Second, DataTimeout: time.Second, Proxy: pc},
			func(info ConnInfo) Handler { infos <- info; return acceptAll{} }, slog.New(slog.DiscardHandler))
		client, server := net.Pipe()
		out := pipeSession(t, newConn(srv, addrConn{Conn: server, remote: tcpAddr("127.0.0.1:40000"), local: tcpAddr("127.0.0.1:25")}), client, in)
		select {
		case info := <-infos:
			if !info.Remote.Addr().IsValid() || info.Remote.Addr().Is4In6() {
				t.Fatalf("session with client address %v from %q", info.Remote, in)
			}
			if len(out) > 0 && !bytes.HasPrefix(out, []byte("220 ")) {
				t.Fatalf("session started with %q", out)
			}
		default:
			if len(out) != 0 {
				t.Fatalf("refused connection got %q", out)
			}
		}
	})
}

// The PROXY setting belongs to the socket: a configuration update (a
// reload) cannot turn it off, or a balancer's address would become every
// client's.
func TestProxyKeptAcrossUpdate(t *testing.T) {
	ps := startProxyServer(t, trustLoopback, nil)
	ps.srv.Update(Config{Name: "mx", Hostname: "mx2.test", MaxLineLength: 512, GreetingTimeout: 5 * time.Second,
		CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second},
		func(info ConnInfo) Handler { ps.infos <- info; return acceptAll{} })
	c := ps.dial(t, "127.0.9.1")
	c.Write([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n"))
	if banner := talk(t, c, bufio.NewReader(c)); !strings.HasPrefix(banner, "220 mx2.test ") {
		t.Fatalf("banner %q: the update was not applied", banner)
	}
	if info := ps.info(t); info.Remote.Addr().String() != "192.0.2.10" {
		t.Fatalf("ConnInfo %+v after Update", info)
	}
}
