package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logship/logship/internal/testutil"
)

// chaosKafkaCluster starts an in-process kfake cluster of three brokers
// with the topics (three partitions each) on 127.0.0.1 ports the kernel
// picks, and returns its bootstrap list (as kafka_test.go's kafkaCluster).
func chaosKafkaCluster(t *testing.T, topics ...string) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return strings.Join(c.ListenAddrs(), ",")
}

// topicReader reads a topic from its start with read_committed (franz-go,
// no group) until the test ends, tallying the markers of the values.
type topicReader struct {
	ta    tally
	n     atomic.Int64
	errMu sync.Mutex
	err   error
}

func readTopic(t *testing.T, brokers, topic string) *topicReader {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &topicReader{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachError(func(_ string, _ int32, err error) {
				if !errors.Is(err, context.Canceled) {
					r.errMu.Lock()
					r.err = err
					r.errMu.Unlock()
				}
			})
			fs.EachRecord(func(rec *kgo.Record) {
				r.n.Add(1)
				if err := r.ta.add(rec.Value); err != nil {
					r.errMu.Lock()
					r.err = err
					r.errMu.Unlock()
				}
			})
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return r
}

func (r *topicReader) error() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

// TestChaosKafka: tail (with renames) and synchronous forward clients ->
// agent -> forward -> aggregator -> a file and two kafka outputs to an
// in-process kfake cluster: topic chaos.eo with exactly_once: true and
// topic chaos.alo without. Agent and aggregator are SIGKILLed in turn at
// random moments (every 0.8-1.6 s) while LOGSHIP_CHAOS_KAFKA_EVENTS tail
// lines flow (100000 by default; 1000000 for the figure). Both topics are
// read back with franz-go, read_committed. Every event is in the file and
// in both topics (0 lost); chaos.eo holds every event exactly as often as
// the aggregator's buffer (the file output's exactly-once copy of it)
// does: the exactly_once output adds no duplicate, and with an upstream
// without duplicates that is 0; chaos.alo's duplicates are counted and
// printed only.
func TestChaosKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: chaos e2e is not a -short test")
	}
	nTail := envCount(t, "LOGSHIP_CHAOS_KAFKA_EVENTS", 100000, 1000)
	const (
		tailRate  = 10000
		clients   = 2
		perClient = 2000
	)
	brokers := chaosKafkaCluster(t, "chaos.eo", "chaos.alo")
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	aggAddr, fwdAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	out := filepath.Join(dir, "agg.log")
	aggCfg := filepath.Join(dir, "aggregator.yaml")
	writeFile(t, aggCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
buffer: {partitions: 2}
inputs:
  - {type: forward, listen: %s}
outputs:
  - {type: file, name: out, path: %s}
  - {type: kafka, name: eo, brokers: [%s], topic: chaos.eo, exactly_once: true, compression: none, retry_min: 50ms, retry_max: 500ms}
  - {type: kafka, name: alo, brokers: [%[4]s], topic: chaos.alo, compression: none, retry_min: 50ms, retry_max: 500ms}
`, filepath.Join(dir, "agg-data"), aggAddr, out, brokers))
	agentCfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, agentCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
inputs:
  - {type: tail, name: files, tag: app.file, paths: [%s/app.log*], read_from_head: true, refresh_interval: 100ms}
  - {type: forward, name: clients, listen: %s}
outputs:
  - {type: forward, servers: [%s], retry_min: 50ms, retry_max: 500ms}
`, filepath.Join(dir, "agent-data"), logs, fwdAddr, aggAddr))

	eo, alo := readTopic(t, brokers, "chaos.eo"), readTopic(t, brokers, "chaos.alo")
	agg := start(t, "aggregator", "-c", aggCfg)
	waitListening(t, aggAddr)
	agent := start(t, "agent", "-c", agentCfg)
	waitListening(t, fwdAddr)
	var aggPID, agentPID atomic.Int64
	aggPID.Store(int64(agg.cmd.Process.Pid))
	agentPID.Store(int64(agent.cmd.Process.Pid))
	aggRSS := startRSSSampler(t, func() int { return int(aggPID.Load()) })
	agentRSS := startRSSSampler(t, func() int { return int(agentPID.Load()) })

	tw := startLineWriter(t, logs, tailRate, 50000, nTail)
	fc := startFluentClients(t, fwdAddr, clients, 0, perClient, fluent.Config{
		Timeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second,
		MaxRetry: 40, RetryWait: 50, MaxRetryWait: 500})

	kills := map[string]int{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 18))
	for tw.written.Load() < int64(nTail) || fc.total() < clients*perClient {
		time.Sleep(time.Duration(800+rng.IntN(800)) * time.Millisecond)
		if kills["agent"] <= kills["aggregator"] {
			agent.signal(syscall.SIGKILL)
			agent.wait(10 * time.Second)
			agent = start(t, "agent", "-c", agentCfg)
			agentPID.Store(int64(agent.cmd.Process.Pid))
			kills["agent"]++
		} else {
			agg.signal(syscall.SIGKILL)
			agg.wait(10 * time.Second)
			agg = start(t, "aggregator", "-c", aggCfg)
			aggPID.Store(int64(agg.cmd.Process.Pid))
			kills["aggregator"]++
		}
	}
	t.Logf("writers done: %d tail lines, %d client events; killed agent %d, aggregator %d times", tw.written.Load(), fc.total(), kills["agent"], kills["aggregator"])
	nTail = tw.wait(t)
	perC := fc.stop(t, 60*time.Second)

	// Wait for every event in the file and in both topics.
	caught := time.Now()
	var fileSt, eoSt, aloSt flowCount
	testutil.CheckFor(t, time.Duration(60+nTail/10000)*time.Second, func() error {
		ta, err := tallyFile(out)
		if err != nil {
			return err
		}
		for _, r := range []*topicReader{eo, alo} {
			if err := r.error(); err != nil {
				return err
			}
		}
		fileSt, eoSt, aloSt = ta.count(nTail, perC, nil), eo.ta.count(nTail, perC, nil), alo.ta.count(nTail, perC, nil)
		for name, st := range map[string]flowCount{"file": fileSt, "chaos.eo": eoSt, "chaos.alo": aloSt} {
			if st.lost > 0 {
				return fmt.Errorf("%s: %d of %d events missing (first %s)", name, st.lost, st.total, st.firstLost)
			}
		}
		return nil
	})
	t.Logf("caught up %s after the writers ended", time.Since(caught).Round(100*time.Millisecond))
	agent.signal(syscall.SIGTERM)
	agg.signal(syscall.SIGTERM)
	if code := agent.wait(30 * time.Second); code != 0 {
		t.Errorf("agent exit %d", code)
	}
	if code := agg.wait(30 * time.Second); code != 0 {
		t.Errorf("aggregator exit %d", code)
	}
	aggRSS.stop()
	agentRSS.stop()
	// Anything a stop still delivered (a duplicate after the last kill)
	// reaches the readers within a second.
	time.Sleep(time.Second)
	for _, r := range []*topicReader{eo, alo} {
		if err := r.error(); err != nil {
			t.Fatal(err)
		}
	}
	fileTa, err := tallyFile(out)
	if err != nil {
		t.Fatal(err)
	}
	fileSt = fileTa.count(nTail, perC, fc.reposted)
	eoSt, aloSt = eo.ta.count(nTail, perC, fc.reposted), alo.ta.count(nTail, perC, fc.reposted)
	t.Logf("chaos with kafka: %d events (%d tail lines, %d client events), %d agent and %d aggregator SIGKILLs; agent RSS peak %s, aggregator RSS peak %s",
		fileSt.total, nTail, fileSt.total-nTail, kills["agent"], kills["aggregator"],
		mib(peak(agentRSS.between(time.Time{}, time.Now()))), mib(peak(aggRSS.between(time.Time{}, time.Now()))))
	for _, x := range []struct {
		name string
		st   flowCount
		msgs int64
	}{{"file", fileSt, int64(countLines(out))}, {"chaos.eo (exactly_once)", eoSt, eo.n.Load()}, {"chaos.alo (at least once)", aloSt, alo.n.Load()}} {
		t.Logf("%s: %d messages, lost %d, duplicates %d (%d tail, %d client; %.4f%%), %d more of events the clients re-posted after %d failed Posts, unexpected %d",
			x.name, x.msgs, x.st.lost, x.st.dups(), x.st.dupTail, x.st.dupClient, 100*float64(x.st.dups())/float64(x.st.total),
			x.st.dupReposted, fc.errs.Load(), x.st.unexpected)
		if x.st.lost > 0 {
			t.Errorf("%s: %d events lost (first %s)", x.name, x.st.lost, x.st.firstLost)
		}
		if x.st.unexpected > 0 {
			t.Errorf("%s: %d events never written", x.name, x.st.unexpected)
		}
	}
	if kills["agent"] == 0 || kills["aggregator"] == 0 {
		t.Errorf("the run ended before both roles were killed (%v)", kills)
	}
	// The exactly_once output adds nothing to what the buffer holds; the
	// buffer's duplicates (forward dedup, tail re-reads) stay within the
	// effectively-once bound of chaos_test.go, 0.01%.
	if err := eo.ta.same(fileTa); err != nil {
		t.Errorf("chaos.eo differs from the aggregator's file: %v", err)
	}
	if eoSt.dups() > 0 {
		t.Logf("chaos.eo's %d duplicates are the aggregator's buffer's: the file has them too", eoSt.dups())
	}
	if bound := float64(fileSt.total) * 0.0001; float64(fileSt.dups()) > bound {
		t.Errorf("%d duplicates in the aggregator's buffer, more than the effectively-once bound of 0.01%% (%.0f)", fileSt.dups(), bound)
	}
}
