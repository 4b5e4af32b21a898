package test

import (
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The container files are checked without a container engine: the compose
// demo's gateway config passes `check`, and docker-compose.yml, the
// Dockerfile and that config agree with each other (ports, the mounted
// path, the service names the config connects to).

const (
	composeFile   = "../docker-compose.yml"
	composeConfig = "../deploy/compose/mailgate.yaml"
	dockerfile    = "../Dockerfile"
)

func TestComposeGatewayConfigChecks(t *testing.T) {
	out, err := exec.Command(binary, "check", "--config", composeConfig).CombinedOutput()
	if err != nil {
		t.Fatalf("check %s: %v\n%s", composeConfig, err, out)
	}
	if !strings.Contains(string(out), composeConfig+": OK") {
		t.Fatalf("check did not say OK:\n%s", out)
	}
}

type composeService struct {
	Image     string         `yaml:"image"`
	Build     map[string]any `yaml:"build"`
	Command   []string       `yaml:"command"`
	Volumes   []string       `yaml:"volumes"`
	Ports     []string       `yaml:"ports"`
	Tmpfs     []string       `yaml:"tmpfs"`
	ReadOnly  bool           `yaml:"read_only"`
	CapDrop   []string       `yaml:"cap_drop"`
	DependsOn map[string]any `yaml:"depends_on"`
}

type gatewayConfig struct {
	User      string `yaml:"user"`
	Listeners []struct {
		Address string `yaml:"address"`
	} `yaml:"listeners"`
	Upstream struct {
		Servers []struct {
			Address string `yaml:"address"`
		} `yaml:"servers"`
	} `yaml:"upstream"`
	State struct {
		Store string `yaml:"store"`
	} `yaml:"state"`
	Filters struct {
		ClamAV struct {
			Address string `yaml:"address"`
		} `yaml:"clamav"`
	} `yaml:"filters"`
	Metrics struct {
		Address string `yaml:"address"`
	} `yaml:"metrics"`
}

func readComposeYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func composePort(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return p
}

func TestComposeFilesAgree(t *testing.T) {
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	readComposeYAML(t, composeFile, &compose)
	var gc gatewayConfig
	readComposeYAML(t, composeConfig, &gc)
	df, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}

	gw, ok := compose.Services["gateway"]
	if !ok {
		t.Fatal("no gateway service")
	}
	for _, name := range []string{"clamav", "redis", "mailpit"} {
		if _, ok := compose.Services[name]; !ok {
			t.Errorf("no %s service", name)
		}
		if _, ok := gw.DependsOn[name]; !ok {
			t.Errorf("the gateway does not depend on %s", name)
		}
	}
	if gw.Build["context"] != "." {
		t.Errorf("gateway not built from the Dockerfile here: %v", gw.Build)
	}

	// The config is mounted read-only where the command reads it.
	mount := "./deploy/compose/mailgate.yaml:/etc/mailgate/gateway.yaml:ro"
	if !composeHas(gw.Volumes, mount) {
		t.Errorf("volumes %v lack %s", gw.Volumes, mount)
	}
	if strings.Join(gw.Command, " ") != "run --config /etc/mailgate/gateway.yaml" ||
		!strings.Contains(string(df), `CMD ["run", "--config", "/etc/mailgate/gateway.yaml"]`) {
		t.Errorf("command %v / Dockerfile CMD do not run the mounted config", gw.Command)
	}

	// Non-root inside: unprivileged ports, no "user" switch, no capability.
	if gc.User != "" {
		t.Errorf("user: %q in the container config: the image's user cannot switch users", gc.User)
	}
	if !regexp.MustCompile(`(?m)^USER 65532:65532$`).Match(df) {
		t.Error("the Dockerfile's final stage does not set a non-root USER")
	}
	if !composeHas(gw.CapDrop, "ALL") || !gw.ReadOnly {
		t.Errorf("gateway container: cap_drop %v read_only %v, want ALL and true", gw.CapDrop, gw.ReadOnly)
	}
	if !composeHas(gw.Tmpfs, "/tmp:size=256m,mode=1777") {
		t.Errorf("no writable /tmp for the spool in a read-only container: %v", gw.Tmpfs)
	}
	expose := regexp.MustCompile(`(?m)^EXPOSE (.*)$`).FindSubmatch(df)
	if expose == nil {
		t.Fatal("no EXPOSE in the Dockerfile")
	}
	for _, l := range gc.Listeners {
		p := composePort(t, l.Address)
		if n, _ := net.LookupPort("tcp", p); n < 1024 {
			t.Errorf("listener %s on a privileged port inside the container", l.Address)
		}
		if !strings.Contains(" "+string(expose[1])+" ", " "+p+" ") {
			t.Errorf("listener port %s not in the Dockerfile's EXPOSE %s", p, expose[1])
		}
		if !composeHas(gw.Ports, "25:"+p) && !composeHas(gw.Ports, "587:"+p) {
			t.Errorf("listener port %s not published as 25 or 587: %v", p, gw.Ports)
		}
	}
	if p := composePort(t, gc.Metrics.Address); !composeHas(gw.Ports, "127.0.0.1:"+p+":"+p) {
		t.Errorf("metrics port %s not published on the host's loopback only: %v", p, gw.Ports)
	}

	// What the config connects to are the compose services.
	if len(gc.Upstream.Servers) != 1 || gc.Upstream.Servers[0].Address != "mailpit:1025" {
		t.Errorf("upstream %v, want the mailpit service's SMTP port", gc.Upstream.Servers)
	}
	if gc.State.Store != "redis://redis:6379/0" {
		t.Errorf("state.store %q, want the redis service", gc.State.Store)
	}
	if gc.Filters.ClamAV.Address != "tcp:clamav:3310" {
		t.Errorf("filters.clamav.address %q, want the clamav service's clamd", gc.Filters.ClamAV.Address)
	}
}

// The compose file is valid for the compose tools themselves, when one is
// installed (`docker compose` plugin, or Debian's docker-compose); neither
// needs a running engine for `config`.
func TestComposeFileValid(t *testing.T) {
	var cmd *exec.Cmd
	if exec.Command("docker", "compose", "version").Run() == nil {
		cmd = exec.Command("docker", "compose", "-f", composeFile, "config", "-q")
	} else {
		// Debian's docker-compose (apt-get install docker-compose); CI
		// installs it, so there a missing tool fails the test.
		cmd = exec.Command(requireTool(t, "docker-compose"), "-f", composeFile, "config", "-q")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
}

func composeHas(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
