package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"

	"mailgate/config"
	"mailgate/internal/recorder"
)

const demoHelp = `
mailgate demo is running.

  gateway : %[1]s   (listener "mx": no TLS, no AUTH, local domain example.com)
  upstream: %[2]s   (a demo internal server that prints what it receives)

Try it from another terminal (swaks is in Debian's "swaks" package):

  delivered:  swaks --server %[1]s --from alice@example.net --to bob@example.com
  refused  :  swaks --server %[1]s --from alice@example.net --to someone@elsewhere.test
              (554 5.7.1 Relay access denied: example.com is the only local domain)

Stop with Ctrl-C. The embedded config is printed by: mailgate demo --print-config
`

// cmdDemo runs the gateway on the embedded demo config, with an in-process
// demo upstream that logs every message it receives.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && args[0] == "--print-config" {
		_, _ = stdout.Write(config.DefaultYAML())
		return 0
	}
	c, err := config.Default()
	if err != nil {
		fmt.Fprintln(stderr, "embedded config:", err)
		return 1
	}
	log := newLogger(c.Log, stderr)
	up, err := recorder.Start(recorder.Options{
		Addr:     c.Upstream.Servers[0].Address,
		Hostname: "internal.example.com",
		OnMessage: func(m recorder.Message) {
			subject := ""
			for _, line := range bytes.Split(m.Data, []byte("\r\n")) {
				if len(line) == 0 {
					break
				}
				if bytes.HasPrefix(bytes.ToLower(line), []byte("subject:")) {
					subject = string(bytes.TrimSpace(line[8:]))
				}
			}
			log.Info("demo upstream received a message", slog.String("from", m.From),
				slog.Any("rcpts", m.Rcpts), slog.String("subject", subject), slog.Int("bytes", len(m.Data)))
		},
	})
	if err != nil {
		fmt.Fprintln(stderr, "demo upstream:", err)
		return 1
	}
	defer up.Close()
	return serve(c, log, func() {
		fmt.Fprintf(stdout, demoHelp, c.Listeners[0].Address, up.Addr())
	})
}
