package redistest

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestStartStopStart(t *testing.T) {
	r := StartProcess(t)
	if !ping(r.Addr()) {
		t.Fatalf("no PONG from %s", r.Addr())
	}
	r.Stop()
	if ping(r.Addr()) {
		t.Fatal("still answering after Stop")
	}
	r.Stop() // stopping twice is harmless
	r.Start()
	if !ping(r.Addr()) {
		t.Fatalf("no PONG from %s after the restart", r.Addr())
	}
}

func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("two servers on %s", a)
	}
	if !ping(a) || !ping(b) {
		t.Fatal("a server does not answer")
	}
}

// fakeTB records how StartProcess gave up. Fatalf and Skipf end the
// goroutine, as the real ones do.
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
	t.Setenv("PATH", t.TempDir())
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		f := &fakeTB{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			StartProcess(f)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("StartProcess hung")
		}
		if ci == "true" && f.fatal == "" {
			t.Errorf("CI=true: no failure (skip %q)", f.skip)
		}
		if ci == "" && (f.skip == "" || f.fatal != "") {
			t.Errorf("CI unset: skip %q, fatal %q; want a skip", f.skip, f.fatal)
		}
	}
}
