package clamd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"mailgate/internal/clamd"
	"mailgate/internal/clamdtest"
)

func newClient(t *testing.T, addr string, conns int) *clamd.Client {
	t.Helper()
	c, err := clamd.New(addr, conns)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func scanWithin(c *clamd.Client, d time.Duration, r io.Reader) (clamd.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Scan(ctx, r)
}

// Against a real clamd, on both of its sockets.
func TestScan(t *testing.T) {
	d := clamdtest.Start(t)
	eicar := clamdtest.EICAR()
	// The virus straddles a chunk boundary, in a stream of many chunks.
	straddle := strings.Repeat("a", 3*clamd.ChunkSize-20) + eicar + strings.Repeat("b", 1000)
	for _, addr := range []string{d.Unix(), d.TCP()} {
		c := newClient(t, addr, 2)
		for _, tc := range []struct {
			name, data string
			infected   bool
		}{
			{"eicar", eicar, true},
			{"clean", "Subject: hi\r\n\r\nHello.\r\n", false},
			{"empty", "", false},
			{"straddling chunks", straddle, true},
			{"big clean", strings.Repeat("All work and no play.\r\n", 100000), false},
		} {
			r, err := scanWithin(c, 10*time.Second, strings.NewReader(tc.data))
			if err != nil {
				t.Fatalf("%s %s: %v", addr, tc.name, err)
			}
			if r.Infected != tc.infected || tc.infected && r.Signature != clamdtest.Signature {
				t.Errorf("%s %s: %+v, want infected %v", addr, tc.name, r, tc.infected)
			}
			if r.Bytes != int64(len(tc.data)) {
				t.Errorf("%s %s: sent %d bytes of %d", addr, tc.name, r.Bytes, len(tc.data))
			}
		}
	}
}

func TestPingVersion(t *testing.T) {
	d := clamdtest.Start(t)
	for _, addr := range []string{d.Unix(), d.TCP()} {
		c := newClient(t, addr, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.Ping(ctx); err != nil {
			t.Errorf("%s: ping: %v", addr, err)
		}
		v, err := c.Version(ctx)
		cancel()
		if err != nil || !strings.HasPrefix(v, "ClamAV ") {
			t.Errorf("%s: version %q, %v", addr, v, err)
		}
	}
	d.Stop()
	c := newClient(t, d.Unix(), 1)
	if err := c.Ping(context.Background()); err == nil {
		t.Error("ping of a stopped clamd succeeded")
	}
	d.Start()
	d.Pause()
	defer d.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := newClient(t, d.TCP(), 1).Ping(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Errorf("ping of a paused clamd: %v after %v", err, time.Since(start))
	}
}

// Past StreamMaxLength the error says so, whichever way clamd's refusal
// arrives (its reply, or a closed connection under our writes).
func TestSizeLimit(t *testing.T) {
	d := clamdtest.StartWith(t, clamdtest.Options{StreamMaxLength: 256 << 10})
	for _, addr := range []string{d.Unix(), d.TCP()} {
		c := newClient(t, addr, 1)
		for _, size := range []int{300 << 10, 8 << 20} {
			_, err := scanWithin(c, 10*time.Second, bytes.NewReader(make([]byte, size)))
			if err == nil || !strings.Contains(err.Error(), "StreamMaxLength") {
				t.Errorf("%s, %d bytes: %v, want a StreamMaxLength error", addr, size, err)
			}
		}
		// Up to the limit is fine.
		if r, err := scanWithin(c, 10*time.Second, bytes.NewReader(make([]byte, 256<<10))); err != nil || r.Infected {
			t.Errorf("%s, at the limit: %+v, %v", addr, r, err)
		}
	}
}

// A hung clamd costs a scan its deadline, no more; a cancelled scan ends
// at once.
func TestDeadline(t *testing.T) {
	d := clamdtest.Start(t)
	d.Pause()
	defer d.Resume()
	for _, addr := range []string{d.Unix(), d.TCP()} {
		c := newClient(t, addr, 1)
		start := time.Now()
		// A large message: the writes block once the socket buffers are full.
		_, err := scanWithin(c, 300*time.Millisecond, bytes.NewReader(make([]byte, 4<<20)))
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
			t.Errorf("%s: %v after %v, want the deadline", addr, err, time.Since(start))
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		start = time.Now()
		_, err = c.Scan(ctx, strings.NewReader("Hello.\r\n"))
		if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
			t.Errorf("%s: %v after %v, want canceled", addr, err, time.Since(start))
		}
	}
}

// At most Connections scans run at once; the others wait for a slot
// within their own deadline.
func TestConnectionBound(t *testing.T) {
	d := clamdtest.Start(t)
	c := newClient(t, d.Unix(), 2)
	d.Pause()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait := 600 * time.Millisecond
			if i == 2 {
				// The first two hold the slots past this one's deadline.
				time.Sleep(100 * time.Millisecond)
				wait = 200 * time.Millisecond
			}
			_, errs[i] = scanWithin(c, wait, strings.NewReader("Hello.\r\n"))
		}()
	}
	wg.Wait()
	d.Resume()
	for i, err := range errs {
		waited := err != nil && strings.Contains(err.Error(), "no free connection (all 2 busy)")
		if (i == 2) != waited || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("scan %d: %v", i, err)
		}
	}
	// Freed slots serve again.
	if r, err := scanWithin(c, 5*time.Second, strings.NewReader(clamdtest.EICAR())); err != nil || !r.Infected {
		t.Errorf("after the jam: %+v, %v", r, err)
	}
}

func TestClamdDown(t *testing.T) {
	d := clamdtest.Start(t)
	d.Stop()
	for _, addr := range []string{d.Unix(), d.TCP()} {
		start := time.Now()
		_, err := scanWithin(newClient(t, addr, 1), 5*time.Second, strings.NewReader("Hello.\r\n"))
		if err == nil || time.Since(start) > time.Second {
			t.Errorf("%s: %v after %v, want a quick error", addr, err, time.Since(start))
		}
	}
}

// fakeClamd answers every connection with reply, numbered as the first
// request of the session, after reading the commands and, if drain, the
// whole stream.
func fakeClamd(t *testing.T, reply string, drain bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				cmd := make([]byte, len("zIDSESSION\x00zINSTREAM\x00"))
				if _, err := io.ReadFull(c, cmd); err != nil {
					return
				}
				if drain {
					if drainStream(c) != nil {
						return
					}
				}
				if reply != "" {
					_, _ = io.WriteString(c, "1: "+reply)
				}
			}()
		}
	}()
	return l.Addr().String()
}

// Replies no real clamd gave us in the tests are still read strictly.
func TestReplies(t *testing.T) {
	for _, tc := range []struct {
		reply string
		drain bool
		err   string
	}{
		{"stream: Can't allocate memory ERROR\x00", true, "scan error"},
		{"UNKNOWN COMMAND\x00", true, "unexpected reply"},
		{"", true, "reading the reply"},       // closed without a word
		{"stream: OK", true, ""},              // no NUL, then EOF: still a reply
		{strings.Repeat("x", 5000), true, ""}, // endless
		{"INSTREAM size limit exceeded. ERROR\x00", false, "StreamMaxLength"},
	} {
		addr := fakeClamd(t, tc.reply, tc.drain)
		_, err := scanWithin(newClient(t, addr, 1), 5*time.Second, bytes.NewReader(make([]byte, 1<<20)))
		switch {
		case tc.reply == "stream: OK":
			if err != nil {
				t.Errorf("%q: %v", tc.reply, err)
			}
		case len(tc.reply) == 5000:
			if err == nil || !strings.Contains(err.Error(), "longer than") {
				t.Errorf("endless reply: %v", err)
			}
		case err == nil || !strings.Contains(err.Error(), tc.err):
			t.Errorf("%q: %v, want %q", tc.reply, err, tc.err)
		}
	}
}

// A message that cannot be read is an error, not a clean verdict.
func TestReaderError(t *testing.T) {
	addr := fakeClamd(t, "stream: OK\x00", true)
	r := io.MultiReader(strings.NewReader("Subject: x\r\n"), iotestErr{})
	if _, err := scanWithin(newClient(t, addr, 1), 5*time.Second, r); err == nil || !strings.Contains(err.Error(), "reading the message") {
		t.Errorf("got %v", err)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestNew(t *testing.T) {
	if _, err := clamd.New("unix:/nonexistent/clamd.sock", 0); err != nil {
		t.Errorf("a socket that does not exist yet: %v", err)
	}
	for _, bad := range []string{"", "clamd", "unix:clamd.sock"} {
		if _, err := clamd.New(bad, 1); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	if _, err := clamd.New("127.0.0.1:3310", -1); err == nil {
		t.Error("-1 connections accepted")
	}
}

// drainStream reads an INSTREAM's chunks up to the empty one that ends it.
func drainStream(c net.Conn) error {
	for {
		var n [4]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return err
		}
		size := binary.BigEndian.Uint32(n[:])
		if size == 0 {
			return nil
		}
		if _, err := io.CopyN(io.Discard, c, int64(size)); err != nil {
			return err
		}
	}
}
