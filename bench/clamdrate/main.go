// Command clamdrate measures clamd's own scan rate for the content
// benchmark (bench/content.sh): the same message mix that
// bench/mixsource sends (bench/internal/mix, built before the clock
// starts) streamed straight to clamd with INSTREAM, by the gateway's
// own client (internal/clamd), `sessions` scans at a time. It is the
// ceiling a gateway that scans every message can reach on this machine.
//
//	clamdrate -addr tcp:127.0.0.1:3310 -sessions 20 -count 2000 -seed 1
//
// clamd must be on loopback (or a unix socket). Every message must come
// back clean; an infected verdict or any error is a failure. It prints
//
//	RESULT count=N seconds=S rate=R failures=F p50_ms=… p99_ms=… build_seconds=B bytes=… cpu_ms=C
//
// (cpu_ms: its own CPU time, message building included) and exits 1
// on any failure, 2 on bad flags.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"mailgate/bench/internal/mix"
	"mailgate/internal/clamd"
)

func main() {
	addr := flag.String("addr", "", "clamd: tcp:127.0.0.1:port or unix:/path (loopback only)")
	sessions := flag.Int("sessions", 20, "concurrent scans")
	count := flag.Int("count", 1000, "messages to scan (1 to 1000000)")
	timeout := flag.Duration("timeout", 3*time.Minute, "bound on the whole run (scanning, not building)")
	scanTimeout := flag.Duration("scan-timeout", 60*time.Second, "bound on one scan")
	mixSpec := flag.String("mix", mix.DefaultMix, "kinds and weights, as for mixsource")
	attach := flag.Int("attach-size", 200<<10, "attachment size in bytes, before base64")
	seed := flag.Uint64("seed", 1, "makes this run's messages differ from another's")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("clamdrate: ")

	network, host, err := clamd.ParseAddress(*addr)
	if err != nil {
		usage(err.Error())
	}
	if network == "tcp" {
		ap, err := netip.ParseAddrPort(host)
		if err != nil || !ap.Addr().IsLoopback() {
			usage("-addr must be a loopback address, like tcp:127.0.0.1:3310")
		}
	}
	switch {
	case *sessions < 1 || *sessions > 1000:
		usage("-sessions: 1 to 1000")
	case *count < 1 || *count > 1000000:
		usage("-count: 1 to 1000000")
	case *timeout <= 0 || *scanTimeout <= 0:
		usage("-timeout and -scan-timeout must be positive")
	}
	cycle, err := mix.ParseMix(*mixSpec)
	if err != nil {
		usage(err.Error())
	}

	t0 := time.Now()
	msgs, err := mix.BuildAll(mix.Options{AttachSize: *attach, Seed: *seed}, cycle, *count)
	if err != nil {
		log.Fatal(err)
	}
	var bytesTotal int64
	for _, m := range msgs {
		bytesTotal += int64(len(m))
	}
	build := time.Since(t0)

	cl, err := clamd.New(*addr, *sessions)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	lat := make([]time.Duration, *count)
	var next, failures atomic.Int64
	var errMu sync.Mutex
	var firstErrs []string
	fail := func(i int, what string) {
		failures.Add(1)
		errMu.Lock()
		defer errMu.Unlock()
		if len(firstErrs) < 5 {
			firstErrs = append(firstErrs, fmt.Sprintf("message %d (%s): %s", i, cycle[i%len(cycle)], what))
		}
	}
	var wg sync.WaitGroup
	start := time.Now()
	for range min(*sessions, *count) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= *count || ctx.Err() != nil {
					return
				}
				t := time.Now()
				sctx, scancel := context.WithTimeout(ctx, *scanTimeout)
				res, err := cl.Scan(sctx, bytes.NewReader(msgs[i]))
				scancel()
				lat[i] = time.Since(t)
				switch {
				case err != nil:
					fail(i, err.Error())
				case res.Infected:
					fail(i, "infected: "+res.Signature)
				case res.Bytes != int64(len(msgs[i])):
					fail(i, fmt.Sprintf("sent %d of %d bytes", res.Bytes, len(msgs[i])))
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	done := min(int(next.Load()), *count)
	if done < *count {
		failures.Add(int64(*count - done))
		firstErrs = append(firstErrs, fmt.Sprintf("timeout: %d messages not scanned after %s", *count-done, *timeout))
	}
	for _, e := range firstErrs {
		log.Print(e)
	}
	mix.PrintResult(*count, secs, failures.Load(), lat[:done], build, bytesTotal)
	if failures.Load() > 0 {
		os.Exit(1)
	}
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "clamdrate:", msg)
	flag.Usage()
	os.Exit(2)
}
