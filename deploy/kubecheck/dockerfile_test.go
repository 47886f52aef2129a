package kubecheck

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

const dockerfile = "../docker/Dockerfile"

type instruction struct {
	cmd   string   // lower case: from, run, copy, ...
	args  []string // the words after it (a shell-form RUN is one word)
	flags []string // --from=build, --mount=...
	json  bool     // exec form (["a", "b"])
	line  int
}

type stage struct {
	image, name string
	body        []instruction
}

// parseDockerfile parses with BuildKit's own parser and splits the stages,
// expanding the ARGs declared before the first FROM in FROM lines.
func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", dockerfile, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("%s: parser warning: %s", dockerfile, w.Short)
	}
	meta := map[string]string{}
	var stages []stage
	for _, n := range res.AST.Children {
		in := instruction{cmd: strings.ToLower(n.Value), flags: n.Flags, json: n.Attributes["json"], line: n.StartLine}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		switch {
		case in.cmd == "arg" && len(stages) == 0:
			for _, a := range in.args {
				k, v, _ := strings.Cut(a, "=")
				meta[k] = v
			}
		case in.cmd == "from":
			s := stage{image: os.Expand(in.args[0], func(k string) string { return meta[k] })}
			if len(in.args) == 3 && strings.EqualFold(in.args[1], "as") {
				s.name = in.args[2]
			}
			stages = append(stages, s)
		case len(stages) == 0:
			t.Fatalf("%s:%d: %s before the first FROM", dockerfile, in.line, in.cmd)
		default:
			stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
		}
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.body {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// makeLDFlags returns the Makefile's LDFLAGS with $(VERSION) as ${VERSION}.
func makeLDFlags(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LDFLAGS\s*:?=\s*(.+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Makefile has no LDFLAGS")
	}
	return strings.ReplaceAll(strings.TrimSpace(string(m[1])), "$(VERSION)", "${VERSION}")
}

// TestDockerfile: multi-stage, a static binary built as `make build` builds
// it, a small non-root final stage, nothing fetched by URL.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a builder and a final stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if build.image != "golang:1.26-bookworm" || build.name != "build" {
		t.Errorf("builder stage FROM %s AS %s, want golang:1.26-bookworm AS build", build.image, build.name)
	}
	if final.image != "gcr.io/distroless/static-debian12:nonroot" && final.image != "scratch" {
		t.Errorf("final stage FROM %s, want distroless/static or scratch", final.image)
	}

	// The build: static, trimmed, versioned as the Makefile does.
	ld := makeLDFlags(t)
	built := false
	for _, r := range build.all("run") {
		cmd := strings.Join(r.args, " ")
		if strings.Contains(cmd, "go build") {
			built = true
			for _, want := range []string{"CGO_ENABLED=0 ", "-trimpath", `-ldflags "` + ld + `"`, "./cmd/logship"} {
				if !strings.Contains(cmd, want) {
					t.Errorf("%s:%d: go build lacks %q", dockerfile, r.line, want)
				}
			}
		}
	}
	if !built {
		t.Error("no RUN go build in the builder stage")
	}

	// The final stage: only what the builder made, as a non-root user.
	for _, c := range final.all("copy") {
		if !slices.ContainsFunc(c.flags, func(f string) bool { return f == "--from=build" }) {
			t.Errorf("%s:%d: the final stage copies from the context, not the builder: %v", dockerfile, c.line, c.args)
		}
	}
	if n := len(final.body) - len(final.all("copy")) - len(final.all("user")) - len(final.all("expose")) -
		len(final.all("entrypoint")) - len(final.all("cmd")) - len(final.all("label")); n != 0 {
		t.Errorf("the final stage has %d instructions besides COPY, USER, EXPOSE, ENTRYPOINT, CMD, LABEL (a RUN needs a shell distroless lacks)", n)
	}
	users := final.all("user")
	if len(users) == 0 {
		t.Fatal("no USER in the final stage: it would run as root")
	}
	if u, _, _ := strings.Cut(users[len(users)-1].args[0], ":"); u == "0" || u == "root" || u == "" {
		t.Errorf("final USER %q is root", users[len(users)-1].args[0])
	} else if u != "65532" && u != "nonroot" {
		t.Errorf("final USER %q, want 65532 (the chart's aggregator runAsUser)", u)
	}
	var exposed []string
	for _, e := range final.all("expose") {
		exposed = append(exposed, e.args...)
	}
	for _, p := range []string{"24224", "2020"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}
	if ep := final.all("entrypoint"); len(ep) != 1 || !ep[0].json || !slices.Equal(ep[0].args, []string{"/usr/bin/logship"}) {
		t.Errorf("ENTRYPOINT %v, want [\"/usr/bin/logship\"] in exec form", ep)
	}

	// Nothing fetched by URL: no ADD of one, no curl or wget.
	url := regexp.MustCompile(`^(https?|ftp)://|^git@|\.git(#.*)?$`)
	for _, s := range stages {
		for _, a := range s.all("add") {
			for _, src := range a.args[:len(a.args)-1] {
				if url.MatchString(src) {
					t.Errorf("%s:%d: ADD of a URL %s", dockerfile, a.line, src)
				}
			}
		}
		for _, r := range s.all("run") {
			if cmd := strings.Join(r.args, " "); regexp.MustCompile(`\b(curl|wget)\b`).MatchString(cmd) {
				t.Errorf("%s:%d: RUN downloads: %s", dockerfile, r.line, cmd)
			}
		}
	}
}

// TestDockerignore: the context leaves out what is large or local, and keeps
// what the build copies.
func TestDockerignore(t *testing.T) {
	f, err := os.Open(dockerfile + ".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pats []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			pats = append(pats, l)
		}
	}
	for _, p := range []string{".git", "bin", "data", "**/node_modules"} {
		if !slices.Contains(pats, p) {
			t.Errorf("Dockerfile.dockerignore does not leave out %s", p)
		}
	}
	for _, p := range pats {
		for _, needed := range []string{"go.mod", "go.sum", "cmd", "conf", "conf/examples", "plugins", "pipeline", "broker", "*.go"} {
			if p == needed || p == needed+"/" || p == "*" {
				t.Errorf("Dockerfile.dockerignore leaves out %s, which the build needs", p)
			}
		}
	}
	for _, p := range []string{"../../go.mod", "../../go.sum", "../../cmd/logship", "../../conf/examples/agent.yaml", "../../conf/examples/aggregator.yaml"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the build copies %s: %v", p, err)
		}
	}
}
