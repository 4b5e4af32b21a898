package clamdtest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"mailgate/internal/clamd"
)

func ping(t *testing.T, addr string) error {
	t.Helper()
	c, err := clamd.New(addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx)
}

func scan(t *testing.T, addr, data string) (clamd.Result, error) {
	t.Helper()
	c, err := clamd.New(addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Scan(ctx, strings.NewReader(data))
}

// The test database finds EICAR by our signature name, on both sockets,
// and clamd restarts on the same sockets after a crash.
func TestStartStopStart(t *testing.T) {
	c := Start(t)
	for _, addr := range []string{c.Unix(), c.TCP()} {
		r, err := scan(t, addr, EICAR())
		if err != nil || !r.Infected || r.Signature != Signature {
			t.Fatalf("%s: EICAR: %+v, %v; want %s", addr, r, err, Signature)
		}
		if r, err := scan(t, addr, "Hello.\r\n"); err != nil || r.Infected {
			t.Fatalf("%s: clean text: %+v, %v", addr, r, err)
		}
	}
	c.Stop()
	for _, addr := range []string{c.Unix(), c.TCP()} {
		if err := ping(t, addr); err == nil {
			t.Fatalf("%s still answers after Stop", addr)
		}
	}
	c.Stop() // stopping twice is harmless
	c.Start()
	for _, addr := range []string{c.Unix(), c.TCP()} {
		if err := ping(t, addr); err != nil {
			t.Fatalf("%s after the restart: %v", addr, err)
		}
	}
	if !strings.Contains(c.ConfigText(), "StreamMaxLength 4194304") {
		t.Errorf("config:\n%s", c.ConfigText())
	}
}

// A paused clamd accepts connections but never answers.
func TestPause(t *testing.T) {
	c := Start(t)
	c.Pause()
	cl, _ := clamd.New(c.Unix(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := cl.Scan(ctx, strings.NewReader("Hello.\r\n"))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("scan of a paused clamd: %v after %v", err, time.Since(start))
	}
	c.Resume()
	if err := ping(t, c.Unix()); err != nil {
		t.Fatalf("after Resume: %v", err)
	}
}

func TestStreamMaxLength(t *testing.T) {
	c := StartWith(t, Options{StreamMaxLength: 100 << 10})
	_, err := scan(t, c.Unix(), strings.Repeat("x", 300<<10))
	if !errors.Is(err, clamd.ErrSizeLimit) {
		t.Fatalf("300 KiB against a 100 KiB StreamMaxLength: %v, want ErrSizeLimit", err)
	}
}

// fakeTB records how start gave up. Fatalf and Skipf end the goroutine,
// as the real ones do.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (*fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Without the binary a test skips, except in CI, where it fails.
func TestMissingBinary(t *testing.T) {
	missing := func() (string, error) { return "", errors.New("not found") }
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		f := &fakeTB{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			start(f, Options{}, missing)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("start hung")
		}
		if ci == "true" && f.fatal == "" {
			t.Errorf("CI=true: no failure (skip %q)", f.skip)
		}
		if ci == "" && (f.skip == "" || f.fatal != "") {
			t.Errorf("CI unset: skip %q, fatal %q; want a skip", f.skip, f.fatal)
		}
	}
}

// clamd finds the test string in every virus message (it decodes MIME
// and unpacks zip itself) and nothing in the clean ones.
func TestMessages(t *testing.T) {
	c := Start(t)
	msgs := Messages()
	if len(msgs) < 5 {
		t.Fatalf("%d messages", len(msgs))
	}
	for _, m := range msgs {
		if strings.Contains(m.Text, "{{") {
			t.Errorf("%s: placeholder left", m.Name)
		}
		r, err := scan(t, c.Unix(), m.Text)
		if err != nil || r.Infected != m.Virus || m.Virus && r.Signature != Signature {
			t.Errorf("%s: %+v, %v; want infected %v", m.Name, r, err, m.Virus)
		}
		// Only the plain one carries the string in the clear.
		if strings.Contains(m.Text, "EICAR-STANDARD") != (m.Name == "virus-plain") {
			t.Errorf("%s: the test string in the clear: %v", m.Name, !(m.Name == "virus-plain"))
		}
	}
}
