package deploy

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStaticBinary builds logship as deploy/docker/Dockerfile does
// (CGO_ENABLED=0, -trimpath, the version by -X) and checks that the result
// is static: no ELF interpreter (PT_INTERP) and no shared library, so that it
// runs on distroless/static or scratch, and that it reports the version.
func TestStaticBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "logship")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=v9.8.7-static",
		"-o", bin, "github.com/logship/logship/cmd/logship")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary has an ELF interpreter: it is not static")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a dynamic section")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("the binary needs shared libraries %v (%v)", libs, err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v9.8.7-static") {
		t.Errorf("logship version: %v: %q, want the -X version", err, out)
	}
}

// TestDockerBuild builds the image when a Docker engine answers (SKIP
// otherwise: a docker client alone cannot build), then runs `version` in it
// and checks its user.
func TestDockerBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: -short: the image build takes minutes")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("SKIP: no docker client")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("SKIP: no Docker engine answers (docker info: %s)", firstLine(out))
	}
	tag := fmt.Sprintf("logship-test:%d", time.Now().UnixNano())
	build := exec.Command("docker", "build", "-f", "deploy/docker/Dockerfile",
		"--build-arg", "VERSION=v0.0.0-imagetest", "-t", tag, ".")
	build.Dir = ".."
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "image", "rm", "-f", tag).Run() })

	out, err := exec.Command("docker", "run", "--rm", tag, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v0.0.0-imagetest") {
		t.Errorf("docker run %s version: %v: %q", tag, err, out)
	}
	out, err = exec.Command("docker", "image", "inspect", "--format", "{{.Config.User}}", tag).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "65532:65532" {
		t.Errorf("image user %q (%v), want 65532:65532", out, err)
	}
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(bytes.TrimSpace(b), []byte("\n"))
	return string(line)
}
