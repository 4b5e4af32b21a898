// Package postfixtest starts a real, private Postfix instance (Debian's
// /usr/sbin/postfix) on a loopback port, for end-to-end tests and
// benchmarks. It plays the "internal mail server" behind the gateway.
//
// Each instance has its own config_directory, queue_directory,
// data_directory, log file and Maildir store under a fresh temporary
// directory; it listens on 127.0.0.1 only and never uses DNS, syslog or the
// system Postfix's files (other than the read-only Debian meta files in
// /etc/postfix such as postfix-files and dynamicmaps.cf). Starting Postfix
// needs root.
//
// Two modes:
//
//   - mailbox (default): accepts mail for Options.Domains, delivers to
//     Maildirs of Options.Users via the virtual(8) agent and rejects any other
//     recipient in those domains at RCPT with "550 5.1.1 ... User unknown in
//     virtual mailbox table". Relaying is refused.
//   - relay (Options.RelayHost set): accepts everything from 127.0.0.0/8 and
//     relays it to RelayHost (e.g. smtp-sink), for benchmarks.
package postfixtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paths of Debian's Postfix.
const (
	PostfixBin   = "/usr/sbin/postfix"
	PostqueueBin = "/usr/sbin/postqueue"
)

// Options configures an instance.
type Options struct {
	// Port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// Domains are the virtual mailbox domains mail is accepted for. In
	// mailbox mode an empty list means {"example.com"}. In relay mode they
	// become relay_domains (mail for them is also accepted from outside
	// mynetworks) and are relayed too.
	Domains []string
	// Users are the known recipients: full addresses ("a@example.com") or
	// bare local parts, which exist in every domain of Domains. Mail to
	// anyone else in Domains is refused at RCPT with 550 5.1.1.
	Users []string
	// RelayHost switches to relay mode: everything accepted (from
	// mynetworks = 127.0.0.0/8) is relayed to this host:port.
	RelayHost string
	// Hostname is myhostname (default "postfixtest.localhost").
	Hostname string
	// MainCF are extra main.cf parameters; they override the defaults.
	MainCF map[string]string
	// SmtpdArgs are extra "-o name=value" arguments for the smtpd service.
	SmtpdArgs []string
	// Dir is the base directory to use; empty means a fresh temporary
	// directory, removed by Stop. A given Dir is left in place.
	Dir string
}

// Instance is a running private Postfix.
type Instance struct {
	Addr      string // 127.0.0.1:port of smtpd
	Port      int
	Dir       string // base directory (everything lives below it)
	ConfigDir string // config_directory: pass to "postfix -c", "postqueue -c"
	QueueDir  string
	MailBase  string // virtual_mailbox_base
	LogFile   string // maillog_file

	ownDir    bool
	mailboxes map[string]string // lower-case address -> Maildir (absolute)
	stopOnce  sync.Once
	stopErr   error
}

// Available returns nil when a private Postfix can be started here: the
// postfix binaries and user exist and we are root.
func Available() error {
	for _, p := range []string{PostfixBin, PostqueueBin} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("postfixtest: %s not found (apt-get install postfix): %w", p, err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("postfixtest: must run as root to start postfix")
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return fmt.Errorf("postfixtest: no postfix user: %w", err)
	}
	return nil
}

// Start starts an instance and registers its Stop with t.Cleanup. On
// failure it calls t.Fatal with Postfix's log.
func Start(t testing.TB, opts Options) *Instance {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	inst, err := Launch(opts)
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("postfixtest: stop: %v", err)
		}
	})
	return inst
}

// Launch starts an instance without a testing.TB (for commands such as
// benchmarks). The caller must call Stop. Errors include Postfix's log.
func Launch(opts Options) (*Instance, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	// When we pick the port there is a small race with other programs
	// binding it between our probe and master's bind: retry then.
	attempts := 1
	if opts.Port == 0 {
		attempts = 3
	}
	var err error
	for i := 0; i < attempts; i++ {
		var inst *Instance
		inst, err = launch(opts)
		if err == nil {
			return inst, nil
		}
		if !errors.Is(err, errBind) {
			break
		}
	}
	return nil, err
}

var errBind = errors.New("postfix could not bind its port")

func launch(opts Options) (_ *Instance, err error) {
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)

	port := opts.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}

	inst := &Instance{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	if opts.Dir != "" {
		inst.Dir = opts.Dir
		if err := os.MkdirAll(inst.Dir, 0o755); err != nil {
			return nil, err
		}
	} else {
		// Short paths: Postfix's UNIX sockets live below the queue
		// directory and sun_path is limited to 108 bytes.
		if inst.Dir, err = os.MkdirTemp("", "pftest-"); err != nil {
			return nil, err
		}
		inst.ownDir = true
	}
	if inst.Dir, err = filepath.Abs(inst.Dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && inst.ownDir {
			os.RemoveAll(inst.Dir)
		}
	}()
	// The postfix user must be able to traverse to its directories.
	if err := os.Chmod(inst.Dir, 0o755); err != nil {
		return nil, err
	}
	inst.ConfigDir = filepath.Join(inst.Dir, "etc")
	inst.QueueDir = filepath.Join(inst.Dir, "queue")
	inst.MailBase = filepath.Join(inst.Dir, "mail")
	inst.LogFile = filepath.Join(inst.Dir, "maillog")
	dataDir := filepath.Join(inst.Dir, "data")

	for _, d := range []string{inst.ConfigDir, inst.QueueDir, dataDir, inst.MailBase} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// queue_directory: owned by root (postfix-script creates its
	// subdirectories); data and mail directories: owned by postfix.
	for _, d := range []string{dataDir, inst.MailBase} {
		if err := os.Chown(d, uid, gid); err != nil {
			return nil, err
		}
	}

	relay := opts.RelayHost != ""
	domains := normDomains(opts.Domains)
	if !relay && len(domains) == 0 {
		domains = []string{"example.com"}
	}

	// virtual mailbox map: address -> domain/local/ (trailing slash:
	// Maildir delivery).
	inst.mailboxes = map[string]string{}
	var vmap bytes.Buffer
	if !relay {
		var addrs []string
		for _, u := range opts.Users {
			u = strings.TrimSpace(u)
			if u == "" {
				continue
			}
			if strings.Contains(u, "@") {
				addrs = append(addrs, u)
				d := strings.ToLower(u[strings.LastIndex(u, "@")+1:])
				if !contains(domains, d) {
					domains = append(domains, d)
				}
				continue
			}
			for _, d := range domains {
				addrs = append(addrs, u+"@"+d)
			}
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			key := strings.ToLower(a)
			if _, dup := inst.mailboxes[key]; dup {
				continue
			}
			at := strings.LastIndex(key, "@")
			rel := safeName(key[at+1:]) + "/" + safeName(key[:at]) + "/"
			inst.mailboxes[key] = filepath.Join(inst.MailBase, rel)
			fmt.Fprintf(&vmap, "%s %s\n", key, rel)
		}
	}
	vmapFile := filepath.Join(inst.ConfigDir, "vmailbox")
	if err := os.WriteFile(vmapFile, vmap.Bytes(), 0o644); err != nil {
		return nil, err
	}

	hostname := opts.Hostname
	if hostname == "" {
		hostname = "postfixtest.localhost"
	}
	p := [][2]string{
		{"compatibility_level", "3.6"},
		{"queue_directory", inst.QueueDir},
		{"data_directory", dataDir},
		{"meta_directory", "/etc/postfix"},
		{"mail_owner", "postfix"},
		{"setgid_group", "postdrop"},
		{"syslog_name", "postfixtest"},
		{"maillog_file", inst.LogFile},
		{"maillog_file_prefixes", inst.Dir},
		{"myhostname", hostname},
		{"mydomain", "localhost"},
		{"myorigin", "$myhostname"},
		{"mydestination", ""},
		{"local_recipient_maps", ""},
		{"local_transport", "error:5.1.1 local delivery is disabled"},
		{"alias_maps", ""},
		{"alias_database", ""},
		{"biff", "no"},
		{"append_dot_mydomain", "no"},
		{"readme_directory", "no"},
		{"inet_interfaces", "127.0.0.1"},
		{"inet_protocols", "ipv4"},
		{"mynetworks", "127.0.0.0/8"},
		{"smtpd_banner", "$myhostname ESMTP"},
		// No DNS anywhere: no MX/A lookups, no reverse lookups of clients.
		{"smtp_dns_support_level", "disabled"},
		{"lmtp_dns_support_level", "disabled"},
		{"smtpd_peername_lookup", "no"},
		{"smtp_host_lookup", "native"},
		{"lmtp_host_lookup", "native"},
		// No TLS (smtpd_tls_security_level defaults to none).
		{"smtp_tls_security_level", "none"},
		{"smtpd_tls_security_level", "none"},
		// Fast queue runs and retries.
		{"queue_run_delay", "1s"},
		{"minimal_backoff_time", "1s"},
		{"maximal_backoff_time", "5s"},
		{"maximal_queue_lifetime", "1h"},
		{"bounce_queue_lifetime", "1h"},
		{"delay_warning_time", "0h"},
		{"smtpd_reject_unlisted_recipient", "yes"},
		{"unknown_virtual_mailbox_reject_code", "550"},
		{"virtual_mailbox_base", inst.MailBase},
		{"virtual_mailbox_maps", "texthash:" + vmapFile},
		{"virtual_uid_maps", "static:" + pfUser.Uid},
		{"virtual_gid_maps", "static:" + pfUser.Gid},
		{"virtual_minimum_uid", strconv.Itoa(min(uid, 100))},
		{"virtual_mailbox_limit", "0"},
		{"message_size_limit", "52428800"},
	}
	if relay {
		nexthop := relayNexthop(opts.RelayHost)
		p = append(p,
			[2]string{"virtual_mailbox_domains", ""},
			[2]string{"relay_domains", strings.Join(domains, ", ")},
			[2]string{"relayhost", nexthop},
			[2]string{"relay_transport", "relay:" + nexthop},
			[2]string{"default_transport", "smtp:" + nexthop},
			[2]string{"smtpd_relay_restrictions", "permit_mynetworks, reject_unauth_destination"},
			[2]string{"smtpd_recipient_restrictions", "permit_mynetworks, reject_unauth_destination"},
		)
	} else {
		p = append(p,
			[2]string{"virtual_mailbox_domains", strings.Join(domains, ", ")},
			[2]string{"relay_domains", ""},
			[2]string{"default_transport", "error:5.7.1 relaying is disabled"},
			[2]string{"relay_transport", "error:5.7.1 relaying is disabled"},
			[2]string{"smtpd_relay_restrictions", "reject_unauth_destination"},
			[2]string{"smtpd_recipient_restrictions", "reject_unauth_destination"},
		)
	}
	var main bytes.Buffer
	main.WriteString("# written by mailgate/internal/postfixtest\n")
	seen := map[string]int{}
	for i, kv := range p {
		seen[kv[0]] = i
	}
	extraKeys := make([]string, 0, len(opts.MainCF))
	for k, v := range opts.MainCF {
		if i, ok := seen[k]; ok {
			p[i][1] = v
		} else {
			extraKeys = append(extraKeys, k)
		}
	}
	sort.Strings(extraKeys)
	for _, k := range extraKeys {
		p = append(p, [2]string{k, opts.MainCF[k]})
	}
	for _, kv := range p {
		fmt.Fprintf(&main, "%s = %s\n", kv[0], kv[1])
	}
	if err := os.WriteFile(filepath.Join(inst.ConfigDir, "main.cf"), main.Bytes(), 0o644); err != nil {
		return nil, err
	}

	var smtpd strings.Builder
	fmt.Fprintf(&smtpd, "127.0.0.1:%d inet n - n - - smtpd", port)
	for _, a := range opts.SmtpdArgs {
		fmt.Fprintf(&smtpd, "\n  -o %s", a)
	}
	master := smtpd.String() + "\n" + masterCF
	if err := os.WriteFile(filepath.Join(inst.ConfigDir, "master.cf"), []byte(master), 0o644); err != nil {
		return nil, err
	}

	if out, err := inst.postfix("start"); err != nil {
		inst.forceStop()
		log := inst.Log()
		if strings.Contains(strings.ToLower(log+string(out)), "address already in use") {
			return nil, fmt.Errorf("%w: %s: %v\n%s\n--- maillog:\n%s", errBind, inst.Addr, err, out, log)
		}
		return nil, fmt.Errorf("postfix -c %s start: %v\n%s\n--- maillog:\n%s", inst.ConfigDir, err, out, log)
	}
	if err := waitBanner(inst.Addr, 20*time.Second); err != nil {
		inst.forceStop()
		return nil, fmt.Errorf("postfix smtpd on %s: %v\n--- maillog:\n%s", inst.Addr, err, inst.Log())
	}
	return inst, nil
}

// masterCF are the services besides smtpd: the stock Debian list without
// chroot, tlsmgr and the pipe examples; postlog is needed for maillog_file.
const masterCF = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
  -o syslog_name=${multi_instance_name?{$multi_instance_name}:{postfixtest}}/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// postfix runs "postfix -c ConfigDir args..." with a bounded run time.
func (i *Instance) postfix(args ...string) ([]byte, error) {
	return runBounded(60*time.Second, PostfixBin, append([]string{"-c", i.ConfigDir}, args...)...)
}

func runBounded(timeout time.Duration, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	// Postfix commands take config from MAIL_CONFIG too; make sure a stray
	// one from the environment does not point at another instance.
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "MAIL_CONFIG=") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !timer.Stop() {
		err = fmt.Errorf("%s timed out after %v (%v)", name, timeout, err)
	}
	return out.Bytes(), err
}

// Stop stops Postfix (orderly, then by force), waits for its master to
// exit and removes the temporary directory it created. Safe to call twice.
func (i *Instance) Stop() error {
	i.stopOnce.Do(func() {
		i.stopErr = i.forceStop()
		if i.ownDir {
			if err := os.RemoveAll(i.Dir); err != nil && i.stopErr == nil {
				i.stopErr = err
			}
		}
	})
	return i.stopErr
}

// StopDir stops an instance that was launched with Options.Dir = dir,
// possibly by another process (e.g. bench/pfinstance). It leaves dir in
// place. Stopping an instance that is not running is not an error.
func StopDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	i := &Instance{Dir: abs, ConfigDir: filepath.Join(abs, "etc"), QueueDir: filepath.Join(abs, "queue")}
	return i.forceStop()
}

// forceStop brings master and all its children down, whatever state it is
// in: "postfix stop" (which escalates to SIGKILL of the process group after
// 5 s), then SIGKILL of the master's process group if it still lives.
func (i *Instance) forceStop() error {
	pid := i.masterPID()
	if pid <= 0 {
		return nil
	}
	out, err := i.postfix("stop")
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		killGroup(pid)
		time.Sleep(200 * time.Millisecond)
		if alive(pid) {
			return fmt.Errorf("postfix master %d does not die (stop: %v %s)", pid, err, out)
		}
	}
	return nil
}

// masterPID reads the running master's PID (0 if none).
func (i *Instance) masterPID() int {
	b, err := os.ReadFile(filepath.Join(i.QueueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !alive(pid) {
		return 0
	}
	// Make sure the PID is a postfix master (not a recycled PID).
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if strings.TrimSpace(string(comm)) != "master" {
		return 0
	}
	return pid
}

// MasterPID is the PID of the instance's master process (0 if not running).
func (i *Instance) MasterPID() int { return i.masterPID() }

// Log returns the instance's maillog (what Postfix logged so far).
func (i *Instance) Log() string {
	b, err := os.ReadFile(i.LogFile)
	if err != nil {
		return fmt.Sprintf("(no maillog: %v)", err)
	}
	const max = 64 << 10
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return string(b)
}

// QueueSize returns the number of messages in the instance's queue
// (postqueue -j); 0 means everything has been delivered or bounced.
func (i *Instance) QueueSize() (int, error) {
	out, err := runBounded(30*time.Second, PostqueueBin, "-c", i.ConfigDir, "-j")
	if err != nil {
		return 0, fmt.Errorf("postqueue -j: %v: %s", err, out)
	}
	n := 0
	for _, line := range bytes.Split(out, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			n++
		}
	}
	return n, nil
}

// Maildir returns the Maildir directory of a known user's address.
func (i *Instance) Maildir(addr string) (string, bool) {
	d, ok := i.mailboxes[strings.ToLower(addr)]
	return d, ok
}

// WaitDelivered waits until at least n messages have been delivered to
// addr's Maildir (new/ and cur/) and returns them all, oldest first (by
// file name: Maildir names start with the delivery time). On timeout it
// returns what it found and an error that includes the end of the log.
func (i *Instance) WaitDelivered(addr string, n int, timeout time.Duration) ([][]byte, error) {
	dir, ok := i.Maildir(addr)
	if !ok {
		return nil, fmt.Errorf("postfixtest: %s is not a known user (Options.Users)", addr)
	}
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := readMaildir(dir)
		if err == nil && len(msgs) >= n {
			return msgs, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%d message(s)", len(msgs))
			}
			return msgs, fmt.Errorf("postfixtest: waiting %v for %d message(s) in %s: got %v\n--- maillog:\n%s",
				timeout, n, dir, err, tail(i.Log(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readMaildir(dir string) ([][]byte, error) {
	var names []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				names = append(names, filepath.Join(sub, e.Name()))
			}
		}
	}
	sort.Slice(names, func(a, b int) bool { return filepath.Base(names[a]) < filepath.Base(names[b]) })
	msgs := make([][]byte, 0, len(names))
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, b)
	}
	return msgs, nil
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitBanner waits until addr accepts a connection and sends a 220 banner.
func waitBanner(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "QUIT\r\n")
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "220") {
				return nil
			}
			last = fmt.Errorf("banner %q: %v", line, rerr)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no SMTP banner within %v: %v", timeout, last)
}

func relayNexthop(h string) string {
	h = strings.TrimSpace(h)
	if strings.HasPrefix(h, "[") {
		return h
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		return "[" + h + "]"
	}
	return "[" + host + "]:" + port
}

func normDomains(ds []string) []string {
	var out []string
	for _, d := range ds {
		d = strings.ToLower(strings.TrimSpace(d))
		if d != "" && !contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// safeName maps an address part to a single safe path element.
func safeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_', r == '+':
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, "=%02x", r)
		}
	}
	out := b.String()
	if out == "" || out == "." || out == ".." {
		out = "_" + out
	}
	return out
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
