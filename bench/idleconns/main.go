// Command idleconns opens N idle SMTP connections to an address from
// 127.0.0.1, reads each banner, holds them all for a while, then closes
// them and exits. Used by bench/idle.sh to measure the memory a server
// spends per idle connection.
//
// Output (stdout, one line each, for scripts):
//
//	HOLDING open=N banners=M failed=K      all dials done, connections held
//	DONE open=N banners=M failed=K         everything closed
//
// It is bounded: dialing stops at -dial-phase, the hold lasts -hold, and
// the whole run is cut at -max-run.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "", "target host:port (must be on 127.0.0.0/8)")
	n := flag.Int("n", 5000, "number of connections")
	hold := flag.Duration("hold", 10*time.Second, "how long to hold the connections once opened")
	parallel := flag.Int("parallel", 100, "concurrent dials")
	dialTimeout := flag.Duration("dial-timeout", 5*time.Second, "per-connection dial + banner timeout")
	dialPhase := flag.Duration("dial-phase", 60*time.Second, "stop opening connections after this long")
	maxRun := flag.Duration("max-run", 120*time.Second, "hard limit for the whole run")
	flag.Parse()

	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(os.Stderr, "idleconns: -addr %q must be a 127.0.0.0/8 host:port\n", *addr)
		os.Exit(2)
	}
	time.AfterFunc(*maxRun, func() {
		fmt.Fprintf(os.Stderr, "idleconns: -max-run %v exceeded, exiting\n", *maxRun)
		os.Exit(3)
	})

	dialer := net.Dialer{
		Timeout:   *dialTimeout,
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)},
	}
	var (
		mu      sync.Mutex
		conns   = make([]net.Conn, 0, *n)
		banners atomic.Int64
		failed  atomic.Int64
		next    atomic.Int64
		firstEr atomic.Value
	)
	stopDial := time.Now().Add(*dialPhase)
	var wg sync.WaitGroup
	for w := 0; w < *parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*n) && time.Now().Before(stopDial) {
				c, err := dialer.Dial("tcp", *addr)
				if err != nil {
					failed.Add(1)
					firstEr.CompareAndSwap(nil, err.Error())
					continue
				}
				c.SetReadDeadline(time.Now().Add(*dialTimeout))
				line, err := bufio.NewReader(c).ReadString('\n')
				c.SetReadDeadline(time.Time{})
				if err == nil && strings.HasPrefix(line, "220") {
					banners.Add(1)
				} else if err != nil {
					firstEr.CompareAndSwap(nil, "banner: "+err.Error())
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("HOLDING open=%d banners=%d failed=%d\n", len(conns), banners.Load(), failed.Load())
	if e := firstEr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "idleconns: first error: %s\n", e)
	}
	time.Sleep(*hold)
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("DONE open=%d banners=%d failed=%d\n", len(conns), banners.Load(), failed.Load())
}
