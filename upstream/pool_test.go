package upstream

import (
	"context"
	"testing"
	"time"

	"mailgate/config"
	"mailgate/internal/recorder"
)

func TestPool(t *testing.T) {
	up, err := recorder.Start(recorder.Options{Hostname: "internal.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	r, err := New(config.Upstream{Servers: []config.UpstreamServer{{Address: up.Addr(), TLS: config.TLSNone}}}, "mx.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.CloseIdle()
	ctx := context.Background()

	a, err := r.Get(ctx)
	if err != nil || a.Reused() {
		t.Fatalf("first Get: %v reused=%v", err, a.Reused())
	}
	r.Release(a)
	if r.Idle() != 1 {
		t.Fatalf("idle = %d after Release", r.Idle())
	}
	b, err := r.Get(ctx)
	if err != nil || b != a || !b.Reused() {
		t.Fatalf("second Get did not reuse the idle session")
	}
	// A broken session is never pooled.
	b.broken.Store(true)
	r.Release(b)
	if r.Idle() != 0 {
		t.Errorf("broken session pooled")
	}
	// Stale sessions are not handed out.
	r.idleTimeout = 50 * time.Millisecond
	c, _ := r.Get(ctx)
	r.Release(c)
	time.Sleep(100 * time.Millisecond)
	d, err := r.Get(ctx)
	if err != nil || d == c || d.Reused() {
		t.Errorf("stale session reused")
	}
	r.Release(d)
	// At most maxIdle are kept.
	r.idleTimeout, r.maxIdle = time.Minute, 2
	var cs []*Conn
	for i := 0; i < 4; i++ {
		c, err := r.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	for _, c := range cs {
		r.Release(c)
	}
	if r.Idle() != 2 {
		t.Errorf("idle = %d, want maxIdle 2", r.Idle())
	}
}
