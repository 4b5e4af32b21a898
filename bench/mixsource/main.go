// Command mixsource is the load client of the content benchmark
// (bench/content.sh): like Postfix's smtp-source, it sends count
// messages over `sessions` concurrent SMTP sessions, a new connection per
// message (connect, EHLO, MAIL, RCPT, DATA, QUIT; no pipelining), but
// the messages are the realistic, DKIM-signed mix of bench/internal/mix,
// built (and signed) before the clock starts.
//
//	mixsource -addr 127.0.0.1:2525 -sessions 20 -count 2000 -seed 1
//	mixsource -addr 127.0.0.1:2525 -mix eicar:1 -count 1 -expect 554
//
// It talks to loopback addresses only. Every message must be accepted
// (250 after the data) unless -expect gives the reply code wanted
// instead (a probe: the first reply that is not 2xx or 3xx must start
// with it). It prints one line
//
//	RESULT count=N seconds=S rate=R failures=F p50_ms=… p99_ms=… build_seconds=B bytes=… cpu_ms=C
//
// (cpu_ms: its own CPU time, message building included) and exits 1
// if any message failed (or got another reply than -expect), 2 on bad
// flags.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailgate/bench/internal/mix"
)

func main() {
	addr := flag.String("addr", "", "server, 127.0.0.1:port (loopback only)")
	src := flag.String("src", "127.0.0.1", "source address (loopback)")
	sessions := flag.Int("sessions", 20, "concurrent sessions")
	count := flag.Int("count", 1000, "messages to send (1 to 1000000)")
	timeout := flag.Duration("timeout", 3*time.Minute, "bound on the whole run (sending, not building)")
	msgTimeout := flag.Duration("msg-timeout", 60*time.Second, "bound on one message's session")
	helo := flag.String("helo", "source.example.net", "EHLO name")
	from := flag.String("from", "sender@example.net", "MAIL FROM and header From (its domain signs)")
	mailFrom := flag.String("mail-from", "", "MAIL FROM if not -from (probes)")
	to := flag.String("to", "user@example.com", "RCPT TO and header To")
	mixSpec := flag.String("mix", mix.DefaultMix, "kinds and weights: text, html, attach (and the probes eicar, listed)")
	attach := flag.Int("attach-size", 200<<10, "attachment size in bytes, before base64")
	seed := flag.Uint64("seed", 1, "makes this run's messages differ from another's")
	tamper := flag.Bool("tamper", false, "break the DKIM signatures (probe)")
	expect := flag.String("expect", "", "probe: the reply code wanted instead of acceptance (e.g. 554, 5, 4)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("mixsource: ")

	server, err := netip.ParseAddrPort(*addr)
	source, serr := netip.ParseAddr(*src)
	switch {
	case err != nil || !server.Addr().IsLoopback():
		usage("-addr must be a loopback address and port, like 127.0.0.1:2525")
	case serr != nil || !source.IsLoopback():
		usage("-src must be a loopback address")
	case *sessions < 1 || *sessions > 1000:
		usage("-sessions: 1 to 1000")
	case *count < 1 || *count > 1000000:
		usage("-count: 1 to 1000000")
	case *timeout <= 0 || *msgTimeout <= 0:
		usage("-timeout and -msg-timeout must be positive")
	}
	cycle, err := mix.ParseMix(*mixSpec)
	if err != nil {
		usage(err.Error())
	}
	envFrom := cmpOr(*mailFrom, *from)

	t0 := time.Now()
	msgs, err := mix.BuildAll(mix.Options{From: *from, To: *to, AttachSize: *attach, Seed: *seed, Tamper: *tamper}, cycle, *count)
	if err != nil {
		log.Fatal(err)
	}
	var bytesTotal int64
	for i, m := range msgs {
		msgs[i] = mix.DotStuff(m)
		bytesTotal += int64(len(m))
	}
	build := time.Since(t0)

	c := &client{
		server: server.String(),
		dialer: net.Dialer{LocalAddr: &net.TCPAddr{IP: source.AsSlice()}},
		helo:   *helo, from: envFrom, to: *to,
		msgTimeout: *msgTimeout,
		expect:     *expect,
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	lat := make([]time.Duration, *count)
	var next atomic.Int64
	var failures atomic.Int64
	var errMu sync.Mutex
	var firstErrs []string
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
				reply, err := c.send(ctx, msgs[i])
				lat[i] = time.Since(t)
				if err != nil {
					failures.Add(1)
					errMu.Lock()
					if len(firstErrs) < 5 {
						firstErrs = append(firstErrs, fmt.Sprintf("message %d (%s): %v", i, cycle[i%len(cycle)], err))
					}
					errMu.Unlock()
				} else if *expect != "" {
					fmt.Printf("REPLY %s\n", reply)
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	sent := min(int(next.Load()), *count)
	if sent < *count {
		failures.Add(int64(*count - sent))
		firstErrs = append(firstErrs, fmt.Sprintf("timeout: %d messages not sent after %s", *count-sent, *timeout))
	}
	for _, e := range firstErrs {
		log.Print(e)
	}
	mix.PrintResult(*count, secs, failures.Load(), lat[:sent], build, bytesTotal)
	if failures.Load() > 0 {
		os.Exit(1)
	}
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "mixsource:", msg)
	flag.Usage()
	os.Exit(2)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// client sends one message per connection.
type client struct {
	server     string
	dialer     net.Dialer
	helo       string
	from, to   string
	msgTimeout time.Duration
	expect     string
}

// errRefused is a reply that is not the one wanted.
type errRefused struct{ step, reply string }

func (e *errRefused) Error() string { return e.step + ": " + e.reply }

// send runs one session. Without -expect it succeeds when the data are
// accepted (and QUIT answered); with it, when the first reply that is
// not 2xx/3xx starts with the expected code, which it returns.
func (c *client) send(ctx context.Context, data []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.msgTimeout)
	defer cancel()
	conn, err := c.dialer.DialContext(ctx, "tcp", c.server)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	r := bufio.NewReader(conn)
	w := bufio.NewWriterSize(conn, 64<<10)

	steps := []struct {
		name string
		cmd  []byte
		want byte // first digit
	}{
		{"banner", nil, '2'},
		{"EHLO", []byte("EHLO " + c.helo + "\r\n"), '2'},
		{"MAIL", []byte("MAIL FROM:<" + c.from + ">\r\n"), '2'},
		{"RCPT", []byte("RCPT TO:<" + c.to + ">\r\n"), '2'},
		{"DATA", []byte("DATA\r\n"), '3'},
		{"end of data", data, '2'},
	}
	for _, s := range steps {
		if s.cmd != nil {
			if _, err := w.Write(s.cmd); err != nil {
				return "", fmt.Errorf("%s: %w", s.name, err)
			}
			if s.name == "end of data" {
				_, _ = w.WriteString(".\r\n")
			}
			if err := w.Flush(); err != nil {
				return "", fmt.Errorf("%s: %w", s.name, err)
			}
		}
		reply, err := readReply(r)
		if err != nil {
			return "", fmt.Errorf("%s: %w", s.name, err)
		}
		if reply[0] != s.want {
			if c.expect != "" && strings.HasPrefix(reply, c.expect) {
				_, _ = io.WriteString(conn, "QUIT\r\n")
				return s.name + ": " + reply, nil
			}
			return "", &errRefused{s.name, reply}
		}
	}
	if c.expect != "" {
		return "", errors.New("accepted, want " + c.expect)
	}
	if _, err := io.WriteString(conn, "QUIT\r\n"); err != nil {
		return "", fmt.Errorf("QUIT: %w", err)
	}
	if _, err := readReply(r); err != nil {
		return "", fmt.Errorf("QUIT: %w", err)
	}
	return "", nil
}

// readReply reads a (multi-line) reply and returns it on one line.
func readReply(r *bufio.Reader) (string, error) {
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return "", fmt.Errorf("bad reply %q", line)
		}
		lines = append(lines, line)
		if len(line) == 3 || line[3] != '-' {
			return strings.Join(lines, " / "), nil
		}
		if len(lines) > 100 {
			return "", errors.New("reply of more than 100 lines")
		}
	}
}
