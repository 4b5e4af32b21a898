package test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailgate/internal/recorder"
)

// Client addresses of these tests: 127.0.9.10 and up.

// requireRoot skips unless the tests run as root: only root can show a
// switch of user. CI runs as root, so there the tests run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the gateway must start as root to drop privileges")
	}
}

// lowPort returns a free port below 1024 on 127.0.0.1: binding it needs
// root, so serving on it proves the socket was bound before the switch.
func lowPort(t *testing.T) string {
	t.Helper()
	for p := 1023; p > 600; p-- {
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no free port below 1024")
	return ""
}

// procStatus returns the "Key:" lines of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return out
}

// Started as root with "user: nobody", the gateway serves a port below
// 1024 as nobody (every id, no capability left) and still delivers,
// including a message large enough to be spooled to a temporary file.
func TestDropPrivileges(t *testing.T) {
	requireRoot(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody on this system: %v", err)
	}
	up := startUpstream(t, recorder.Options{})
	addr := lowPort(t)
	g := startGateway(t, baseConfig(addr, up.Addr(), `user: nobody
state: {store: "memory:"}
limits: {spool_threshold: 4KB}
`), addr)

	// The port answers as soon as it is bound, before the switch: wait
	// for the switch itself.
	rec := g.Log.WaitFor(t, "privileges dropped", 1)[0]
	if rec["user"] != "nobody" {
		t.Errorf("log line = %v", rec)
	}
	st := procStatus(t, g.cmd.Process.Pid)
	want := func(id string) string { return strings.Repeat(id+" ", 3) + id }
	if st["Uid"] != want(nobody.Uid) || st["Gid"] != want(nobody.Gid) {
		t.Errorf("gateway runs with Uid %q Gid %q, want nobody's %s/%s everywhere", st["Uid"], st["Gid"], nobody.Uid, nobody.Gid)
	}
	if st["Groups"] != nobody.Gid {
		t.Errorf("supplementary groups %q, want only nobody's group %s", st["Groups"], nobody.Gid)
	}
	if st["CapEff"] != "0000000000000000" || st["CapPrm"] != "0000000000000000" {
		t.Errorf("capabilities left: CapEff %s CapPrm %s", st["CapEff"], st["CapPrm"])
	}
	// Every thread, not only the main one.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", g.cmd.Process.Pid))
	for _, task := range tasks {
		data, err := os.ReadFile(task)
		if err == nil && !strings.Contains(string(data), "Uid:\t"+strings.ReplaceAll(want(nobody.Uid), " ", "\t")+"\n") {
			t.Errorf("%s is not nobody's:\n%s", task, data)
		}
	}
	if len(g.Log.Find("running as root: set \"user\" in the config to drop privileges once the listeners are bound, "+
		"or start the gateway as an unprivileged user with CAP_NET_BIND_SERVICE (see deploy/mailgate.service)")) != 0 {
		t.Error("warned about running as root although it dropped privileges")
	}

	c := client(t, "127.0.9.10", addr)
	big := testMessage + strings.Repeat("A line of text to make the message spool to disk.\r\n", 400)
	for _, body := range []string{testMessage, big} {
		if err := send(c, "alice@example.net", []string{"bob@example.com"}, body); err != nil {
			t.Fatalf("send (%d octets) as nobody: %v", len(body), err)
		}
	}
	msgs, err := up.WaitMessages(2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(msgs[1].Data, []byte(big)) {
		t.Errorf("the spooled message arrived changed (%d octets)", len(msgs[1].Data))
	}
}

// runGateway runs `mailgate run` on yaml and returns its exit code and
// output once it exits (within 10 s).
func runGatewayToExit(t *testing.T, yaml string) (int, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "run", "--config", cfg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), out.String()
		}
		return 0, out.String()
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the gateway did not exit:\n%s", out.String())
	}
	return 0, ""
}

// A user that does not exist: exit 1, with an error that names it, and
// the port is not left served.
func TestDropPrivilegesUnknownUser(t *testing.T) {
	requireRoot(t)
	addr := freeAddr(t)
	code, out := runGatewayToExit(t, baseConfig(addr, "127.0.0.1:9", "user: no-such-user\n"))
	if code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, out)
	}
	if !strings.Contains(out, `"msg":"cannot drop privileges","user":"no-such-user","err":"user \"no-such-user\": no such user on this system"`) {
		t.Errorf("no clear error:\n%s", out)
	}
	if strings.Contains(out, `"msg":"listening"`) {
		t.Errorf("it served before failing:\n%s", out)
	}
}

// A state file directory the user cannot write: the gateway refuses to
// start rather than tempfail every greylisted message.
func TestDropPrivilegesStateNotWritable(t *testing.T) {
	requireRoot(t)
	stateDir := t.TempDir() // root's, mode 0700
	addr := freeAddr(t)
	code, out := runGatewayToExit(t, baseConfig(addr, "127.0.0.1:9", fmt.Sprintf(`user: nobody
state: {store: "file:%s/state.db"}
filters: {greylist: {delay: 1m}}
`, stateDir)))
	if code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, out)
	}
	want := fmt.Sprintf(`state.store: the directory %s is not writable by user nobody`, stateDir)
	if !strings.Contains(out, want) {
		t.Errorf("no clear error (want %q):\n%s", want, out)
	}
}
