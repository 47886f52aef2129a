package service

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/all"
)

// config writes an agent config with a dummy input and one file output per
// path, and extra appended verbatim to the inputs.
func config(t *testing.T, dir, extraInputs string, outs ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "service:\n  data_dir: %s\n  http_listen: \"\"\n  shutdown_timeout: 5s\n", filepath.Join(dir, "data"))
	b.WriteString("inputs:\n  - type: dummy\n    name: gen\n    rate: 2000\n    chunk_events: 10\n" + extraInputs)
	b.WriteString("outputs:\n")
	for i, p := range outs {
		fmt.Fprintf(&b, "  - type: file\n    name: out%d\n    path: %s\n", i, p)
	}
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startService writes a config with one file output at out, runs an agent
// on it until the test ends, and returns it once ready with the config's
// path.
func startService(t *testing.T, dir, out string) (*Service, string) {
	t.Helper()
	path := config(t, dir, "", out)
	s, err := New(agent.Role, path, all.Registry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, func() error { return s.readiness() })
	return s, path
}

func waitFor(t *testing.T, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("after 10s: %v", err)
}

func lines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'})
}

func growing(t *testing.T, path string) {
	t.Helper()
	n := lines(path)
	waitFor(t, func() error {
		if m := lines(path); m < n+50 {
			return fmt.Errorf("%s: %d lines, was %d", path, m, n)
		}
		return nil
	})
}

func (s *Service) gauge() float64 {
	var m dto.Metric
	_ = s.reloadOK.Write(&m)
	return m.GetGauge().GetValue()
}

// TestReloadKeepsUnchangedComponents: a reload that adds an output keeps
// the input and the first output as they run (the same instances), starts
// the new one, and both receive events.
func TestReloadKeepsUnchangedComponents(t *testing.T) {
	dir := t.TempDir()
	one, two := filepath.Join(dir, "one.log"), filepath.Join(dir, "two.log")
	s, _ := startService(t, dir, one)
	growing(t, one)
	before := s.comps
	config(t, dir, "", one, two)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.gauge() != 1 {
		t.Fatal("config_last_reload_successful is not 1")
	}
	for _, k := range []string{"input/gen", "output/out0"} {
		if s.comps[k].comp.Instance != before[k].comp.Instance {
			t.Errorf("%s was created again although its block did not change", k)
		}
	}
	if _, ok := s.comps["output/out1"]; !ok {
		t.Fatal("the new output is not running")
	}
	growing(t, two)
	growing(t, one)
}

// TestReloadInvalidKeepsRunning: an invalid file changes nothing.
func TestReloadInvalidKeepsRunning(t *testing.T) {
	dir := t.TempDir()
	one := filepath.Join(dir, "one.log")
	s, path := startService(t, dir, one)
	before := s.comps
	if err := os.WriteFile(path, []byte("inputs: [{type: nope}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.gauge() != 0 {
		t.Fatal("config_last_reload_successful is not 0 after an invalid file")
	}
	if len(s.comps) != len(before) || s.comps["input/gen"].comp.Instance != before["input/gen"].comp.Instance {
		t.Fatal("an invalid config changed the running components")
	}
	growing(t, one)
}

// TestReloadFailedStartGoesBack: a new component that cannot start (a
// forward input on a port already taken) puts the old config back; the
// components both configs share keep running throughout.
func TestReloadFailedStartGoesBack(t *testing.T) {
	dir := t.TempDir()
	one, two := filepath.Join(dir, "one.log"), filepath.Join(dir, "two.log")
	s, _ := startService(t, dir, one)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	before := s.comps
	config(t, dir, fmt.Sprintf("  - type: forward\n    listen: %s\n", taken.Addr()), one, two)
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if s.gauge() != 0 {
		t.Fatal("config_last_reload_successful is not 0 after a failed start")
	}
	if fmt.Sprint(keys(s.comps)) != fmt.Sprint(keys(before)) {
		t.Fatalf("components %v after going back, want the old ones %v", keys(s.comps), keys(before))
	}
	if s.comps["input/gen"].comp.Instance != before["input/gen"].comp.Instance {
		t.Fatal("the input both configs share was restarted")
	}
	if err := s.readiness(); err != nil {
		t.Fatalf("not ready after going back: %v", err)
	}
	growing(t, one)
	if n := lines(two); n != 0 {
		// the new output may have delivered before going back; it must be
		// stopped now
		time.Sleep(200 * time.Millisecond)
		if m := lines(two); m != n {
			t.Fatalf("the new config's output still writes: %d then %d lines", n, m)
		}
	}
}

func keys(m map[string]built) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestReloadReopensRenamedFile: logrotate renames the file output's file
// and sends SIGHUP; the reload keeps the output running but it lets the
// renamed file go and writes the next batches to a new file at its path.
func TestReloadReopensRenamedFile(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.log")
	s, _ := startService(t, dir, out)
	growing(t, out)
	before := s.comps["output/out0"].comp.Instance
	rotated := out + ".1"
	if err := os.Rename(out, rotated); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.comps["output/out0"].comp.Instance != before {
		t.Fatal("the output was created again although its block did not change")
	}
	waitFor(t, func() error {
		_, err := os.Stat(out)
		return err
	})
	growing(t, out)
	n := lines(rotated)
	time.Sleep(200 * time.Millisecond)
	if m := lines(rotated); m != n {
		t.Fatalf("the renamed file still grows after the reload: %d lines, then %d", n, m)
	}
}

// TestReloadAckLevel: an input's ack option reaches the pipeline, and a
// reload that changes it starts the input again with the new level while
// events keep flowing.
func TestReloadAckLevel(t *testing.T) {
	dir := t.TempDir()
	one := filepath.Join(dir, "one.log")
	s, _ := startService(t, dir, one)
	growing(t, one)
	before := s.comps["input/gen"]
	if before.comp.Ack != pipeline.AckLocal {
		t.Fatalf("ack %q, want local by default", before.comp.Ack)
	}
	config(t, dir, "    ack: downstream\n", one)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	after := s.comps["input/gen"]
	if after.comp.Instance == before.comp.Instance || after.comp.Ack != pipeline.AckDownstream {
		t.Fatalf("input not restarted with ack: downstream (ack %q)", after.comp.Ack)
	}
	growing(t, one)
}

// TestMemoryLimit: service.memory_limit sets the Go runtime's soft memory
// limit at start and on reload (0: none), unless GOMEMLIMIT is set.
func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		limit conftypes.Size
		env   string
		want  int64
		ok    bool
	}{
		{0, "", math.MaxInt64, true},
		{48 << 20, "", 48 << 20, true},
		{48 << 20, "100MiB", 0, false},
		{0, "off", 0, false},
	} {
		if got, ok := memoryLimit(tc.limit, tc.env); got != tc.want || ok != tc.ok {
			t.Errorf("memoryLimit(%s, %q) = %d, %v; want %d, %v", tc.limit, tc.env, got, ok, tc.want, tc.ok)
		}
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("SKIP: GOMEMLIMIT is set in the environment")
	}
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })

	dir := t.TempDir()
	path := config(t, dir, "", filepath.Join(dir, "out.log"))
	write := func(limit string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if i := strings.Index(s, "  memory_limit:"); i >= 0 {
			s = s[:i] + s[i+strings.Index(s[i:], "\n")+1:]
		}
		s = strings.Replace(s, "service:\n", "service:\n  memory_limit: "+limit+"\n", 1)
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("40MiB")
	s, err := New(agent.Role, path, all.Registry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, func() error { return s.readiness() })
	if got := debug.SetMemoryLimit(-1); got != 40<<20 {
		t.Fatalf("memory limit %d after start, want %d", got, 40<<20)
	}
	write("0")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("memory limit %d after reloading with 0, want none (%d)", got, int64(math.MaxInt64))
	}
}
