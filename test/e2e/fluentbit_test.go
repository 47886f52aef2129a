package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// TestAgentToFluentBitSharedKey (issue 14): an agent's forward output with
// a shared key and no user delivers to a real Fluent Bit in_forward with
// that shared key, which sends an auth salt in its HELO although it has no
// users. Every event arrives.
func TestAgentToFluentBitSharedKey(t *testing.T) {
	dir := t.TempDir()
	fbAddr := testutil.FreeAddr(t)
	host, port, _ := net.SplitHostPort(fbAddr)
	fbOut := filepath.Join(dir, "fb-out")
	if err := os.MkdirAll(fbOut, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.StartFluentBit(t, fmt.Sprintf(`service:
  flush: 0.2
  log_level: info
pipeline:
  inputs:
    - name: forward
      listen: %s
      port: %s
      shared_key: e2e-fb-key
      self_hostname: fluent-bit
  outputs:
    - name: file
      match: "*"
      path: %s
      file: out.log
      format: plain
`, host, port, fbOut))
	waitListening(t, fbAddr)

	const n = 3000
	agentCfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, agentCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
buffer: {partitions: 2}
inputs:
  - {type: dummy, tag: app.fb, rate: 0, count: %d, chunk_events: 100}
outputs:
  - type: forward
    servers: [%s]
    shared_key: e2e-fb-key
    self_hostname: logship-agent
    retry_min: 50ms
    retry_max: 500ms
`, filepath.Join(dir, "agent-data"), n, fbAddr))
	agent := start(t, "agent", "-c", agentCfg)
	out := filepath.Join(fbOut, "out.log")
	var lines []map[string]any
	testutil.CheckFor(t, 30*time.Second, func() error {
		lines = readJSONLines(t, out)
		if len(lines) < n {
			return fmt.Errorf("fluent-bit wrote %d of %d events", len(lines), n)
		}
		return nil
	})
	seen := map[int]bool{}
	for _, l := range lines {
		seen[int(l["seq"].(float64))] = true
	}
	if len(seen) != n || len(lines) != n {
		t.Fatalf("%d lines, %d distinct events, want %d", len(lines), len(seen), n)
	}
	agent.signal(syscall.SIGTERM)
	if code := agent.wait(20 * time.Second); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
}
