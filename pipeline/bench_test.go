package pipeline_test

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailgate/config"
	"mailgate/filters/relay"
	"mailgate/filters/relayexploit"
	"mailgate/internal/recorder"
	"mailgate/pipeline"
	"mailgate/smtpd"
	"mailgate/upstream"
)

// BenchmarkRelay measures a whole session through the gateway in-process:
// connect, EHLO, MAIL, RCPT, DATA (4 KB), QUIT, relayed to a recording
// upstream. Run with -cpu 1,2 and -cpuprofile to find hot spots.
func BenchmarkRelay(b *testing.B) {
	up, err := recorder.Start(recorder.Options{Hostname: "internal.test"})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rc, err := upstream.New(config.Upstream{
		Servers:        []config.UpstreamServer{{Address: up.Addr(), TLS: config.TLSNone}},
		ConnectTimeout: config.Duration(5 * time.Second),
		CommandTimeout: config.Duration(30 * time.Second),
		RetryAfter:     config.Duration(time.Second),
	}, "mx.bench.test", log)
	if err != nil {
		b.Fatal(err)
	}
	gw := &pipeline.Gateway{
		Hostname: "mx.bench.test",
		Pipeline: pipeline.New(
			pipeline.Entry{Filter: relayexploit.New(), Mode: pipeline.Enforce},
			pipeline.Entry{Filter: relay.New(relay.Config{Domains: []string{"example.com"}}), Mode: pipeline.Enforce},
		),
		Upstream: rc,
		Log:      log,
	}
	srv := smtpd.NewServer(smtpd.Config{
		Name: "mx", Hostname: "mx.bench.test", MaxLineLength: 512, MaxMessageSize: 25 << 20,
		SpoolThreshold: 1 << 20, GreetingTimeout: time.Minute, CommandTimeout: time.Minute, DataTimeout: time.Minute,
	}, gw.NewHandler, log)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	defer l.Close()

	body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 4096/80)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := sendOne(l.Addr().String(), body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func sendOne(addr, body string) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	c := smtp.NewClient(nc)
	defer c.Close()
	if err := c.Hello("client.bench.test"); err != nil {
		return err
	}
	if err := c.SendMail("a@example.net", []string{"b@example.com"}, strings.NewReader(body)); err != nil {
		return err
	}
	return c.Quit()
}
