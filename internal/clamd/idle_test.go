//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package clamd

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// An idle session is open while the other end is silent, and over once
// it wrote anything (clamd's timeout notice) or closed.
func TestIdleOpen(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		addr := "127.0.0.1:0"
		if network == "unix" {
			addr = filepath.Join(t.TempDir(), "s")
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		pair := func() (client, server net.Conn) {
			c, err := net.Dial(network, l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			s, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			return c, s
		}
		for _, tc := range []struct {
			name string
			do   func(net.Conn)
			open bool
		}{
			{"silent", func(net.Conn) {}, true},
			{"wrote", func(s net.Conn) { _, _ = s.Write([]byte("COMMAND READ TIMED OUT\n")) }, false},
			{"closed", func(s net.Conn) { _ = s.Close() }, false},
		} {
			c, s := pair()
			tc.do(s)
			// What the server did takes a moment to arrive.
			deadline := time.Now().Add(2 * time.Second)
			for idleOpen(c) != tc.open && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := idleOpen(c); got != tc.open {
				t.Errorf("%s, %s: open %v", network, tc.name, got)
			}
			// Nothing was consumed.
			if tc.name == "wrote" {
				buf := make([]byte, 7)
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				if n, err := c.Read(buf); string(buf[:n]) != "COMMAND" {
					t.Errorf("%s: read %q, %v after the peek", network, buf[:n], err)
				}
			}
		}
	}
}
