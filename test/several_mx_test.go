package test

// Several MX (SPEC §1 "Two or more MX", §8): two gateway processes share a
// real redis-server and one upstream. Clients from 127.0.10.0/24.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailgate/internal/recorder"
	"mailgate/internal/redistest"
)

// mxGreylistDelay is the gateways' greylisting delay.
const mxGreylistDelay = time.Second

// mxConfig is the extra config of both gateways: shared greylisting, each
// client address its own network, and a connection rate the stream never
// reaches (the test is about the handover, not the limits).
func mxConfig(store string) string {
	return fmt.Sprintf(`state: {store: %q}
limits: {connection_rate_per_ip: 100000/1m}
filters:
  greylist: {delay: %v, netmask_v4: 32}
`, store, mxGreylistDelay)
}

// mxTry is one delivery attempt in a session of its own, as a sending MTA
// makes it; safe to call from any goroutine. It returns nil only after
// the gateway's 250 for DATA.
func mxTry(src, addr, from, body string) error {
	err, _ := mxTryData(src, addr, from, body, nil)
	return err
}

// mxTryData is mxTry that also reports whether the gateway's 354 came
// before stopped was set (the message was in DATA when it was stopped).
func mxTryData(src, addr, from, body string, stopped *atomic.Bool) (err error, inDataBefore bool) {
	err = mxSession(src, addr, from, body, func() { inDataBefore = stopped != nil && !stopped.Load() })
	return err, inDataBefore
}

func mxSession(src, addr, from, body string, at354 func()) error {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	c := smtp.NewClient(nc)
	defer c.Close()
	if err := c.Hello("client.example.net"); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt("bob@example.com", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	at354()
	// A pause in the middle of DATA, as over a slow link: a SIGTERM finds
	// sessions in the middle of a message.
	half := len(body) / 2
	if _, err := io.WriteString(w, body[:half]); err != nil {
		return err
	}
	time.Sleep(mxDataPause)
	if _, err := io.WriteString(w, body[half:]); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	_ = c.Quit()
	return nil
}

// mxDataPause is how long a message of the stream is in DATA.
const mxDataPause = 30 * time.Millisecond

// mxFailure classifies a failed attempt as a sending MTA must treat it:
// "refused" (no connection), "4xx" (the gateway said try again), "cut"
// (the connection ended before any reply to the message: RFC 5321 §6.1,
// not delivered) or "permanent"/"other", which a stopping gateway must
// never cause.
func mxFailure(err error) string {
	var se *smtp.SMTPError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &se) && se.Code >= 400 && se.Code < 500:
		return "4xx"
	case errors.As(err, &se):
		return "permanent"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return "cut"
	}
	return "other"
}

func greylisted(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code == 451 && se.EnhancedCode == smtp.EnhancedCode{4, 7, 1}
}

var streamID = regexp.MustCompile(`X-Stream-ID: (\d+)\r\n`)

// Two MX sharing Redis: a sender greylisted by one is accepted on retry by
// the other; and with a stream of mail alternating between them, stopping
// one (SIGTERM) loses nothing that was acknowledged and duplicates
// nothing, while the other keeps accepting.
func TestSeveralMXShareStateAndSurviveAStop(t *testing.T) {
	t.Parallel()
	r := redistest.StartProcess(t)
	up := startUpstream(t, recorder.Options{})
	addrs := [2]string{freeAddr(t), freeAddr(t)}
	gws := [2]*gateway{
		startGateway(t, baseConfig(addrs[0], up.Addr(), mxConfig(r.URL())), addrs[0]),
		startGateway(t, baseConfig(addrs[1], up.Addr(), mxConfig(r.URL())), addrs[1]),
	}

	// Greylisted by A, accepted by B on retry after the delay.
	const greySrc, greyFrom = "127.0.10.50", "grey@example.net"
	err := mxTry(greySrc, addrs[0], greyFrom, reloadBody("greylisted on A"))
	wantCode(t, "first attempt on A", err, 451, "4.7.1")
	time.Sleep(mxGreylistDelay + 200*time.Millisecond)
	if err := mxTry(greySrc, addrs[1], greyFrom, reloadBody("greylisted on A")); err != nil {
		t.Fatalf("retry on B after the delay: %v", err)
	}
	if got := messagesWith(up, "Subject: greylisted on A"); len(got) != 1 {
		t.Fatalf("upstream has %d copies of the retried message, want 1", len(got))
	}
	mxWaitDecision(t, gws[1], greySrc, "greylisting passed after")

	// The stream: total messages, one session each, from 4 clients at
	// once; the first attempt alternates between the MX, a failed one is
	// retried on the other, as MTAs do with two MX records. A gets
	// SIGTERM after stopAfter deliveries; the second half of the stream is
	// only sent once A has begun draining, so that it surely meets a
	// stopped gateway however slowly a loaded machine runs.
	const total, workers, stopAfter = 200, 4, 60
	ids := make(chan int)
	drainingA := make(chan struct{})
	go func() {
		for i := range total {
			if i == total/2 {
				select {
				case <-drainingA:
				case <-time.After(time.Minute): // A was never stopped: the checks below say so
				}
			}
			ids <- i
		}
		close(ids)
	}()

	var (
		next      atomic.Int64
		delivered atomic.Int64
		stopped   atomic.Bool // SIGTERM sent to A
		stopOnce  sync.Once
		exitA     = make(chan error, 1)

		mu          sync.Mutex
		acked       = map[int]int{}    // id → gateway that said 250
		ackedAfter  [2]int             // acknowledgements after A was signalled
		inFlightA   int                // sessions on A open across its SIGTERM, delivered
		failsAfterA = map[string]int{} // failures on A that ended after its SIGTERM
		problems    []string
	)
	stopA := func() {
		stopped.Store(true)
		err := gws[0].cmd.Process.Signal(syscall.SIGTERM)
		for end := time.Now().Add(20 * time.Second); err == nil && len(gws[0].Log.Find("draining")) == 0; {
			if time.Now().After(end) {
				err = errors.New("gateway A did not log \"draining\" within 20s of SIGTERM")
			}
			time.Sleep(10 * time.Millisecond)
		}
		close(drainingA)
		if err != nil {
			exitA <- err
			return
		}
		select {
		case err := <-gws[0].done:
			gws[0].done <- err
			exitA <- err
		case <-time.After(40 * time.Second):
			exitA <- errors.New("gateway A did not exit within 40s of SIGTERM")
		}
	}

	var wg sync.WaitGroup
	for w := range workers {
		src := fmt.Sprintf("127.0.10.%d", 60+w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				from := fmt.Sprintf("m%d@example.net", id)
				body := fmt.Sprintf("From: %s\r\nTo: bob@example.com\r\nSubject: stream\r\nX-Stream-ID: %d\r\n\r\nHello.\r\n", from, id)
				gi := int(next.Add(1) % 2)
				for try := 0; ; try++ {
					if try == 20 {
						mu.Lock()
						problems = append(problems, fmt.Sprintf("message %d: not delivered after 20 attempts", id))
						mu.Unlock()
						break
					}
					afterStop := stopped.Load()
					err, inDataBefore := mxTryData(src, addrs[gi], from, body, &stopped)
					if err == nil {
						mu.Lock()
						if prev, dup := acked[id]; dup {
							problems = append(problems, fmt.Sprintf("message %d acknowledged twice (by %d and %d)", id, prev, gi))
						}
						acked[id] = gi
						if afterStop {
							ackedAfter[gi]++
						} else if gi == 0 && stopped.Load() {
							inFlightA++
						}
						mu.Unlock()
						if delivered.Add(1) == stopAfter {
							stopOnce.Do(func() { go stopA() })
						}
						break
					}
					kind := mxFailure(err)
					mu.Lock()
					if gi == 0 && stopped.Load() {
						failsAfterA[kind]++
						if inDataBefore {
							// The drain lets a message being received finish.
							problems = append(problems, fmt.Sprintf("message %d was in DATA on A when it was stopped, and failed: %v", id, err))
						}
					}
					if kind == "permanent" || kind == "other" {
						problems = append(problems, fmt.Sprintf("message %d on gateway %d: %v (%s)", id, gi, err, kind))
					}
					mu.Unlock()
					if greylisted(err) {
						time.Sleep(mxGreylistDelay + 100*time.Millisecond)
					} else {
						time.Sleep(20 * time.Millisecond)
					}
					gi = 1 - gi // the other MX
				}
			}
		}()
	}
	wg.Wait()

	for _, p := range problems {
		t.Error(p)
	}
	select {
	case err := <-exitA:
		if err != nil {
			t.Errorf("gateway A after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("gateway A was never stopped")
	}
	if !stopped.Load() {
		t.Fatal("the stream ended before A was stopped")
	}

	// Every acknowledged message is at the upstream exactly once, and
	// nothing else from the stream is.
	count := map[int]int{}
	for _, m := range messagesWith(up, "X-Stream-ID: ") {
		sm := streamID.FindSubmatch(m.Data)
		if sm == nil {
			t.Fatalf("unparsable stream message %q", m.Data)
		}
		id, _ := strconv.Atoi(string(sm[1]))
		count[id]++
	}
	if len(acked) != total {
		t.Errorf("%d of %d messages acknowledged", len(acked), total)
	}
	for id := range total {
		_, ok := acked[id]
		switch n := count[id]; {
		case ok && n == 0:
			t.Errorf("message %d was acknowledged (by gateway %d) but never reached the upstream", id, acked[id])
		case n > 1:
			t.Errorf("message %d reached the upstream %d times", id, n)
		case !ok && n > 0:
			t.Errorf("message %d reached the upstream but the client never got 250", id)
		}
	}
	// A's failures once stopping are all "try again later" kinds, and B
	// took over.
	for kind, n := range failsAfterA {
		if kind != "refused" && kind != "4xx" && kind != "cut" {
			t.Errorf("%d attempts on the stopping gateway failed with %q", n, kind)
		}
	}
	if failsAfterA["refused"] == 0 {
		t.Errorf("no connection was refused by the stopped gateway (failures: %v)", failsAfterA)
	}
	if ackedAfter[1] == 0 {
		t.Error("gateway B acknowledged nothing after A was stopped")
	}
	var byGW [2]int
	for _, gi := range acked {
		byGW[gi]++
	}
	t.Logf("acknowledged by A: %d (%d sessions open across its SIGTERM, %d started after it), by B: %d (%d after A's SIGTERM); "+
		"A's failures after SIGTERM: %v", byGW[0], inFlightA, ackedAfter[0], byGW[1], ackedAfter[1], failsAfterA)

	// B still accepts new mail after the stream (from a client that has
	// passed greylisting).
	if err := mxTry("127.0.10.60", addrs[1], "late@example.net", reloadBody("after the stream")); err != nil {
		t.Fatalf("gateway B after the stream: %v", err)
	}
	gws[0].Log.WaitFor(t, "stopped", 1)
}

// mxWaitDecision waits for a "message" log line of client with a greylist
// decision whose reason contains reason.
func mxWaitDecision(t *testing.T, g *gateway, client, reason string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, rec := range g.Log.Find("message") {
			if rec["client"] != client {
				continue
			}
			ds, _ := rec["decisions"].([]any)
			for _, d := range ds {
				m, _ := d.(map[string]any)
				if r, _ := m["reason"].(string); m["filter"] == "greylist" && strings.Contains(r, reason) {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no greylist decision %q logged for %s; log:\n%s", reason, client, g.Log.String())
}
