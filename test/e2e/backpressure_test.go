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

// TestBackpressureBufferFullBlock: an agent with a 4 MiB buffer and
// when_full: block, whose forward output points at an aggregator that is
// not running, takes a tail writer and synchronous forward clients
// (fluent-logger-golang with RequestAck) until the buffer is full. Then
// the clients feel it: their Posts block (the library waits for the ack,
// times out, resends the same chunk) and the count of acknowledged events
// stops growing; the tail input stops reading, so the lines written and
// not read grow, and nothing is skipped; the agent's RSS stays bounded.
// Then the aggregator starts on that address: everything flows again,
// and every event is in its file exactly once.
func TestBackpressureBufferFullBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: the backpressure e2e is not a -short test")
	}
	const (
		tailRate = 5000 // lines/s
		clients  = 4
		maxBytes = 4 << 20
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
buffer: {partitions: 2, segment_bytes: 1MiB, max_bytes: %d, when_full: block}
inputs:
  - {type: tail, name: files, tag: app.file, paths: [%s/app.log], read_from_head: true, refresh_interval: 100ms}
  - {type: forward, name: clients, listen: %s}
outputs:
  - {type: forward, servers: [%s], retry_min: 50ms, retry_max: 500ms}
`, agentData, httpAddr, maxBytes, logs, fwdAddr, aggAddr))

	agent := start(t, "agent", "-c", agentCfg)
	waitListening(t, fwdAddr)
	rss := startRSSSampler(t, func() int { return agent.cmd.Process.Pid })
	t0 := time.Now()
	tw := startLineWriter(t, logs, tailRate, 0, 1<<40)
	// The library resends a chunk whose ack did not come within
	// ReadTimeout (with the same chunk id), up to MaxRetry times: a Post
	// blocks for as long as the buffer is full.
	fc := startFluentClients(t, fwdAddr, clients, 0, 1<<40, fluent.Config{
		Timeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second,
		MaxRetry: 1000, RetryWait: 50, MaxRetryWait: 500})

	tailPath := fmt.Sprintf(`path=%q`, filepath.Join(logs, "app.log"))
	read := func(page string) int64 { return int64(metricSum(page, "logship_tail_file_records_total", tailPath)) }
	testutil.CheckFor(t, 30*time.Second, func() error {
		if n := metricSum(scrape(t, httpAddr), "logship_buffer_full_waits_total"); n == 0 {
			return fmt.Errorf("buffer not full yet: %.1f MiB on disk, %d lines written, %d client events acknowledged",
				float64(dirBytes(filepath.Join(agentData, "buffer")))/(1<<20), tw.written.Load(), fc.total())
		}
		return nil
	})
	full := time.Now()
	// Acknowledgements stop: wait until none came for 2 s.
	var acks int64
	stall := time.Now()
	testutil.CheckFor(t, 20*time.Second, func() error {
		if n := fc.total(); n != acks {
			acks, stall = n, time.Now()
		}
		if time.Since(stall) < 2*time.Second {
			return fmt.Errorf("client events still acknowledged (%d)", acks)
		}
		return nil
	})
	// The window: 4 s of a full buffer.
	page := scrape(t, httpAddr)
	w0, r0, a0 := tw.written.Load(), read(page), fc.total()
	time.Sleep(4 * time.Second)
	page = scrape(t, httpAddr)
	w1, r1, a1 := tw.written.Load(), read(page), fc.total()
	bufBytes := dirBytes(filepath.Join(agentData, "buffer"))
	waits := metricSum(page, "logship_buffer_full_waits_total")
	t.Logf("buffer full %s after the start (%.1f MiB on disk, max_bytes %d MiB, %.0f appends waited); over 4 s of it: %d client events acknowledged (%d before), tail lines read %d -> %d while %d -> %d were written (lag %d -> %d lines); the clients waited for an ack in vain and resent %d times so far",
		full.Sub(t0).Round(100*time.Millisecond), float64(bufBytes)/(1<<20), maxBytes>>20, waits, a1-a0, a0, r0, r1, w0, w1, w0-r0, w1-r1, fc.ackTimeouts.Load())
	if a1 != a0 {
		t.Errorf("%d client events acknowledged while the buffer was full", a1-a0)
	}
	if r1-r0 > 2000 || w1-r1 <= w0-r0 {
		t.Errorf("the tail input did not pause: read %d -> %d, lag %d -> %d lines", r0, r1, w0-r0, w1-r1)
	}
	if bufBytes > maxBytes+1<<20 {
		t.Errorf("buffer holds %d bytes on disk, max_bytes is %d", bufBytes, maxBytes)
	}

	// The aggregator comes up: the flow resumes.
	up := time.Now()
	agg := start(t, "aggregator", "-c", aggCfg)
	waitListening(t, aggAddr)
	testutil.CheckFor(t, 30*time.Second, func() error {
		if n := fc.total(); n <= a1 {
			return fmt.Errorf("no client event acknowledged since the aggregator came up")
		}
		return nil
	})
	resumed := time.Since(up)
	time.Sleep(2 * time.Second)
	nTail := tw.stop(t)
	perClient := fc.stop(t, 60*time.Second)
	var st flowCount
	testutil.CheckFor(t, 60*time.Second, func() error {
		ta, err := tallyFile(out)
		if err != nil {
			return err
		}
		if st = ta.count(nTail, perClient, nil); st.lost > 0 {
			return fmt.Errorf("%d of %d events not in the file yet (first %s)", st.lost, st.total, st.firstLost)
		}
		return nil
	})
	page = scrape(t, httpAddr)
	lostBytes := metricSum(page, "logship_tail_lost_bytes_total")
	dropped := metricSum(page, "logship_buffer_dropped_events_total") + metricSum(page, "logship_dropped_records_total")
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
	before, during, top := median(rss.between(t0, full)), rss.between(full, up), peak(rss.between(t0, time.Now()))
	t.Logf("agent RSS: median %s filling, %s while full (peak %s), %s over the whole run",
		mib(before), mib(median(during)), mib(peak(during)), mib(top))
	t.Logf("events: %d (%d tail lines, %d client events), lost %d, duplicates %d (%d of events reposted by the clients after %d failed Posts; %d resends of a chunk after an ack timeout), unexpected %d; first client ack %s after the aggregator came up; tail lost bytes %.0f, dropped %.0f",
		st.total, nTail, st.total-nTail, st.lost, st.dups(), st.dupReposted, fc.errs.Load(), fc.ackTimeouts.Load(), st.unexpected, resumed.Round(10*time.Millisecond), lostBytes, dropped)
	if st.lost > 0 {
		t.Errorf("%d events lost (first %s)", st.lost, st.firstLost)
	}
	if st.dups() > 0 || st.unexpected > 0 {
		t.Errorf("%d duplicates, %d unexpected events", st.dups(), st.unexpected)
	}
	if lostBytes != 0 || dropped != 0 {
		t.Errorf("tail lost %.0f bytes, %.0f events dropped", lostBytes, dropped)
	}
	// The goal of issue 18: at most 64 MiB under backpressure.
	if top > 64<<10 {
		t.Errorf("agent RSS peak %s, more than 64 MiB", mib(top))
	}
}
