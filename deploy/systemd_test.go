package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var units = []string{"logship-agent.service", "logship-aggregator.service"}

// TestUnitsVerify runs `systemd-analyze verify` on both units, with the
// binary path rewritten to a freshly built logship so that ExecStart is
// checked against a real executable.
func TestUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIP: systemd-analyze not found")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "logship")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/logship/logship/cmd/logship").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/bin/logship", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, paths...)...).CombinedOutput()
	// verify warns on stderr without failing for some problems (an unknown
	// key, a value it ignores): any output about our units is a failure.
	if err != nil || strings.Contains(string(out), dir) || strings.Contains(string(out), "logship-") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitsContent checks the settings docs/install.md promises, so that an
// edit cannot drop one silently (systemd-analyze accepts a unit without them).
func TestUnitsContent(t *testing.T) {
	want := []string{
		"User=logship", "SupplementaryGroups=adm systemd-journal",
		"ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=logship",
		"ProtectSystem=strict", "ReadWritePaths=/var/lib/logship", "ProtectHome=yes",
		"PrivateTmp=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
		"ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
		"ProtectControlGroups=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"RestrictNamespaces=yes", "LockPersonality=yes", "MemoryDenyWriteExecute=yes",
		"SystemCallArchitectures=native", "ExecStart=/usr/bin/logship ",
	}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s: missing %q", u, w)
			}
		}
	}
}
