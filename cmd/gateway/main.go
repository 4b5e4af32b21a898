// Command mailgate is the SMTP security gateway: a filtering reverse proxy
// in front of an unchanged internal mail server.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"mailgate/config"
	"mailgate/internal/users"
	"mailgate/smtpd"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `mailgate — SMTP security gateway

Usage:
  mailgate run     --config FILE   run the gateway
  mailgate check   --config FILE   validate the config and print the effective policy
  mailgate explain --config FILE --ip A --helo H --from F --rcpt R [--message FILE] [--json]
                                   dry-run the filters for one client and message
  mailgate demo                    run on the embedded demo config with a demo upstream
  mailgate passwd                  hash a password (read from stdin) for auth.users_file
  mailgate version                 print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(args, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "explain":
		return cmdExplain(args, stdout, stderr)
	case "demo":
		return cmdDemo(args, stdout, stderr)
	case "passwd":
		return cmdPasswd(stdin, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "mailgate", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mailgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML)")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if *path == "" {
		fmt.Fprintf(stderr, "mailgate %s: --config FILE is required\n", name)
		return "", false
	}
	return *path, true
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, ok := configFlag("check", args, stderr)
	if !ok {
		return 2
	}
	c, warnings, err := config.Load(path)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if c.User != "" {
		if _, err := lookupUser(c.User); err != nil {
			fmt.Fprintf(stderr, "warning: %v: run would refuse to start on this machine\n", err)
		}
	}
	fmt.Fprint(stdout, c.Policy())
	fmt.Fprintf(stdout, "\n%s: OK\n", path)
	return 0
}

func cmdRun(args []string, stderr io.Writer) int {
	path, ok := configFlag("run", args, stderr)
	if !ok {
		return 2
	}
	c, warnings, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := newLogger(c.Log, stderr)
	for _, w := range warnings {
		log.Warn("config: " + w)
	}
	return serve(c, log, nil)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// drainTimeout is how long SIGTERM waits for sessions to finish.
const drainTimeout = 30 * time.Second

// serve runs the gateway until SIGTERM or SIGINT, then drains. started,
// if set, is called once every listener accepts connections.
func serve(c *config.Config, log *slog.Logger, started func()) int {
	// Signals are caught before any listener opens: a SIGHUP that arrives
	// as soon as the port answers must not take Go's default (exit).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sig)
	g, err := build(c, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	var listeners []net.Listener
	for i, addr := range g.addresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			log.Error("cannot listen", "listener", c.Listeners[i].Name, "address", addr, "err", err)
			for _, l := range listeners {
				_ = l.Close()
			}
			return 1
		}
		listeners = append(listeners, g.metrics.listener(l, c.Listeners[i].Name))
	}
	// The metrics endpoint is bound with the SMTP sockets (metrics.go).
	if err := g.metrics.listen(); err != nil {
		log.Error("cannot listen", "listener", "metrics", "address", c.Metrics.Address, "err", err)
		for _, l := range listeners {
			_ = l.Close()
		}
		g.close()
		return 1
	}
	// Every socket is bound: give up root before accepting (privileges.go).
	if err := dropPrivileges(c, log); err != nil {
		log.Error("cannot drop privileges", "user", c.User, "err", err)
		for _, l := range listeners {
			_ = l.Close()
		}
		g.metrics.stop()
		g.close()
		return 1
	}
	g.metrics.serve()
	var wg sync.WaitGroup
	for i, srv := range g.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(listeners[i]); err != nil && !errors.Is(err, smtpd.ErrServerClosed) {
				log.Error("listener stopped", "listener", c.Listeners[i].Name, "err", err)
			}
		}()
		log.Info("listening", "listener", c.Listeners[i].Name, "address", listeners[i].Addr().String(),
			"tls", string(c.Listeners[i].TLS), "auth", string(c.Listeners[i].Auth))
	}
	if started != nil {
		started()
	}

	s := <-sig
	for s == syscall.SIGHUP {
		// Reload: new sessions get the new config, open ones finish on
		// theirs; a config that does not load is refused (reload.go).
		g.reload()
		s = <-sig
	}
	log.Info("draining", "signal", s.String(), "deadline", drainTimeout.String())
	g.metrics.draining()
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	for _, srv := range g.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				log.Warn("sessions cut at drain deadline", "err", err)
			}
		}()
	}
	wg.Wait()
	// Every session has ended: close the idle upstream sessions and the
	// state store (a file store is flushed and unlocked).
	g.gen.retire()
	g.close()
	g.metrics.stop()
	log.Info("stopped")
	return 0
}

func cmdPasswd(stdin io.Reader, stdout, stderr io.Writer) int {
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		fmt.Fprintln(stderr, "mailgate passwd: give the password on standard input")
		return 2
	}
	h, err := users.Hash(pw)
	if err != nil {
		fmt.Fprintln(stderr, "mailgate passwd:", err)
		return 1
	}
	fmt.Fprintln(stdout, h)
	return 0
}
