package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3": "1.2.3", "1.2.3-4-gabc": "1.2.3+4+gabc", "abc1234-dirty": "0.0~gitabc1234+dirty", "": "0.0~git",
	} {
		if got := debVersion(in); got != want {
			t.Errorf("debVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDeb builds the package, checks it with dpkg-deb, and, as root with
// dpkg, installs it, runs /usr/bin/logship version, checks the files and the
// user, and purges it.
func TestDeb(t *testing.T) {
	out := t.TempDir()
	path, err := run("v0.0.1-test", out, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "logship_0.0.1+test_"+debArch(t)+".deb" {
		t.Fatalf("package name %s", path)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("SKIP: dpkg-deb not found: the package is built but not checked")
	}
	info := cmd(t, "dpkg-deb", "--info", path)
	contents := cmd(t, "dpkg-deb", "--contents", path)
	for _, w := range []string{"Package: logship", "Version: 0.0.1+test", "postinst", "conffiles"} {
		if !strings.Contains(info, w) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", w, info)
		}
	}
	for _, w := range []string{"./usr/bin/logship", "./usr/lib/systemd/system/logship-agent.service",
		"./usr/lib/systemd/system/logship-aggregator.service", "./etc/logship/agent.yaml", "./etc/logship/aggregator.yaml"} {
		if !strings.Contains(contents, w) {
			t.Errorf("dpkg-deb --contents lacks %q:\n%s", w, contents)
		}
	}
	if t.Failed() {
		return
	}

	if os.Geteuid() != 0 {
		t.Skip("SKIP: not root: the package is built and checked but not installed")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("SKIP: dpkg not found: the package is built and checked but not installed")
	}
	if exec.Command("dpkg", "-s", "logship").Run() == nil {
		t.Skip("SKIP: a logship package is already installed on this host; not touching it")
	}
	if _, err := os.Stat("/usr/bin/logship"); err == nil {
		t.Skip("SKIP: /usr/bin/logship exists and is not from a package; not touching it")
	}
	userExisted := exec.Command("getent", "passwd", "logship").Run() == nil
	t.Cleanup(func() {
		if out, err := exec.Command("dpkg", "-P", "logship").CombinedOutput(); err != nil {
			t.Errorf("dpkg -P logship: %v\n%s", err, out)
		}
		if !userExisted {
			_ = exec.Command("deluser", "--quiet", "logship").Run()
			_ = exec.Command("delgroup", "--quiet", "logship").Run()
		}
	})
	cmd(t, "dpkg", "-i", path)
	if v := cmd(t, "/usr/bin/logship", "version"); !strings.Contains(v, "0.0.1-test") {
		t.Errorf("logship version = %q, want the package's version", v)
	}
	for _, f := range []string{"/usr/lib/systemd/system/logship-agent.service",
		"/usr/lib/systemd/system/logship-aggregator.service", "/etc/logship/agent.yaml", "/etc/logship/aggregator.yaml"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	if conf := cmd(t, "dpkg-query", "-W", "-f", "${Conffiles}", "logship"); !strings.Contains(conf, "/etc/logship/agent.yaml") {
		t.Errorf("conffiles: %q", conf)
	}
	if id := cmd(t, "id", "logship"); !strings.Contains(id, "(adm)") {
		t.Errorf("id logship = %q, want group adm", id)
	}
	if out, err := exec.Command("/usr/bin/logship", "validate", "-c", "/etc/logship/aggregator.yaml", "--role", "aggregator").CombinedOutput(); err != nil {
		t.Errorf("the packaged aggregator config does not validate: %v\n%s", err, out)
	}
}

func debArch(t *testing.T) string {
	t.Helper()
	if a := os.Getenv("GOARCH"); a != "" {
		return a
	}
	return strings.TrimSpace(cmd(t, "go", "env", "GOARCH"))
}

func cmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
