package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

func agentConfig(dataDir, httpAddr, input, outPath string) string {
	return fmt.Sprintf(`
service:
  data_dir: %s
  http_listen: "%s"
  shutdown_timeout: 10s
buffer:
  partitions: 2
  segment_bytes: 1MiB
  max_bytes: 64MiB
  sync_interval: 20ms
inputs:
%s
outputs:
  - type: file
    name: out
    match: "**"
    path: %s
    tag_key: tag
    time_key: time
`, dataDir, httpAddr, input, outPath)
}

// seqs returns the seq fields of the lines, checking each appears once.
func seqs(t *testing.T, lines []map[string]any) map[int]bool {
	t.Helper()
	seen := map[int]bool{}
	for i, l := range lines {
		f, ok := l["seq"].(float64)
		if !ok {
			t.Fatalf("line %d has no seq: %v", i+1, l)
		}
		if seen[int(f)] {
			t.Fatalf("seq %d appears twice", int(f))
		}
		seen[int(f)] = true
	}
	return seen
}

// TestAgentDummyToFileSIGTERM: every generated event reaches the file, a
// SIGTERM exits 0, and the lines carry the record, tag and time.
func TestAgentDummyToFileSIGTERM(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out", "events.log")
	httpAddr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "agent.yaml")
	const n = 5000
	writeFile(t, cfg, agentConfig(filepath.Join(dir, "data"), httpAddr, `
  - type: dummy
    tag: app.gen
    rate: 0
    count: 5000
    chunk_events: 100
    record: {message: hello}
`, out))
	p := start(t, "agent", "-c", cfg)
	testutil.CheckFor(t, 10*time.Second, func() error {
		code, _, err := httpGet("http://" + httpAddr + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("readyz: %d %v", code, err)
		}
		return nil
	})
	testutil.CheckFor(t, 20*time.Second, func() error {
		if c := countLines(out); c < n {
			return fmt.Errorf("%d of %d lines", c, n)
		}
		return nil
	})
	code, metrics, err := httpGet("http://" + httpAddr + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("metrics: %d %v", code, err)
	}
	for _, want := range []string{
		`logship_records_in_total{component="dummy.0",kind="input",type="dummy"} 5000`,
		`logship_records_out_total{component="out",kind="output",type="file"} 5000`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	lines := readJSONLines(t, out)
	if len(lines) != n {
		t.Fatalf("%d lines, want %d", len(lines), n)
	}
	seen := seqs(t, lines)
	for i := range n {
		if !seen[i] {
			t.Fatalf("seq %d missing", i)
		}
	}
	l := lines[0]
	if l["message"] != "hello" || l["tag"] != "app.gen" {
		t.Fatalf("line %v", l)
	}
	if ts, _ := l["time"].(string); !strings.HasPrefix(ts, time.Now().UTC().Format("2006-01")) {
		t.Fatalf("time %q", l["time"])
	}
}

// TestAgentSIGTERMMidStreamThenRestart: a stop in the middle of a stream
// exits 0 and leaves no gap; the next start goes on where it stopped.
func TestAgentSIGTERMMidStreamThenRestart(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events.log")
	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, agentConfig(filepath.Join(dir, "data"), "", `
  - type: dummy
    tag: app.gen
    rate: 20000
`, out))
	p := start(t, "agent", "-c", cfg)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if c := countLines(out); c < 2000 {
			return fmt.Errorf("%d lines", c)
		}
		return nil
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	lines := readJSONLines(t, out)
	seen := seqs(t, lines)
	for i := range len(lines) {
		if !seen[i] {
			t.Fatalf("gap: seq %d missing of %d", i, len(lines))
		}
	}
	if !strings.Contains(p.Log(), "stopped cleanly") {
		t.Fatalf("no clean stop in the log")
	}
}

// TestSIGHUPBrokenConfigKeepsFlowing: a broken config on SIGHUP is logged
// and the old pipeline keeps delivering; a good one is applied.
func TestSIGHUPBrokenConfigKeepsFlowing(t *testing.T) {
	dir := t.TempDir()
	out1 := filepath.Join(dir, "one.log")
	out2 := filepath.Join(dir, "two.log")
	cfg := filepath.Join(dir, "agent.yaml")
	input := `
  - type: dummy
    tag: app.gen
    rate: 200
`
	writeFile(t, cfg, agentConfig(filepath.Join(dir, "data"), "", input, out1))
	p := start(t, "agent", "-c", cfg)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if c := countLines(out1); c < 20 {
			return fmt.Errorf("%d lines", c)
		}
		return nil
	})
	writeFile(t, cfg, agentConfig(filepath.Join(dir, "data"), "", input, out1)+"    bogus_key: 1\n")
	p.signal(syscall.SIGHUP)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if !strings.Contains(p.Log(), "bogus_key: unknown key") {
			return fmt.Errorf("no config error logged yet")
		}
		return nil
	})
	before := countLines(out1)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if c := countLines(out1); c < before+50 {
			return fmt.Errorf("events stopped flowing after a broken reload: %d -> %d", before, c)
		}
		return nil
	})
	// The new dummy counts from 1,000,000 so both runs can be told apart.
	writeFile(t, cfg, agentConfig(filepath.Join(dir, "data"), "", input+"    start_sequence: 1000000\n", out2))
	p.signal(syscall.SIGHUP)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if c := countLines(out2); c < 50 {
			return fmt.Errorf("%d lines in the new file", c)
		}
		return nil
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	// Across both files, each run's sequence has no gap and no duplicate:
	// what the old pipeline buffered but had not delivered went to the new
	// file.
	all := append(readJSONLines(t, out1), readJSONLines(t, out2)...)
	seen := seqs(t, all)
	maxOld, maxNew := -1, -1
	for s := range seen {
		if s >= 1000000 {
			maxNew = max(maxNew, s)
		} else {
			maxOld = max(maxOld, s)
		}
	}
	if maxNew < 1000000 {
		t.Fatal("no event of the reloaded pipeline")
	}
	for i := 0; i <= maxOld; i++ {
		if !seen[i] {
			t.Fatalf("seq %d of the first run missing across the reload", i)
		}
	}
	for i := 1000000; i <= maxNew; i++ {
		if !seen[i] {
			t.Fatalf("seq %d of the second run missing", i)
		}
	}
}

func TestValidateAndVersion(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, agentConfig(dir, "", "  - type: dummy\n", filepath.Join(dir, "x.log")))
	if code, out, errOut := run(t, "validate", "-c", good); code != 0 || !strings.Contains(out, "valid agent config") {
		t.Fatalf("validate good: %d %q %q", code, out, errOut)
	}
	if code, _, _ := run(t, "validate", "--config", good, "--role", "aggregator"); code != 0 {
		t.Fatalf("validate --role aggregator: %d", code)
	}
	if code, _, errOut := run(t, "validate", "-c", good, "--role", "bogus"); code != 2 || !strings.Contains(errOut, `unknown role "bogus"`) {
		t.Fatalf("validate --role bogus: exit %d, %q", code, errOut)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "inputs:\n  - type: dummy\n    rate: x\noutputs:\n  - type: file\n")
	code, _, errOut := run(t, "validate", "-c", bad)
	if code != 2 {
		t.Fatalf("validate bad: exit %d", code)
	}
	for _, want := range []string{bad + `:3: inputs[0].rate: want a number, got "x"`, bad + ":5: outputs[0].path: is required"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if code, _, _ := run(t, "agent", "-c", bad); code != 2 {
		t.Fatalf("agent with a bad config: exit %d, want 2", code)
	}
	if code, _, _ := run(t, "agent", "--no-such-flag"); code != 2 {
		t.Fatalf("bad flag: exit %d, want 2", code)
	}
	if code, _, _ := run(t, "validate", "-c", filepath.Join(dir, "missing.yaml")); code != 2 {
		t.Fatalf("missing file: exit %d, want 2", code)
	}
	if code, out, _ := run(t, "version"); code != 0 || !strings.HasPrefix(out, "logship ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

// TestAgentReusesSegments: with the default buffer.reuse_segments the
// agent writes new segments over consumed segment files (counted in
// logship_buffer_segments_reused_total) and every event still arrives
// once; with reuse_segments: false it never does and keeps no spare file.
func TestAgentReusesSegments(t *testing.T) {
	for _, reuse := range []bool{true, false} {
		t.Run(fmt.Sprint("reuse=", reuse), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out", "events.log")
			httpAddr := testutil.FreeAddr(t)
			cfg := filepath.Join(dir, "agent.yaml")
			const n = 20000
			writeFile(t, cfg, fmt.Sprintf(`
service:
  data_dir: %s
  http_listen: "%s"
buffer:
  partitions: 1
  segment_bytes: 64KiB
  reuse_segments: %v
inputs:
  - type: dummy
    tag: app.gen
    rate: 40000
    count: %d
    chunk_events: 50
    record: {message: "a line of about a hundred bytes, as applications write them, with some fields"}
outputs:
  - type: file
    name: out
    match: "**"
    path: %s
`, filepath.Join(dir, "data"), httpAddr, reuse, n, out))
			start(t, "agent", "-c", cfg)
			testutil.CheckFor(t, 30*time.Second, func() error {
				if c := countLines(out); c < n {
					return fmt.Errorf("%d of %d lines", c, n)
				}
				return nil
			})
			if c := countLines(out); c != n {
				t.Fatalf("%d lines, want %d", c, n)
			}
			reused := metricSum(scrape(t, httpAddr), "logship_buffer_segments_reused_total")
			spares, _ := filepath.Glob(filepath.Join(dir, "data", "buffer", "p0000", "*.spare"))
			switch {
			case reuse && reused == 0:
				t.Fatal("no segment reused")
			case !reuse && (reused != 0 || len(spares) != 0):
				t.Fatalf("reuse off: %v segments reused, %d spare files", reused, len(spares))
			}
			t.Logf("%v segments reused, %d spare files", reused, len(spares))
		})
	}
}
