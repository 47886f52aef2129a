package e2e

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// TestAgentToAggregatorWithKills: dummy -> agent buffer -> forward with
// acks -> aggregator buffer -> file. Both processes are killed with SIGKILL
// mid-stream and restarted; every event arrives. (The restarted agent's
// dummy counts from 0 again, so the aggregator sees its early events twice:
// those are new events, not delivery duplicates.)
func TestAgentToAggregatorWithKills(t *testing.T) {
	dir := t.TempDir()
	aggAddr := testutil.FreeAddr(t)
	out := filepath.Join(dir, "agg.log")
	aggCfg := filepath.Join(dir, "aggregator.yaml")
	writeFile(t, aggCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
buffer: {partitions: 2, sync: always}
inputs:
  - type: forward
    listen: %s
    shared_key: e2e-key
    self_hostname: aggregator
outputs:
  - {type: file, path: %s}
`, filepath.Join(dir, "agg-data"), aggAddr, out))
	agentCfg := filepath.Join(dir, "agent.yaml")
	const n = 30000
	writeFile(t, agentCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
buffer: {partitions: 2, sync: always}
inputs:
  - {type: dummy, tag: app.relay, rate: 15000, count: %d, chunk_events: 100}
outputs:
  - type: forward
    servers: [%s]
    shared_key: e2e-key
    self_hostname: agent
    retry_min: 50ms
    retry_max: 500ms
`, filepath.Join(dir, "agent-data"), n, aggAddr))

	agg := start(t, "aggregator", "-c", aggCfg)
	waitListening(t, aggAddr)
	agent := start(t, "agent", "-c", agentCfg)
	progress := func(min int) {
		t.Helper()
		testutil.CheckFor(t, 30*time.Second, func() error {
			if c := countLines(out); c < min {
				return fmt.Errorf("%d lines", c)
			}
			return nil
		})
	}
	progress(3000)
	agg.signal(syscall.SIGKILL)
	agg.wait(5 * time.Second)
	agg = start(t, "aggregator", "-c", aggCfg)
	waitListening(t, aggAddr)
	progress(10000)
	agent.signal(syscall.SIGKILL)
	agent.wait(5 * time.Second)
	agent = start(t, "agent", "-c", agentCfg) // the dummy starts over: its events are 0..n-1 again
	var lines []map[string]any
	testutil.CheckFor(t, 60*time.Second, func() error {
		lines = readJSONLines(t, out)
		seen := map[int]bool{}
		for _, l := range lines {
			seen[int(l["seq"].(float64))] = true
		}
		for i := range n {
			if !seen[i] {
				return fmt.Errorf("seq %d missing (%d lines)", i, len(lines))
			}
		}
		return nil
	})
	agent.signal(syscall.SIGTERM)
	if code := agent.wait(20 * time.Second); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
	agg.signal(syscall.SIGTERM)
	if code := agg.wait(20 * time.Second); code != 0 {
		t.Fatalf("aggregator exit %d", code)
	}
	t.Logf("%d events, %d lines at the aggregator after killing each role once", n, len(lines))
}
