package smtpd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// PROXY protocol (HAProxy's v1 text and v2 binary headers): a listener
// behind a TCP load balancer learns the real client address from a header
// the balancer sends before anything else, so connection limits, access
// rules, rDNS, DNSBL, greylisting, the logs and the Received header all
// judge the client, not the balancer.

// ProxyConfig makes a listener require a PROXY protocol header.
type ProxyConfig struct {
	// Trusted are the load balancers' networks. A connection from any
	// other address is closed without a banner: whoever may send a
	// header may claim any client address.
	Trusted []netip.Prefix
	// HeaderTimeout bounds the wait for the header; 0 means 5 s.
	HeaderTimeout time.Duration
}

// DefaultProxyHeaderTimeout is how long a PROXY listener waits for the
// header when ProxyConfig.HeaderTimeout is 0. A load balancer sends it at
// once, with the connection.
const DefaultProxyHeaderTimeout = 5 * time.Second

// trusts reports whether a connection from a may send a header.
func (p *ProxyConfig) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, n := range p.Trusted {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// proxyConn is a connection accepted on a PROXY listener. Its header is
// read by the connection's own goroutine (readProxyHeader), never in
// Accept: one silent connection must not hold up the others.
type proxyConn struct {
	net.Conn
	// br holds what was read with the header; it is read first.
	br *bufio.Reader
}

func (p *proxyConn) Read(b []byte) (int, error) {
	if p.br != nil {
		if p.br.Buffered() > 0 {
			return p.br.Read(b)
		}
		p.br = nil
	}
	return p.Conn.Read(b)
}

// proxyRefusal is why a connection on a PROXY listener was closed.
type proxyRefusal struct {
	reason string // for the log
	quiet  bool   // nothing was sent (a TCP health check): log at debug
	err    error
}

func (r *proxyRefusal) Error() string {
	if r.err != nil {
		return r.reason + ": " + r.err.Error()
	}
	return r.reason
}

// proxied is what a valid header says.
type proxied struct {
	proxy  netip.AddrPort // the load balancer (the TCP peer)
	remote netip.AddrPort // the client, or the balancer for LOCAL/UNKNOWN
	local  netip.AddrPort // the address the client connected to
	header *proxyproto.Header
}

// readProxyHeader checks that the peer is a trusted load balancer and reads
// its header, within cfg.HeaderTimeout. On success what followed the header
// stays buffered in pc for the SMTP session.
func readProxyHeader(pc *proxyConn, cfg *ProxyConfig) (proxied, error) {
	p := proxied{proxy: unmapped(addrPort(pc.Conn.RemoteAddr())), local: unmapped(addrPort(pc.Conn.LocalAddr()))}
	p.remote = p.proxy
	if !cfg.trusts(p.proxy.Addr()) {
		return p, &proxyRefusal{reason: "not a trusted proxy"}
	}
	timeout := cfg.HeaderTimeout
	if timeout <= 0 {
		timeout = DefaultProxyHeaderTimeout
	}
	_ = pc.Conn.SetReadDeadline(time.Now().Add(timeout))
	// 256 octets hold any v1 header (at most 107) and a v2 header without
	// large TLVs; bigger v2 headers are read in several fills.
	pc.br = bufio.NewReaderSize(pc.Conn, 256)
	_, err := pc.br.Peek(1)
	var h *proxyproto.Header
	if err == nil {
		h, err = proxyproto.Read(pc.br)
	} else if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		// Connected and closed without a word: a balancer's TCP check.
		return p, &proxyRefusal{reason: "closed before sending a PROXY header", quiet: true}
	}
	// The session sets its own deadlines from here on.
	_ = pc.Conn.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case err == nil:
	case errors.As(err, &ne) && ne.Timeout():
		return p, &proxyRefusal{reason: fmt.Sprintf("no PROXY header within %s", timeout)}
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return p, &proxyRefusal{reason: "no PROXY header (the load balancer must use send-proxy or send-proxy-v2)"}
	default:
		return p, &proxyRefusal{reason: "malformed PROXY header", err: err}
	}
	p.header = h
	if h.Command.IsLocal() || h.TransportProtocol.IsUnspec() {
		// v2 LOCAL (the balancer's own health check) and v1 UNKNOWN: the
		// spec says to use the connection's own addresses.
		return p, nil
	}
	src, ok1 := h.SourceAddr.(*net.TCPAddr)
	dst, ok2 := h.DestinationAddr.(*net.TCPAddr)
	switch {
	case h.TransportProtocol.IsUnix():
		// A balancer listening on a Unix socket has no client address.
		return p, nil
	case !ok1 || !ok2 || !h.TransportProtocol.IsStream():
		return p, &proxyRefusal{reason: "PROXY header for a datagram connection"}
	}
	p.remote, p.local = unmapped(src.AddrPort()), unmapped(dst.AddrPort())
	if !p.remote.Addr().IsValid() {
		return p, &proxyRefusal{reason: "malformed PROXY header", err: errors.New("no source address")}
	}
	return p, nil
}

// unmapped turns ::ffff:192.0.2.1 into 192.0.2.1: filters and logs see
// IPv4 clients as IPv4 whatever the header or socket said.
func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// connInfo describes the client for the Handler: the connection's own
// addresses or, on a PROXY listener, the ones the load balancer sent. It
// reports false when the connection is refused (logged here); the caller
// then closes it without a banner.
func (c *conn) connInfo() (ConnInfo, bool) {
	info := ConnInfo{ID: newID(), Listener: c.cfg.Name}
	pc, ok := c.raw.(*proxyConn)
	if !ok || c.srv.proxy == nil {
		info.Remote, info.Local = addrPort(c.nc.RemoteAddr()), addrPort(c.nc.LocalAddr())
		return info, true
	}
	p, err := readProxyHeader(pc, c.srv.proxy)
	if err != nil {
		var r *proxyRefusal
		errors.As(err, &r)
		switch {
		case c.draining.Load():
			// Shut down while waiting: nothing to report.
		case r != nil && r.quiet:
			c.srv.log.Debug("PROXY protocol: connection closed", "listener", c.cfg.Name,
				"peer", p.proxy.Addr().String(), "reason", r.reason)
		default:
			c.srv.log.Warn("PROXY protocol: connection refused", "listener", c.cfg.Name,
				"peer", p.proxy.Addr().String(), "reason", err.Error())
		}
		return info, false
	}
	info.Remote, info.Local, info.Proxy = p.remote, p.local, p.proxy
	c.srv.log.Debug("PROXY header", "listener", c.cfg.Name, "id", info.ID, "proxy", p.proxy.String(),
		"client", p.remote.String(), "version", int(p.header.Version), "local_command", p.header.Command.IsLocal())
	return info, true
}
