package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// TestBufferCheckAndInspect: the offline tools see what a stopped agent
// left, refuse to run beside a live one, find a flipped byte and repair it.
func TestBufferCheckAndInspect(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "agent.yaml")
	// An output whose match takes nothing: every chunk stays unconsumed by
	// it, so its cursor lags.
	writeFile(t, cfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
buffer: {partitions: 1, sync_interval: 10ms}
inputs:
  - {type: dummy, tag: app.x, rate: 0, count: 3000, chunk_events: 100}
outputs:
  - {type: file, name: archive, path: %s}
  - {type: file, name: idle, match: "nothing.*", path: %s}
`, data, filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")))
	p := start(t, "agent", "-c", cfg)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if n := countLines(filepath.Join(dir, "a.log")); n < 3000 {
			return fmt.Errorf("%d lines", n)
		}
		return nil
	})
	if code, _, errOut := run(t, "buffer", "check", "-d", data); code != 1 || !strings.Contains(errOut, "in use by another process") {
		t.Fatalf("check beside a running agent: exit %d, %q", code, errOut)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	code, out, errOut := run(t, "buffer", "inspect", "-d", data)
	if code != 0 {
		t.Fatalf("inspect: exit %d %s", code, errOut)
	}
	for _, want := range []string{"archive", "idle", "30"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := run(t, "buffer", "check", "-d", data); code != 0 || !strings.Contains(out, "OK: every record verified") || !strings.Contains(out, "30 records, 3000 events") {
		t.Fatalf("check of a clean buffer: exit %d\n%s", code, out)
	}
	// Flip a byte in the middle of the segment.
	segs, _ := filepath.Glob(filepath.Join(data, "buffer", "p0000", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(segs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, "buffer", "check", "-d", data)
	if code != 1 || !strings.Contains(out, "corrupt") || !strings.Contains(out, "NOT OK") {
		t.Fatalf("check of a corrupted buffer: exit %d\n%s", code, out)
	}
	if code, out, _ := run(t, "buffer", "check", "-d", data, "--repair"); code != 0 || !strings.Contains(out, "repaired") {
		t.Fatalf("repair: exit %d\n%s", code, out)
	}
	if code, out, _ := run(t, "buffer", "check", "-d", data); code != 0 {
		t.Fatalf("check after repair: exit %d\n%s", code, out)
	}
	if code, _, _ := run(t, "buffer", "inspect"); code != 2 {
		t.Fatalf("inspect without -d: exit %d, want 2", code)
	}
}
