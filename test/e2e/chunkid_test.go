package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/plugins/forwardproto"
)

// Chunk ids and reused offsets (issue 14). The forward output names each
// chunk after its place in the buffer. When a buffer hands out offsets
// again (it was removed while data_dir/output/NAME/sender-id was kept, or
// an unclean stop lost a tail that was never synced), new chunks must not
// get the ids of chunks the aggregator already stored: its dedup would
// acknowledge them without storing them, and they would be lost silently.

// relayPair is an agent (forward in -> buffer -> forward out "fwd") and an
// aggregator (forward in with dedup -> buffer -> file).
type relayPair struct {
	t                  *testing.T
	dir, agentData     string
	agentAddr, aggAddr string
	agentCfg, aggOut   string
	agent, aggregator  *proc
}

func newRelayPair(t *testing.T, agentSync string) *relayPair {
	t.Helper()
	dir := t.TempDir()
	r := &relayPair{t: t, dir: dir, agentData: filepath.Join(dir, "agent-data"), agentAddr: testutil.FreeAddr(t), aggAddr: testutil.FreeAddr(t),
		agentCfg: filepath.Join(dir, "agent.yaml"), aggOut: filepath.Join(dir, "agg.log")}
	aggCfg := filepath.Join(dir, "aggregator.yaml")
	writeFile(t, aggCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
buffer: {partitions: 1}
inputs:
  - {type: forward, listen: %s, dedup: true}
outputs:
  - {type: file, path: %s, tag_key: tag}
`, filepath.Join(dir, "agg-data"), r.aggAddr, r.aggOut))
	// One partition: the second life's chunks take exactly the offsets of
	// the first's.
	writeFile(t, r.agentCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: "", shutdown_timeout: 5s}
buffer: {partitions: 1, sync: %s}
inputs:
  - {type: forward, name: in, listen: %s}
outputs:
  - {type: forward, name: fwd, servers: [%s], retry_min: 50ms, retry_max: 500ms}
`, r.agentData, agentSync, r.agentAddr, r.aggAddr))
	r.aggregator = start(t, "aggregator", "-c", aggCfg)
	waitListening(t, r.aggAddr)
	r.startAgent()
	return r
}

func (r *relayPair) startAgent() {
	r.t.Helper()
	r.agent = start(r.t, "agent", "-c", r.agentCfg)
	waitListening(r.t, r.agentAddr)
}

// send ships events seq from..to-1 to the agent in PackedForward chunks of
// per events, each with a chunk id, and waits for each ack (the agent
// stored it): these events must reach the aggregator.
func (r *relayPair) send(tag string, from, to, per int) {
	r.t.Helper()
	c, err := net.Dial("tcp", r.agentAddr)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
	enc := forwardproto.NewEncoder()
	var entries, rec, frame []byte
	for at := from; at < to; at += per {
		entries = entries[:0]
		n := min(per, to-at)
		for seq := at; seq < at+n; seq++ {
			rec = mpack.AppendMapHeader(rec[:0], 2)
			rec = mpack.AppendString(rec, "seq")
			rec = mpack.AppendInt(rec, int64(seq))
			rec = mpack.AppendString(rec, "log")
			rec = mpack.AppendString(rec, fmt.Sprintf("event %d of the e2e chunk id test", seq))
			entries = mpack.AppendEntry(entries, mpack.EventTime{Sec: 1_700_000_000 + uint32(seq)}, rec)
		}
		id := fmt.Sprintf("client-%s-%d", tag, at)
		if frame, err = enc.AppendPackedForward(frame[:0], tag, entries, n, id, forwardproto.CompressNone); err != nil {
			r.t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(frame); err != nil {
			r.t.Fatal(err)
		}
		if ack, err := dec.NextAck(); err != nil || ack != id {
			r.t.Fatalf("ack %q, %v; want %q", ack, err, id)
		}
	}
}

// waitStoredOnce waits until the aggregator holds every seq below n and
// fails if one is missing after the timeout or stored twice.
func (r *relayPair) waitStoredOnce(n int, timeout time.Duration) {
	r.t.Helper()
	var count map[int]int
	deadline := time.Now().Add(timeout)
	for {
		count = map[int]int{}
		for _, l := range readJSONLines(r.t, r.aggOut) {
			count[int(l["seq"].(float64))]++
		}
		missing := 0
		for i := range n {
			if count[i] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			var first []int
			for i := range n {
				if count[i] == 0 && len(first) < 10 {
					first = append(first, i)
				}
			}
			r.t.Fatalf("%d of %d acknowledged events never reached the aggregator (first: %v): lost as duplicates of chunks with the same id?", missing, n, first)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var twice []int
	for seq, c := range count {
		if c > 1 {
			twice = append(twice, seq)
		}
	}
	sort.Ints(twice)
	if len(twice) > 0 {
		r.t.Fatalf("%d events stored more than once (first %v)", len(twice), twice[:min(10, len(twice))])
	}
}

func (r *relayPair) stopAgent(sig syscall.Signal) {
	r.t.Helper()
	r.agent.signal(sig)
	code := r.agent.wait(20 * time.Second)
	if sig == syscall.SIGTERM && code != 0 {
		r.t.Fatalf("agent exit %d", code)
	}
}

// TestChunkIDsAfterBufferRemoved: the agent's buffer directory is removed
// between two runs while its forward output's sender id is kept. The
// events acknowledged in the second run all reach the aggregator, once.
func TestChunkIDsAfterBufferRemoved(t *testing.T) {
	r := newRelayPair(t, "always")
	r.send("first", 0, 1000, 50)
	r.waitStoredOnce(1000, 20*time.Second)
	r.stopAgent(syscall.SIGTERM)

	if _, err := os.Stat(filepath.Join(r.agentData, "output", "fwd", "sender-id")); err != nil {
		t.Fatalf("no sender id where the test expects it: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(r.agentData, "buffer")); err != nil {
		t.Fatal(err)
	}
	r.startAgent()
	r.send("second", 1000, 2000, 50)
	r.waitStoredOnce(2000, 20*time.Second)
}

// TestChunkIDsAfterLostTail: a power cut under sync: none loses the tail
// of the agent's buffer that was written but never synced. The test mimics
// it at process level: SIGKILL, then the last segment is cut short (the
// broker's recovery cuts the torn record off), so the next records get
// offsets that chunks already stored at the aggregator had. The events
// acknowledged after the restart all reach the aggregator, once.
func TestChunkIDsAfterLostTail(t *testing.T) {
	r := newRelayPair(t, "none")
	r.send("first", 0, 1000, 50)
	r.waitStoredOnce(1000, 20*time.Second)
	r.stopAgent(syscall.SIGKILL)

	segs, err := filepath.Glob(filepath.Join(r.agentData, "buffer", "p*", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment files (%v)", err)
	}
	sort.Strings(segs)
	last := segs[len(segs)-1]
	st, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	// Keep about the first half: what the last fdatasync would have made
	// durable before the power went.
	if err := os.Truncate(last, st.Size()/2); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut %s from %d to %d bytes", filepath.Base(last), st.Size(), st.Size()/2)

	r.startAgent()
	r.send("second", 1000, 2000, 50)
	r.waitStoredOnce(2000, 20*time.Second)
}
