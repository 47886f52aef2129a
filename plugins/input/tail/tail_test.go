package tail

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
)

func TestReadsAndFollows(t *testing.T) {
	h := newHarness(t, nil)
	appendFile(t, h.path("a.log"), lines("a", 0, 100))
	h.start()
	appendFile(t, h.path("a.log"), lines("a", 100, 200))
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 200)) })
	if err := inOrder(h.e.logs(), "a"); err != nil {
		t.Error(err)
	}
	for _, r := range h.e.records() {
		if r.tag != expandTag("tail.*", h.path("a.log")) {
			t.Fatalf("tag %q", r.tag)
		}
		if r.time.IsZero() {
			t.Fatal("zero event time")
		}
	}
}

// TestPartialLineWaitsThenFlushes: a line without its newline is held,
// completed if the rest comes, emitted as is after partial_flush_timeout.
func TestPartialLineWaitsThenFlushes(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PartialFlushTimeout = conftypes.Duration(400 * time.Millisecond) })
	appendFile(t, h.path("a.log"), "whole\nhal")
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := h.e.count(); n != 1 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	appendFile(t, h.path("a.log"), "f and")
	stays(t, 150*time.Millisecond, func() error {
		if n := h.e.count(); n != 1 {
			return fmt.Errorf("partial line emitted early: %q", h.e.logs())
		}
		return nil
	})
	appendFile(t, h.path("a.log"), " done\nlast without newline")
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs(), []string{"whole", "half and done", "last without newline"})
	})
}

// TestWrappedJSON: a JSON object written in pieces, across reads, is
// parsed whole; one wrapped inside docker's log field stays a string.
func TestWrappedJSON(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Format = FormatJSON; c.ReadBufferBytes = 4096; c.MaxLineBytes = 2048 })
	appendFile(t, h.path("a.log"), `{"msg":"first","n":1}`+"\n"+`{"msg":"sec`)
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if h.e.count() != 1 {
			return fmt.Errorf("%d records", h.e.count())
		}
		return nil
	})
	big := strings.Repeat("x", 1500)
	appendFile(t, h.path("a.log"), `ond","big":"`+big+`","n":2}`+"\n")
	testutil.CheckFor(t, 5*time.Second, func() error {
		if h.e.count() != 2 {
			return fmt.Errorf("%d records", h.e.count())
		}
		return nil
	})
	r := h.e.records()[1]
	if r.m["msg"] != "second" || r.m["big"] != big || r.m["log"] != nil {
		t.Errorf("wrapped object not parsed whole: %.100v", r.m)
	}

	d := newHarness(t, func(c *Config) { c.Format = FormatDocker })
	inner := `{"level":"info","msg":"hi"}`
	line, _ := json.Marshal(map[string]string{"log": inner + "\n", "stream": "stdout", "time": "2024-01-01T00:00:00Z"})
	appendFile(t, d.path("a.log"), string(line)+"\n")
	d.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := d.e.logs(); len(got) != 1 || got[0] != inner {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
}

func TestExcludePaths(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.ExcludePaths = []string{"*skip*", filepath.Join(c.Paths[0][:len(c.Paths[0])-5], "b.log")}
	})
	appendFile(t, h.path("a.log"), lines("a", 0, 3))
	appendFile(t, h.path("b.log"), lines("b", 0, 3))
	appendFile(t, h.path("skip-me.log"), lines("s", 0, 3))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 3)) })
	appendFile(t, h.path("skip2.log"), lines("s2", 0, 3))
	appendFile(t, h.path("c.log"), lines("c", 0, 3))
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs(), append(want("a", 0, 3), want("c", 0, 3)...))
	})
}

func TestIgnoreOlder(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.IgnoreOlder = conftypes.Duration(time.Hour) })
	appendFile(t, h.path("old.log"), lines("old", 0, 3))
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(h.path("old.log"), past, past); err != nil {
		t.Fatal(err)
	}
	appendFile(t, h.path("new.log"), lines("new", 0, 3))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("new", 0, 3)) })
	// Written again, the old file is read (all of it: it was never read).
	appendFile(t, h.path("old.log"), lines("old", 3, 5))
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs(), append(want("new", 0, 3), want("old", 0, 5)...))
	})
	// Idle again for ignore_older: closed, checkpoint kept, reopened on write.
	if err := os.Chtimes(h.path("old.log"), past, past); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := testutil.Value(h.in.met.open); n != 1 {
			return fmt.Errorf("%v files open", n)
		}
		return nil
	})
	appendFile(t, h.path("old.log"), lines("old", 5, 6))
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs(), append(want("new", 0, 3), want("old", 0, 6)...))
	})
}

// TestReadFromHeadFalse: files present at the first start are read from
// their end (the unfinished line included); files created later are read
// from their head.
func TestReadFromHeadFalse(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ReadFromHead = false })
	appendFile(t, h.path("a.log"), lines("old", 0, 50)+"unfinis")
	h.start()
	appendFile(t, h.path("a.log"), "hed\n"+lines("a", 0, 5))
	appendFile(t, h.path("b.log"), lines("b", 0, 5))
	wantL := append(append([]string{"unfinished"}, want("a", 0, 5)...), want("b", 0, 5)...)
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), wantL) })

	// After a restart, a file created while stopped is read from its head,
	// an old one resumes at its checkpoint.
	h.stop()
	appendFile(t, h.path("a.log"), lines("a", 5, 8))
	appendFile(t, h.path("c.log"), lines("c", 0, 4))
	h.start()
	wantL = append(append(wantL, want("a", 5, 8)...), want("c", 0, 4)...)
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), wantL) })
}

func TestTagAndPathKey(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Tag = "kube.*"
		c.PathKey = "file"
		c.Format = FormatJSON
	})
	p := h.path("a.log")
	appendFile(t, p, "{\"x\":1}\nplain\n")
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if h.e.count() != 2 {
			return fmt.Errorf("%d records", h.e.count())
		}
		return nil
	})
	wantTag := "kube." + strings.TrimLeft(strings.ReplaceAll(p, "/", "."), ".")
	for _, r := range h.e.records() {
		if r.tag != wantTag || r.m["file"] != p {
			t.Errorf("tag %q file %v, want %q %q", r.tag, r.m["file"], wantTag, p)
		}
	}
}

// TestManyFiles: thousands of files are found and read.
func TestManyFiles(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 500
	}
	h := newHarness(t, nil)
	var wantL []string
	for i := range n {
		name := fmt.Sprintf("f%04d", i)
		appendFile(t, h.path(name+".log"), lines(name, 0, 3))
		wantL = append(wantL, want(name, 0, 3)...)
	}
	h.start()
	testutil.CheckFor(t, 30*time.Second, func() error { return exactlyOnce(h.e.logs(), wantL) })
	// And they keep being followed.
	for i := 0; i < n; i += 97 {
		name := fmt.Sprintf("f%04d", i)
		appendFile(t, h.path(name+".log"), lines(name, 3, 4))
		wantL = append(wantL, want(name, 3, 4)...)
	}
	testutil.CheckFor(t, 30*time.Second, func() error { return exactlyOnce(h.e.logs(), wantL) })
}

// TestCheckpointResume: a restart resumes at the checkpoint; a checkpoint
// whose fingerprint does not match (inode reused) starts the file over.
func TestCheckpointResume(t *testing.T) {
	h := newHarness(t, nil)
	appendFile(t, h.path("a.log"), lines("a", 0, 10))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 10)) })
	h.stop()
	cf := readCheckpoints(t, h.data)
	fi, _ := os.Stat(h.path("a.log"))
	if len(cf.Files) != 1 || cf.Files[0].Offset != fi.Size() || cf.Files[0].Path != h.path("a.log") {
		t.Fatalf("checkpoints %+v, size %d", cf, fi.Size())
	}
	appendFile(t, h.path("a.log"), lines("a", 10, 15))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 15)) })
	h.stop()

	// Pretend the inode now holds other content.
	path := filepath.Join(h.data, "input", "tail.test", "checkpoints.json")
	b, _ := os.ReadFile(path)
	var file checkpointFile
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	file.Files[0].FP++
	b, _ = json.Marshal(file)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs()[15:], want("a", 0, 15))
	})
}

// TestAckFailureRereads: a chunk the buffer did not store is read again
// from the checkpoint; nothing is lost and, with acks in order, nothing is
// stored twice.
func TestAckFailureRereads(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Batch.MaxEvents = 7 })
	var failures atomic.Int32
	h.e.fail = func(n int, _ []rec) bool {
		if n%3 == 1 && failures.Load() < 5 {
			failures.Add(1)
			return true
		}
		return false
	}
	appendFile(t, h.path("a.log"), lines("a", 0, 100))
	h.start()
	testutil.CheckFor(t, 10*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 100)) })
	if err := inOrder(h.e.logs(), "a"); err != nil {
		t.Error(err)
	}
	if failures.Load() == 0 {
		t.Fatal("no chunk failed")
	}
}

// TestCheckpointWaitsForEarlierAcks: acks out of order do not move the
// checkpoint past a chunk not yet stored.
func TestCheckpointWaitsForEarlierAcks(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Batch.MaxEvents = 10 })
	h.e.hold = true
	appendFile(t, h.path("a.log"), lines("a", 0, 30))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := h.e.heldCount(); n != 3 {
			return fmt.Errorf("%d chunks held", n)
		}
		return nil
	})
	lineLen := int64(len(lines("a", 0, 1)))
	ckpt := func() int64 {
		h.in.mu.Lock()
		defer h.in.mu.Unlock()
		for k := range h.in.files {
			c, _ := h.in.store.get(k)
			return c.Offset
		}
		return -1
	}
	h.e.release(2, 1) // the third and the second chunk
	if got := ckpt(); got != 0 {
		t.Fatalf("checkpoint %d before the first chunk is stored", got)
	}
	h.e.release() // the first
	if got := ckpt(); got != 30*lineLen {
		t.Fatalf("checkpoint %d, want %d", got, 30*lineLen)
	}
}

// TestStopWaitsForAcks: Stop waits for outstanding acks and saves the
// checkpoint; a chunk never acknowledged is read again after a restart.
func TestStopWaitsForAcks(t *testing.T) {
	h := newHarness(t, nil)
	h.e.delay = 100 * time.Millisecond
	appendFile(t, h.path("a.log"), lines("a", 0, 10))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		h.e.mu.Lock()
		defer h.e.mu.Unlock()
		if len(h.e.emitted) != 10 {
			return errors.New("not emitted yet")
		}
		return nil
	})
	h.stop()
	if h.e.count() != 10 {
		t.Fatalf("stop returned before the acks: %d stored", h.e.count())
	}
	cf := readCheckpoints(t, h.data)
	if len(cf.Files) != 1 || cf.Files[0].Offset != int64(len(lines("a", 0, 10))) {
		t.Fatalf("checkpoint not saved at stop: %+v", cf)
	}

	// Never acknowledged: Stop gives up at its deadline, the lines come
	// again after a restart.
	h.e.delay = 0
	h.e.hold = true
	h.start()
	appendFile(t, h.path("a.log"), lines("a", 10, 20))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if h.e.heldCount() == 0 {
			return errors.New("nothing emitted")
		}
		return nil
	})
	ctx, cancel := contextWithTimeout(100 * time.Millisecond)
	err := h.in.Stop(ctx)
	cancel()
	h.in = nil
	if err == nil {
		t.Fatal("stop did not report the missing acks")
	}
	h.e.mu.Lock()
	h.e.held = nil
	h.e.hold = false
	h.e.mu.Unlock()
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 20)) })
}

// TestBackpressure: while the buffer takes nothing, the reader waits;
// stopping then loses nothing.
func TestBackpressure(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Batch.MaxEvents = 10 })
	h.e.block = make(chan struct{})
	appendFile(t, h.path("a.log"), lines("a", 0, 100))
	h.start()
	stays(t, 100*time.Millisecond, func() error {
		if h.e.count() != 0 {
			return errors.New("emitted while blocked")
		}
		return nil
	})
	h.stop()
	h.e.block = nil
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 100)) })
}

func TestFairReads(t *testing.T) {
	// A huge file does not keep a small one waiting until it is done.
	h := newHarness(t, func(c *Config) { c.ReadBufferBytes = 4096; c.MaxLineBytes = 1024 })
	appendFile(t, h.path("big.log"), lines("big", 0, 200000))
	appendFile(t, h.path("small.log"), lines("small", 0, 1))
	h.start()
	testutil.CheckFor(t, 10*time.Second, func() error {
		for i, l := range h.e.logs() {
			if l == "small-000000" {
				if i > 150000 {
					return fmt.Errorf("small file read only after %d lines of the big one", i)
				}
				return nil
			}
		}
		return errors.New("small file not read")
	})
	testutil.CheckFor(t, 20*time.Second, func() error {
		if n := h.e.count(); n != 200001 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
}

// metricValue reads one series from the input's registry.
func (h *harness) metricValue(name string, labels map[string]string) (float64, bool) {
	mfs, err := h.reg.Reg.(prometheus.Gatherer).Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// TestMetricsAndLossLedger: per-file bytes, records and lag; bytes cut
// by a truncation before they were read land in the loss ledger.
func TestMetricsAndLossLedger(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.ReadBufferBytes = 4096
		c.MaxLineBytes = 1024
		c.Batch.MaxEvents = 100
	})
	p := h.path("a.log")
	appendFile(t, p, lines("a", 0, 50))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 50)) })
	size := float64(len(lines("a", 0, 50)))
	file := map[string]string{"path": p}
	testutil.CheckFor(t, 5*time.Second, func() error {
		b, _ := h.metricValue("logship_tail_file_read_bytes_total", file)
		r, _ := h.metricValue("logship_tail_file_records_total", file)
		lag, ok := h.metricValue("logship_tail_file_lag_bytes", file)
		if b != size || r != 50 || !ok || lag != 0 {
			return fmt.Errorf("bytes %v records %v lag %v (%v)", b, r, lag, ok)
		}
		return nil
	})

	// The reader is held up; the file grows and is truncated in place:
	// what it never read is counted as lost.
	h.e.mu.Lock()
	h.e.block = make(chan struct{})
	h.e.mu.Unlock()
	appendFile(t, p, lines("b", 0, 2000))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if lag, _ := h.metricValue("logship_tail_file_lag_bytes", file); lag == 0 {
			return errors.New("growth not seen")
		}
		return nil
	})
	truncsBefore, _ := h.metricValue("logship_tail_rotations_total", map[string]string{"kind": "truncated"})
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	h.e.mu.Lock()
	close(h.e.block)
	h.e.block = nil
	h.e.mu.Unlock()
	appendFile(t, p, lines("c", 0, 5))
	testutil.CheckFor(t, 5*time.Second, func() error {
		got := h.e.logs()
		if err := exactlyOnce(got[len(got)-5:], want("c", 0, 5)); err != nil {
			return err
		}
		lost, _ := h.metricValue("logship_tail_lost_bytes_total", map[string]string{"path": p, "reason": "truncated"})
		if lost <= 0 {
			return fmt.Errorf("loss ledger %v", lost)
		}
		read := 0
		for _, l := range got {
			if l[0] == 'b' {
				read++
			}
		}
		if wantLost := float64((2000 - read) * len(lines("b", 0, 1))); lost != wantLost {
			return fmt.Errorf("loss ledger %v, want %v (%d b lines read)", lost, wantLost, read)
		}
		return nil
	})
	if n, _ := h.metricValue("logship_tail_rotations_total", map[string]string{"kind": "truncated"}); n != truncsBefore+1 {
		t.Errorf("rotations{truncated} went from %v to %v", truncsBefore, n)
	}
}

// TestEmitErrorRetried: an Emit error that is not the stop (the buffer
// refused the chunk) makes the file be read again, not abandoned.
func TestEmitErrorRetried(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Batch.MaxEvents = 10 })
	h.e.emitErr = func(n int) error {
		if n == 2 || n == 3 {
			return errors.New("buffer refused the chunk (test)")
		}
		return nil
	}
	appendFile(t, h.path("a.log"), lines("a", 0, 50))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 50)) })
	h.e.mu.Lock()
	refused := h.e.refused
	h.e.mu.Unlock()
	if refused != 2 {
		t.Errorf("%d chunks refused", refused)
	}
}

func TestLastLineStart(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct {
		content string
		window  int
		want    int64
	}{
		{"", 100, 0},
		{"abc", 100, 0},      // one unfinished line: all of it
		{"abc\n", 100, 4},    // at the end
		{"abc\ndef", 100, 4}, // the unfinished line
		{"a\n" + strings.Repeat("x", 10000), 20000, 2},    // newline far back, several steps
		{"a\n" + strings.Repeat("x", 10000), 5000, 10002}, // beyond the window: the end
		{strings.Repeat("x", 10000), 5000, 10000},
	} {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := lastLineStart(f, int64(len(c.content)), c.window); got != c.want {
			t.Errorf("case %d: %d, want %d", i, got, c.want)
		}
		f.Close()
	}
}
