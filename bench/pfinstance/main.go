// Command pfinstance starts or stops a private Postfix instance (see
// internal/postfixtest) from shell scripts such as bench/load.sh.
//
//	pfinstance start -dir DIR [-port N] [-relay HOST:PORT] [-domain D]... [-user U]... [-o name=value]...
//	pfinstance stop  -dir DIR
//
// "start" prints shell-sourceable lines (ADDR=, PORT=, CONFIG=, PID=,
// LOG=) and exits, leaving Postfix running; "stop" brings it down (the
// directory stays). Needs root.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"mailgate/internal/postfixtest"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "", "instance directory (required)")
	port := fs.Int("port", 0, "smtpd port on 127.0.0.1 (0: pick a free one)")
	relay := fs.String("relay", "", "relay mode: relay everything to HOST:PORT")
	var domains, users, mainCF, smtpd list
	fs.Var(&domains, "domain", "virtual mailbox domain (repeatable)")
	fs.Var(&users, "user", "known user, local part or address (repeatable)")
	fs.Var(&mainCF, "o", "extra main.cf parameter name=value (repeatable)")
	fs.Var(&smtpd, "smtpd-o", "extra smtpd service -o name=value (repeatable)")
	fs.Parse(os.Args[2:])
	if *dir == "" {
		usage()
	}

	switch os.Args[1] {
	case "start":
		opts := postfixtest.Options{
			Dir: *dir, Port: *port, RelayHost: *relay,
			Domains: domains, Users: users, SmtpdArgs: smtpd,
			MainCF: map[string]string{},
		}
		for _, kv := range mainCF {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				fatalf("-o %q: want name=value", kv)
			}
			opts.MainCF[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		inst, err := postfixtest.Launch(opts)
		if err != nil {
			fatalf("%v", err)
		}
		fmt.Printf("ADDR=%s\nPORT=%d\nCONFIG=%s\nPID=%d\nLOG=%s\n",
			inst.Addr, inst.Port, inst.ConfigDir, inst.MasterPID(), inst.LogFile)
	case "stop":
		if err := postfixtest.StopDir(*dir); err != nil {
			fatalf("%v", err)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: pfinstance start|stop -dir DIR [-port N] [-relay HOST:PORT] [-domain D] [-user U] [-o name=value] [-smtpd-o name=value]")
	os.Exit(2)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pfinstance: "+format+"\n", args...)
	os.Exit(1)
}
