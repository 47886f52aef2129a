package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"

	"github.com/logship/logship/internal/testutil"
)

// TestOutageAggregatorDown: tail (with renames) and synchronous forward
// clients -> agent -> forward -> aggregator -> file. The aggregator is
// SIGKILLed and stays down for LOGSHIP_OUTAGE (20s by default; 3m for the
// figure: LOGSHIP_OUTAGE=3m go test -run Outage -v ./test/e2e/) while
// events keep flowing into the agent at the same rate. The agent buffers
// them on disk (its data_dir and its output's cursor lag grow), its RSS,
// sampled every 250 ms, stays bounded, and once the aggregator is back it catches up: every event in
// the file exactly once.
//
// The memory bound: the buffer is on disk and the forward output keeps at
// most max_in_flight chunks per partition in memory, so nothing the agent
// holds should grow with the outage's length. The test fails when the
// peak over the whole run (the catch-up included, when 4 partitions * 16
// chunks are in flight at once) exceeds 2x the steady value before the
// outage + 32 MiB: Go's heap may double before a GC (GOGC=100), and 64
// chunks of up to 256 KiB in flight plus their encoded copies are about
// 32 MiB. The medians of the outage's first and last thirds are printed
// beside it: their difference is the growth a longer outage would keep
// adding.
//
// The forward input's dedup_window is 20000 ids here (30 s of the
// clients' chunks): its ids take ~28 bytes each and grow with the number
// of client chunks up to the window (28 MB at the aggregator's 1000000),
// outage or not; a smaller window keeps that out of what is measured.
func TestOutageAggregatorDown(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: the outage e2e is not a -short test")
	}
	outage := envDuration(t, "LOGSHIP_OUTAGE", 20*time.Second)
	const (
		tailRate   = 5000 // lines/s, about 500 KB/s
		clients    = 2
		clientRate = 200 // events/s each
	)
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	aggAddr, fwdAddr, httpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	out := filepath.Join(dir, "agg.log")
	aggCfg := filepath.Join(dir, "aggregator.yaml")
	writeFile(t, aggCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
inputs:
  - {type: forward, listen: %s}
outputs:
  - {type: file, name: out, path: %s}
`, filepath.Join(dir, "agg-data"), aggAddr, out))
	agentData := filepath.Join(dir, "agent-data")
	agentCfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, agentCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: "%s"}
inputs:
  - {type: tail, name: files, tag: app.file, paths: [%s/app.log*], read_from_head: true, refresh_interval: 100ms}
  - {type: forward, name: clients, listen: %s, dedup_window: 20000, dedup_retention: 30s}
outputs:
  - {type: forward, servers: [%s], retry_min: 50ms, retry_max: 1s}
`, agentData, httpAddr, logs, fwdAddr, aggAddr))

	agg := start(t, "aggregator", "-c", aggCfg)
	waitListening(t, aggAddr)
	agent := start(t, "agent", "-c", agentCfg)
	waitListening(t, fwdAddr)
	rss := startRSSSampler(t, func() int { return agent.cmd.Process.Pid })

	tw := startLineWriter(t, logs, tailRate, 50000, 1<<40)
	fc := startFluentClients(t, fwdAddr, clients, clientRate, 1<<40, fluent.Config{
		Timeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		MaxRetry: 40, RetryWait: 50, MaxRetryWait: 500})

	// Steady state with the aggregator up: 6 s, the last 4 s measured.
	t0 := time.Now()
	time.Sleep(6 * time.Second)
	steady := median(rss.between(t0.Add(2*time.Second), time.Now()))
	if n := countLines(out); n == 0 {
		t.Fatal("nothing reached the aggregator before the outage")
	}

	agg.signal(syscall.SIGKILL)
	agg.wait(10 * time.Second)
	down := time.Now()
	buf0, lines0, acks0 := dirBytes(agentData), tw.written.Load(), fc.total()
	lag0 := metricSum(scrape(t, httpAddr), "logship_buffer_cursor_lag_records")
	for left := outage; left > 0; {
		step := min(left, 30*time.Second)
		time.Sleep(step)
		left -= step
		page := scrape(t, httpAddr)
		t.Logf("outage %s: agent RSS %s (Go heap in use %.1f MiB, from the OS %.1f MiB), data_dir %.1f MiB, %d tail lines and %d client events written",
			time.Since(down).Round(time.Second), mib(median(rss.between(time.Now().Add(-time.Second), time.Now()))),
			metricSum(page, "go_memstats_heap_inuse_bytes")/(1<<20), metricSum(page, "go_memstats_sys_bytes")/(1<<20),
			float64(dirBytes(agentData))/(1<<20), tw.written.Load(), fc.total())
	}
	up := time.Now()
	buf1, lines1, acks1 := dirBytes(agentData), tw.written.Load(), fc.total()
	lag1 := metricSum(scrape(t, httpAddr), "logship_buffer_cursor_lag_records")
	agg = start(t, "aggregator", "-c", aggCfg)
	waitListening(t, aggAddr)

	// Traffic goes on through the catch-up for a while, then stops.
	time.Sleep(3 * time.Second)
	nTail := tw.stop(t)
	perClient := fc.stop(t, 30*time.Second)
	var st flowCount
	testutil.CheckFor(t, 60*time.Second+outage/2, func() error {
		ta, err := tallyFile(out)
		if err != nil {
			return err
		}
		if st = ta.count(nTail, perClient, nil); st.lost > 0 {
			return fmt.Errorf("%d of %d events not in the file yet (first %s)", st.lost, st.total, st.firstLost)
		}
		return nil
	})
	caughtUp := time.Since(up)
	agent.signal(syscall.SIGTERM)
	agg.signal(syscall.SIGTERM)
	if code := agent.wait(30 * time.Second); code != 0 {
		t.Errorf("agent exit %d", code)
	}
	if code := agg.wait(30 * time.Second); code != 0 {
		t.Errorf("aggregator exit %d", code)
	}
	rss.stop()
	ta, err := tallyFile(out)
	if err != nil {
		t.Fatal(err)
	}
	st = ta.count(nTail, perClient, fc.reposted)

	var thirds [3][]int64
	for i := range thirds {
		thirds[i] = rss.between(down.Add(outage*time.Duration(i)/3), down.Add(outage*time.Duration(i+1)/3))
	}
	all := rss.between(t0, time.Now())
	first, last, top := median(thirds[0]), median(thirds[2]), peak(all)
	t.Logf("outage %s: %d tail lines and %d client events written during it, the agent's data_dir grew %.1f MiB (%.1f -> %.1f MiB); caught up %s after the aggregator came back; the forward output's cursor lag %.0f -> %.0f records",
		outage, lines1-lines0, acks1-acks0, float64(buf1-buf0)/(1<<20), float64(buf0)/(1<<20), float64(buf1)/(1<<20), caughtUp.Round(100*time.Millisecond), lag0, lag1)
	t.Logf("agent RSS: steady %s before the outage; outage median first third %s, last third %s; peak %s (whole run, %d samples)",
		mib(steady), mib(first), mib(last), mib(top), len(all))
	t.Logf("events: %d (%d tail lines, %d client events), lost %d, duplicates %d (%d reposted by the clients, %d client Post errors), unexpected %d",
		st.total, nTail, st.total-nTail, st.lost, st.dups(), st.dupReposted, fc.errs.Load(), st.unexpected)
	if st.lost > 0 {
		t.Errorf("%d events lost (first %s)", st.lost, st.firstLost)
	}
	if st.dups() > 0 || st.unexpected > 0 {
		t.Errorf("%d duplicates, %d unexpected events", st.dups(), st.unexpected)
	}
	if lines1-lines0 < int64(outage.Seconds()*tailRate/2) {
		t.Errorf("only %d tail lines written during the outage: the writer did not keep up", lines1-lines0)
	}
	// Buffered on disk: the data_dir grew by the outage's events (the
	// buffer deletes only whole acknowledged segments, so it also grows
	// without an outage; the cursor lag is what shows the backlog).
	if buf1-buf0 < (lines1-lines0)*50 {
		t.Errorf("the agent's data_dir grew by %d bytes during the outage for %d lines: not buffered on disk", buf1-buf0, lines1-lines0)
	}
	if lag1-lag0 < outage.Seconds()*float64(clients*clientRate)/2 {
		t.Errorf("the forward output's cursor lag went from %.0f to %.0f records during the outage", lag0, lag1)
	}
	if top > 2*steady+32<<10 {
		t.Errorf("agent RSS peak %s exceeds 2 x the steady %s + 32 MiB", mib(top), mib(steady))
	}
}
