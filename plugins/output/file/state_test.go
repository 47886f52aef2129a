package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
)

// TestStateSlots: states go to the two slots in turn; on open the valid
// slot with the highest sequence number wins, and a torn slot is ignored.
func TestStateSlots(t *testing.T) {
	tests := []struct {
		name    string
		saves   int
		tear    func(path string, slot int) // damages the file after the saves
		wantSeq uint64
		wantErr error
	}{
		{name: "highest sequence wins, slot B", saves: 3, wantSeq: 3},
		{name: "highest sequence wins, slot A", saves: 4, wantSeq: 4},
		{name: "torn newest slot: the previous state", saves: 5, wantSeq: 4, tear: func(path string, slot int) {
			flipByte(t, path, int64(slot)+40) // slot B (seq 5): partition 1's epoch
		}},
		{name: "torn record tail: the previous state", saves: 6, wantSeq: 5, tear: func(path string, slot int) {
			zeroRange(t, path, stateHeader+statePart*2+stateFile+int64(len("out/all.log")), 4) // slot A (seq 6): its CRC
		}},
		{name: "half-written newest slot", saves: 2, wantSeq: 1, tear: func(path string, slot int) {
			zeroRange(t, path, 20, 100) // slot A (seq 2) from its sequence on
		}},
		{name: "both slots torn: no state", saves: 2, wantErr: errNoState, tear: func(path string, slot int) {
			flipByte(t, path, 16)
			flipByte(t, path, int64(slot)+16)
		}},
		{name: "a file of the wrong size: no state", saves: 1, wantErr: errNoState, tear: func(path string, slot int) {
			if err := os.Truncate(path, 700); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st, s, err := openStateStore(dir)
			if err != nil || s.seq != 0 {
				t.Fatalf("new store: %v, seq %d", err, s.seq)
			}
			for i := 1; i <= tc.saves; i++ {
				s.files = []fileState{{path: "out/all.log", dev: 7, ino: 42, length: int64(1000 * i)}}
				s.advance(pipeline.Batch{Partition: 1, Offset: uint64(100 + i), Epoch: 9})
				if err := st.save(&s, false); err != nil {
					t.Fatal(err)
				}
				if s.seq != uint64(i) {
					t.Fatalf("seq %d after save %d", s.seq, i)
				}
			}
			slot := st.slot
			_ = st.close()
			if tc.tear != nil {
				tc.tear(filepath.Join(dir, stateFileName), slot)
			}
			st, got, err := openStateStore(dir)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("open: %v, want %v", err, tc.wantErr)
			}
			defer st.close()
			if tc.wantErr != nil {
				if got.seq != 0 || len(got.parts) != 0 {
					t.Fatalf("state %+v from a file without a valid slot", got)
				}
				return
			}
			want := state{seq: tc.wantSeq, files: []fileState{{path: "out/all.log", dev: 7, ino: 42, length: int64(1000 * tc.wantSeq)}},
				parts: []partState{{}, {epoch: 9, next: 100 + tc.wantSeq + 1}}}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("state %+v, want %+v", got, want)
			}
			// the store goes on from there, into the other slot
			if err := st.save(&got, true); err != nil {
				t.Fatal(err)
			}
			_ = st.close()
			st, again, err := openStateStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			st.close()
			if again.seq != tc.wantSeq+1 {
				t.Fatalf("seq %d after one more save, want %d", again.seq, tc.wantSeq+1)
			}
		})
	}
}

// TestStateGrows: more partitions than a slot holds lay the file out again
// with larger slots, and the state survives it.
func TestStateGrows(t *testing.T) {
	dir := t.TempDir()
	st, s, err := openStateStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for p := range 200 {
		s.advance(pipeline.Batch{Partition: p, Offset: uint64(p), Epoch: 3})
		if err := st.save(&s, false); err != nil {
			t.Fatal(err)
		}
	}
	if st.slot != 4096 {
		t.Fatalf("slot of %d bytes for 200 partitions", st.slot)
	}
	st.close()
	st, got, err := openStateStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	st.close()
	if len(got.parts) != 200 || got.parts[199] != (partState{epoch: 3, next: 200}) || got.seq != 200 {
		t.Fatalf("after growing: seq %d, %d partitions, last %+v", got.seq, len(got.parts), got.parts[len(got.parts)-1])
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func zeroRange(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

// TestWrittenRule: which batches the state counts as written.
func TestWrittenRule(t *testing.T) {
	const inc = uint64(0xabc) << 32
	s := state{parts: []partState{{}, {epoch: inc | 5, next: 10}}}
	tests := []struct {
		name string
		b    pipeline.Batch
		want bool
	}{
		{"same epoch, below next", pipeline.Batch{Partition: 1, Offset: 9, Epoch: inc | 5}, true},
		{"same epoch, at next", pipeline.Batch{Partition: 1, Offset: 10, Epoch: inc | 5}, false},
		{"older epoch of the same incarnation, below next (cursor lag over a restart)", pipeline.Batch{Partition: 1, Offset: 3, Epoch: inc | 4}, true},
		{"epoch 0 (stored before epochs), below next", pipeline.Batch{Partition: 1, Offset: 3}, true},
		{"newer epoch at a reused offset", pipeline.Batch{Partition: 1, Offset: 3, Epoch: inc | 6}, false},
		{"another incarnation (recreated buffer)", pipeline.Batch{Partition: 1, Offset: 3, Epoch: uint64(0xdef)<<32 | 1}, false},
		{"another incarnation with a lower epoch", pipeline.Batch{Partition: 1, Offset: 3, Epoch: uint64(0x1)<<32 | 9}, false},
		{"partition without state", pipeline.Batch{Partition: 0, Offset: 0, Epoch: inc | 5}, false},
		{"partition beyond the state", pipeline.Batch{Partition: 7, Offset: 0, Epoch: inc | 5}, false},
	}
	for _, tc := range tests {
		if got := s.written(tc.b); got != tc.want {
			t.Errorf("%s: written = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// harness runs file outputs over one path and data_dir, started and
// "killed" (dropped without Stop) at will.
type harness struct {
	t    *testing.T
	dir  string
	path string
	cfg  Config
	reg  *prometheus.Registry
	out  *Output
	set  pipeline.Settings
}

func newHarness(t *testing.T) *harness {
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, path: filepath.Join(dir, "out", "all.log"), cfg: Config{Mode: "0644"}}
	h.cfg.Path = h.path
	t.Cleanup(func() {
		if h.out != nil {
			_ = h.out.Stop(context.Background())
		}
	})
	return h
}

func (h *harness) start() *Output {
	h.t.Helper()
	h.reg = prometheus.NewRegistry()
	h.set = pipeline.Settings{Name: "file", Type: "file", DataDir: filepath.Join(h.dir, "data"), Logger: zap.NewNop(),
		Metrics: pipeline.NewMetrics(h.reg).Component(pipeline.KindOutput, "file", "file")}
	cfg := h.cfg
	h.out = &Output{cfg: &cfg, set: h.set}
	if err := h.out.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	return h.out
}

// kill drops the output as a SIGKILL would: its files are closed, nothing
// more is written.
func (h *harness) kill() {
	for _, of := range h.out.open {
		of.f.Close()
	}
	_ = h.out.store.close()
	h.out = nil
}

func (h *harness) stop() {
	h.t.Helper()
	if err := h.out.Stop(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.out = nil
}

// batch is offset off of partition p in epoch ep: one event {"seq": seq}
// per offset, seq = 1000*p + off.
func batch(p int, off, ep uint64) pipeline.Batch {
	return pipeline.Batch{Chunk: pipeline.Chunk{Tag: "t", Entries: entries(plainRecord(1000*p + int(off))), Count: 1}, Partition: p, Offset: off, Epoch: ep}
}

func (h *harness) write(bs ...pipeline.Batch) {
	h.t.Helper()
	for _, b := range bs {
		if err := h.out.Write(context.Background(), b); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) seqs(path string) []int {
	h.t.Helper()
	var out []int
	for _, l := range readLines(h.t, path) {
		out = append(out, int(l["seq"].(float64)))
	}
	return out
}

func (h *harness) duplicates() float64 {
	var m dto.Metric
	if err := h.set.Metrics.Duplicates.Write(&m); err != nil {
		h.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func (h *harness) size() int64 {
	h.t.Helper()
	st, err := os.Stat(h.path)
	if err != nil {
		h.t.Fatal(err)
	}
	return st.Size()
}

func appendBytes(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestStartCutsWhatStateDoesNotCover: after a kill, what follows the
// recorded length (a torn line, or a whole batch whose state write the
// kill beat) is cut on start, and the batch read again is written once.
func TestStartCutsWhatStateDoesNotCover(t *testing.T) {
	for _, tail := range []string{`{"seq":2,"l`, `{"seq":2,"log":"hello"}` + "\n"} {
		h := newHarness(t)
		h.start()
		h.write(batch(0, 0, 1), batch(0, 1, 1))
		recorded := h.size()
		h.kill()
		appendBytes(t, h.path, tail) // written, then killed before the state
		h.start()
		if got := h.size(); got != recorded {
			t.Fatalf("tail %q: %d bytes after start, want %d", tail, got, recorded)
		}
		// the runner reads from its cursor again: offsets 0..2
		h.write(batch(0, 0, 1), batch(0, 1, 1), batch(0, 2, 1))
		h.stop()
		if got := fmt.Sprint(h.seqs(h.path)); got != "[0 1 2]" {
			t.Fatalf("tail %q: events %s, want [0 1 2]", tail, got)
		}
	}
}

// TestSkipsWrittenBatches: batches delivered again after a restart are
// skipped and counted as duplicates; partitions are tracked apart.
func TestSkipsWrittenBatches(t *testing.T) {
	h := newHarness(t)
	h.start()
	for off := range uint64(5) {
		h.write(batch(0, off, 4), batch(2, off, 4))
	}
	h.write(batch(0, 5, 4))
	h.kill()
	h.start()
	for off := uint64(2); off < 8; off++ { // the cursors lagged behind
		h.write(batch(0, off, 4), batch(2, off, 4))
	}
	if d := h.duplicates(); d != 4+3 {
		t.Fatalf("duplicates_suppressed_total = %v, want 7", d)
	}
	h.stop()
	want := []int{}
	for off := range 5 {
		want = append(want, off, 2000+off)
	}
	want = append(want, 5, 2005, 6, 2006, 7, 2007)
	if got := h.seqs(h.path); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// TestNewEpochNotSkipped: after a power cut the buffer hands out offsets
// again in a new epoch; those batches are other events and are written.
// So are the batches of a recreated buffer (another incarnation).
func TestNewEpochNotSkipped(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.write(batch(0, 0, 1<<32|1), batch(0, 1, 1<<32|1), batch(0, 2, 1<<32|1))
	h.kill()
	h.start()
	h.write(batch(0, 1, 1<<32|2), batch(0, 2, 1<<32|2)) // offsets 1 and 2 again, new epoch
	h.write(batch(0, 0, 2<<32|1))                       // a recreated buffer
	if d := h.duplicates(); d != 0 {
		t.Fatalf("duplicates_suppressed_total = %v, want 0", d)
	}
	h.stop()
	if got := fmt.Sprint(h.seqs(h.path)); got != "[0 1 2 1 2 0]" {
		t.Fatalf("events %s", got)
	}
}

// TestRenamedWhileStoppedNotCut: a file with another inode at the path
// (rotated while logship was down) is not cut, nor is the renamed one.
func TestRenamedWhileStoppedNotCut(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.write(batch(0, 0, 1), batch(0, 1, 1))
	h.kill()
	appendBytes(t, h.path, `{"seq":2,"log":"hello"}`+"\n")
	rotated := h.path + ".1"
	if err := os.Rename(h.path, rotated); err != nil {
		t.Fatal(err)
	}
	other := `{"seq":-1,"log":"someone else's file, longer than the recorded length"}` + "\n"
	if err := os.WriteFile(h.path, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.write(batch(0, 2, 1))
	h.stop()
	if got := fmt.Sprint(h.seqs(rotated)); got != "[0 1 2]" {
		t.Fatalf("renamed file: %s", got)
	}
	if got := fmt.Sprint(h.seqs(h.path)); got != "[-1 2]" {
		t.Fatalf("new file: %s", got)
	}
}

// TestShorterFileNotExtended: a file shorter than recorded (a power cut
// without fsync) is left as it is and written on.
func TestShorterFileNotExtended(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.write(batch(0, 0, 1), batch(0, 1, 1))
	first := int64(len(`{"seq":0,"log":"hello"}` + "\n"))
	h.kill()
	if err := os.Truncate(h.path, first); err != nil {
		t.Fatal(err)
	}
	h.start()
	if h.size() != first {
		t.Fatalf("the file was changed on start: %d bytes", h.size())
	}
	h.write(batch(0, 2, 1))
	h.kill() // and a torn batch after it is cut again at the next start
	appendBytes(t, h.path, `{"seq":3`)
	h.start()
	h.stop()
	if got := fmt.Sprint(h.seqs(h.path)); got != "[0 2]" {
		t.Fatalf("events %s", got)
	}
}

// TestReopen: after the file is renamed away, Reopen makes the next
// batches go to a new file at the path, and the state follows it: a kill
// then cuts the new file, not the old one.
func TestReopen(t *testing.T) {
	h := newHarness(t)
	o := h.start()
	h.write(batch(0, 0, 1))
	if err := o.Reopen(); err != nil { // not renamed: nothing changes
		t.Fatal(err)
	}
	h.write(batch(0, 1, 1))
	rotated := h.path + ".1"
	if err := os.Rename(h.path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := o.Reopen(); err != nil {
		t.Fatal(err)
	}
	h.write(batch(0, 2, 1))
	h.kill()
	appendBytes(t, h.path, `{"seq":3,`)
	h.start()
	h.write(batch(0, 2, 1), batch(0, 3, 1))
	h.stop()
	if got := fmt.Sprint(h.seqs(rotated)); got != "[0 1]" {
		t.Fatalf("renamed file: %s", got)
	}
	if got := fmt.Sprint(h.seqs(h.path)); got != "[2 3]" {
		t.Fatalf("new file: %s", got)
	}
}

// TestMemoryStateWithoutDataDir: without a data_dir the output works and
// keeps its state in memory (no state file anywhere).
func TestMemoryStateWithoutDataDir(t *testing.T) {
	h := newHarness(t)
	cfg := h.cfg
	o := &Output{cfg: &cfg, set: pipeline.Settings{Name: "file", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindOutput, "file")}}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, b := range []pipeline.Batch{batch(0, 0, 1), batch(0, 1, 1), batch(0, 1, 1)} {
		if err := o.Write(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(h.seqs(h.path)); got != "[0 1]" {
		t.Fatalf("events %s", got)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state written without a data_dir: %v", err)
	}
}
