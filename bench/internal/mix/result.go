package mix

import (
	"fmt"
	"slices"
	"syscall"
	"time"
)

// PrintResult prints the RESULT line bench/content.sh reads from a load
// client: count messages in secs seconds with failures, the latencies of
// those that were done (sorted here), the time spent building the
// messages, the bytes sent and the client's own CPU time.
func PrintResult(count int, secs float64, failures int64, lat []time.Duration, build time.Duration, bytes int64) {
	slices.Sort(lat)
	fmt.Printf("RESULT count=%d seconds=%.3f rate=%.1f failures=%d p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f build_seconds=%.2f bytes=%d cpu_ms=%d\n",
		count, secs, float64(count)/secs, failures, ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99)), build.Seconds(), bytes, cpuMillis())
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cpuMillis is the CPU time (user + system) this process has used, for
// the benchmark's account of who used the machine during a run.
func cpuMillis() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return (ru.Utime.Nano() + ru.Stime.Nano()) / 1e6
}
