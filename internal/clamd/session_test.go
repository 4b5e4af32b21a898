package clamd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mailgate/internal/clamd"
	"mailgate/internal/clamdtest"
)

// connCounter is a client's dialer that counts the connections it opens
// and how many are open at once.
type connCounter struct {
	mu                   sync.Mutex
	dials, open, maxOpen int
}

func countConns(c *clamd.Client) *connCounter {
	cc := &connCounter{}
	clamd.SetDial(c, cc.dial)
	return cc
}

func (cc *connCounter) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.dials++
	cc.open++
	cc.maxOpen = max(cc.maxOpen, cc.open)
	return &countedConn{Conn: conn, cc: cc}, nil
}

// counts returns dials, open and maxOpen.
func (cc *connCounter) counts() (int, int, int) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.dials, cc.open, cc.maxOpen
}

type countedConn struct {
	net.Conn
	cc     *connCounter
	closed bool // under cc.mu
}

func (c *countedConn) Close() error {
	c.cc.mu.Lock()
	if !c.closed {
		c.closed = true
		c.cc.open--
	}
	c.cc.mu.Unlock()
	return c.Conn.Close()
}

// SyscallConn lets the client look at the socket of an idle session.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// wantConns checks the dials made and the connections open.
func wantConns(t *testing.T, what string, cc *connCounter, dials, open int) {
	t.Helper()
	if d, o, _ := cc.counts(); d != dials || o != open {
		t.Errorf("%s: %d dials, %d open; want %d, %d", what, d, o, dials, open)
	}
}

// Sequential scans, viruses among them, share one connection; Close
// ends it, and a scan after Close still works, on a connection of its
// own that it does not keep.
func TestSessionReuse(t *testing.T) {
	d := clamdtest.Start(t)
	for _, addr := range []string{d.Unix(), d.TCP()} {
		c := newClient(t, addr, 4)
		cc := countConns(c)
		for i := range 20 {
			data, virus := fmt.Sprintf("Subject: %d\r\n\r\nHello.\r\n", i), i%3 == 1
			if virus {
				data += clamdtest.EICAR()
			}
			r, err := scanWithin(c, 5*time.Second, strings.NewReader(data))
			if err != nil || r.Infected != virus || virus && r.Signature != clamdtest.Signature {
				t.Fatalf("%s scan %d: %+v, %v; want infected %v", addr, i, r, err, virus)
			}
		}
		wantConns(t, addr+": 20 scans", cc, 1, 1)
		if n := clamd.IdleSessions(c); n != 1 {
			t.Errorf("%s: %d idle sessions", addr, n)
		}
		if err := c.Close(); err != nil {
			t.Errorf("%s: Close: %v", addr, err)
		}
		wantConns(t, addr+": after Close", cc, 1, 0)
		if r, err := scanWithin(c, 5*time.Second, strings.NewReader(clamdtest.EICAR())); err != nil || !r.Infected {
			t.Errorf("%s: scan after Close: %+v, %v", addr, r, err)
		}
		wantConns(t, addr+": a scan after Close", cc, 2, 0)
	}
}

// However many scans run at once, no more than Connections sessions are
// ever open, and they serve every scan.
func TestSessionBound(t *testing.T) {
	d := clamdtest.Start(t)
	c := newClient(t, d.Unix(), 3)
	cc := countConns(c)
	big := strings.Repeat("All work and no play.\r\n", 10000) + clamdtest.EICAR()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 10 {
		wg.Go(func() {
			for i := range 10 {
				data, virus := "Hello.\r\n", (g+i)%4 == 0
				if virus {
					data = big
				}
				r, err := scanWithin(c, 20*time.Second, strings.NewReader(data))
				if err == nil && r.Infected != virus {
					err = fmt.Errorf("infected %v, want %v", r.Infected, virus)
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d, scan %d: %w", g, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	dials, open, maxOpen := cc.counts()
	if dials > 3 || maxOpen > 3 || open != clamd.IdleSessions(c) {
		t.Errorf("%d dials, %d open at most, %d open now, %d idle; want at most 3", dials, maxOpen, open, clamd.IdleSessions(c))
	}
}

// plainReader hides the Seek of its reader: a message that cannot be
// read twice.
type plainReader struct{ r io.Reader }

func (p plainReader) Read(b []byte) (int, error) { return p.r.Read(b) }

// A clamd killed and restarted between two scans: the next scan gets its
// verdict all the same, whether the pooled session is found closed
// before use or only by the scan (then it starts over on a new
// connection, with the whole message).
func TestSessionRestart(t *testing.T) {
	d := clamdtest.Start(t)
	// The virus is past the first chunk: a scan that started over with
	// less than the whole message would miss it.
	msg := strings.Repeat("a", 3*clamd.ChunkSize) + clamdtest.EICAR()
	for _, addr := range []string{d.Unix(), d.TCP()} {
		for _, check := range []bool{true, false} {
			name := fmt.Sprintf("%s, idle check %v", addr, check)
			c := newClient(t, addr, 2)
			clamd.SetCheckIdle(c, check)
			cc := countConns(c)
			if _, err := scanWithin(c, 5*time.Second, strings.NewReader("Hello.\r\n")); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			d.Stop()
			d.Start()
			// What the virus filter passes: a limited reader over a
			// seekable one, which is rewound.
			r, err := scanWithin(c, 10*time.Second, io.LimitReader(strings.NewReader(msg), 1<<20))
			if err != nil || !r.Infected || r.Bytes != int64(len(msg)) {
				t.Errorf("%s: after a restart: %+v, %v", name, r, err)
			}
			wantConns(t, name, cc, 2, 1)

			// A message that cannot be read again is never sent in part
			// as if it were whole: the scan fails, or it got through
			// before anything of it was read.
			d.Stop()
			d.Start()
			r, err = scanWithin(c, 10*time.Second, plainReader{strings.NewReader(msg)})
			if err == nil && (!r.Infected || r.Bytes != int64(len(msg))) {
				t.Errorf("%s: unseekable reader after a restart: %+v", name, r)
			}
			if check && err != nil {
				t.Errorf("%s: unseekable reader, the closed session found before use: %v", name, err)
			}
			if err != nil && !strings.Contains(err.Error(), "cannot be read again") {
				t.Errorf("%s: unseekable reader: %v", name, err)
			}
		}
	}
}

// A session idle past its last scan's deadline is reused; one idle past
// the maximum age is ended, not reused.
func TestSessionMaxIdle(t *testing.T) {
	d := clamdtest.Start(t)
	c := newClient(t, d.Unix(), 2)
	cc := countConns(c)
	if _, err := scanWithin(c, 200*time.Millisecond, strings.NewReader("Hello.\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := scanWithin(c, 5*time.Second, strings.NewReader("Hello.\r\n")); err != nil {
		t.Fatal(err)
	}
	wantConns(t, "a scan after the last one's deadline", cc, 1, 1)

	clamd.SetMaxIdle(c, 150*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	if _, err := scanWithin(c, 5*time.Second, strings.NewReader("Hello.\r\n")); err != nil {
		t.Fatal(err)
	}
	wantConns(t, "a scan after the maximum age", cc, 2, 1)
}

// The size-limit reply through a session: ErrSizeLimit, and the session
// (which clamd closes) is not reused.
func TestSessionSizeLimit(t *testing.T) {
	d := clamdtest.StartWith(t, clamdtest.Options{StreamMaxLength: 256 << 10})
	c := newClient(t, d.Unix(), 2)
	cc := countConns(c)
	if _, err := scanWithin(c, 5*time.Second, strings.NewReader("Hello.\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := scanWithin(c, 5*time.Second, bytes.NewReader(make([]byte, 300<<10))); !errors.Is(err, clamd.ErrSizeLimit) {
		t.Errorf("300 KiB: %v, want ErrSizeLimit", err)
	}
	// A reply was read: no second try.
	wantConns(t, "after the size limit", cc, 1, 0)
	if r, err := scanWithin(c, 5*time.Second, strings.NewReader(clamdtest.EICAR())); err != nil || !r.Infected {
		t.Errorf("next scan: %+v, %v", r, err)
	}
	wantConns(t, "next scan", cc, 2, 1)
}

// A scan cancelled on a reused session ends at once, is not retried,
// and its session is closed.
func TestSessionCancel(t *testing.T) {
	d := clamdtest.Start(t)
	for _, addr := range []string{d.Unix(), d.TCP()} {
		c := newClient(t, addr, 1)
		cc := countConns(c)
		if _, err := scanWithin(c, 5*time.Second, strings.NewReader("Hello.\r\n")); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		d.Pause()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		start := time.Now()
		_, err := c.Scan(ctx, strings.NewReader("Hello.\r\n"))
		took := time.Since(start)
		d.Resume()
		if !errors.Is(err, context.Canceled) || took > time.Second {
			t.Errorf("%s: %v after %v, want canceled at once", addr, err, took)
		}
		wantConns(t, addr+": cancelled", cc, 1, 0)
		if _, err := scanWithin(c, 5*time.Second, strings.NewReader("Hello.\r\n")); err != nil {
			t.Errorf("%s: after the cancel: %v", addr, err)
		}
		wantConns(t, addr+": after the cancel", cc, 2, 1)
	}
}

// sessionFake is a clamd that answers the requests of each session it
// accepts with replies[i], i counting connections: each is a list of
// raw replies, numbers included. It returns the address and the count
// of connections accepted.
func sessionFake(t *testing.T, replies [][]string) (string, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	accepted := 0
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			script := replies[min(accepted, len(replies)-1)]
			accepted++
			mu.Unlock()
			go serveSession(c, script)
		}
	}()
	return l.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return accepted }
}

func serveSession(c net.Conn, script []string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	open := make([]byte, len("zIDSESSION\x00"))
	if _, err := io.ReadFull(c, open); err != nil || string(open) != "zIDSESSION\x00" {
		return
	}
	for _, reply := range script {
		cmd := make([]byte, len("zINSTREAM\x00"))
		if _, err := io.ReadFull(c, cmd); err != nil || string(cmd) != "zINSTREAM\x00" {
			return
		}
		if drainStream(c) != nil {
			return
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
	// Then wait for zEND or the client's close.
	_, _ = io.Copy(io.Discard, c)
}

// OK and FOUND keep the session; an ERROR reply or a reply numbered for
// another request closes it, and neither is tried again.
func TestSessionReplies(t *testing.T) {
	addr, accepted := sessionFake(t, [][]string{
		{"1: stream: OK\x00", "2: stream: Eicar FOUND\x00", "3: stream: Can't allocate memory ERROR\x00"},
		{"1: stream: OK\x00", "1: stream: OK\x00"},
		{"1: stream: OK\x00"},
	})
	c := newClient(t, addr, 1)
	for i, want := range []struct {
		infected bool
		err      string
		accepted int
	}{
		{false, "", 1},
		{true, "", 1},
		{false, "scan error: stream: Can't allocate memory", 1},
		{false, "", 2},
		{false, `unexpected reply "1: stream: OK", not numbered 2`, 2},
		{false, "", 3},
	} {
		r, err := scanWithin(c, 5*time.Second, strings.NewReader("Hello.\r\n"))
		var re *clamd.ReplyError
		switch {
		case want.err == "" && err != nil, want.err != "" && (err == nil || !strings.Contains(err.Error(), want.err)):
			t.Errorf("scan %d: %v, want %q", i, err, want.err)
		case strings.Contains(want.err, "scan error") != errors.As(err, &re):
			t.Errorf("scan %d: %v, want %q", i, err, want.err)
		case r.Infected != want.infected:
			t.Errorf("scan %d: %+v", i, r)
		case accepted() != want.accepted:
			t.Errorf("scan %d: %d connections, want %d", i, accepted(), want.accepted)
		}
	}
}
