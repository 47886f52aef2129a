package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// TestTailRotationWithSIGKILL: a writer appends numbered lines and rotates
// its file by rename+create and by copytruncate while the agent is killed
// with SIGKILL and restarted; at the end every line written is in the
// output exactly once: positions travel with the data into the buffer,
// and the file output cuts back what its state does not cover.
func TestTailRotationWithSIGKILL(t *testing.T) {
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.log")
	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, agentConfig(filepath.Join(dir, "data"), "", fmt.Sprintf(`
  - type: tail
    tag: app.*
    paths: [%s/app.log*]
    read_from_head: true
    refresh_interval: 100ms
`, logs), out))

	const total = 20000
	var written sync.WaitGroup
	written.Add(1)
	go func() {
		defer written.Done()
		path := filepath.Join(logs, "app.log")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		for i := range total {
			fmt.Fprintf(f, "line %d %s\n", i, strings.Repeat("x", 50))
			switch {
			case i%5000 == 4999 && (i/5000)%2 == 0:
				// rename + create
				f.Close()
				if err := os.Rename(path, filepath.Join(logs, fmt.Sprintf("app.log.%d", i))); err != nil {
					t.Error(err)
					return
				}
				f, _ = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			case i%5000 == 4999:
				// copytruncate: the copy matches the glob too; it is known
				// by its fingerprint, only its unread tail is read
				b, _ := os.ReadFile(path)
				_ = os.WriteFile(filepath.Join(logs, fmt.Sprintf("app.log.%d", i)), b, 0o644)
				_ = f.Truncate(0)
			}
			if i%200 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
		f.Close()
	}()

	for round := range 3 {
		p := start(t, "agent", "-c", cfg)
		time.Sleep(time.Duration(300+round*200) * time.Millisecond)
		p.signal(syscall.SIGKILL)
		p.wait(5 * time.Second)
	}
	written.Wait()
	p := start(t, "agent", "-c", cfg)
	var missing []int
	testutil.CheckFor(t, 30*time.Second, func() error {
		seen := make([]bool, total)
		for _, l := range readJSONLines(t, out) {
			f := strings.Fields(l["log"].(string))
			if len(f) < 2 {
				return fmt.Errorf("odd line %v", l)
			}
			n, err := strconv.Atoi(f[1])
			if err != nil || n >= total {
				return fmt.Errorf("odd line %v", l)
			}
			seen[n] = true
		}
		missing = missing[:0]
		for i, ok := range seen {
			if !ok {
				missing = append(missing, i)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d lines missing, first %d", len(missing), missing[0])
		}
		return nil
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	delivered := countLines(out)
	t.Logf("%d lines written, %d delivered across 3 SIGKILLs", total, delivered)
	if delivered != total {
		t.Fatalf("%d lines delivered for %d written: %d duplicates", delivered, total, delivered-total)
	}
}
