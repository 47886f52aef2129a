package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
)

func TestRenderPath(t *testing.T) {
	rec := mpack.AppendMapHeader(nil, 1)
	rec = mpack.AppendString(rec, "svc")
	rec = mpack.AppendString(rec, "../../etc")
	tests := []struct {
		tmpl, tag string
		want      string // "" when refused
	}{
		{"./out/{tag}.log", "app.web", "out/app.web.log"},
		{"./out/{tag[0]}/{tag[-1]}.log", "app.web", "out/app/web.log"},
		{"/var/log/out/{tag}.log", "a", "/var/log/out/a.log"},
		{"../out/{tag}.log", "a", "../out/a.log"},    // the configured text may climb
		{"out/app-{tag}", "..", "out/app-.."},        // not a '..' element
		{"out/{tag}.log", "x/y", "out/x/y.log"},      // a subdirectory inside
		{"out/{tag}", "x/../y", ""},                  // '..' from a variable
		{"out/{tag}", "../../etc/passwd", ""},        // escapes
		{"{tag}", "/etc/passwd", ""},                 // absolute from a variable
		{"{tag}.log", "a", "a.log"},                  // base: the working directory
		{"out/{tag}", ".", ""},                       // the directory itself
		{"out/{tag}/", "a", ""},                      // a directory
		{"out/{tag}", "a\x00b", ""},                  // NUL
		{"out/{tag}", strings.Repeat("a", 5000), ""}, // too long
		{"out/{record.svc}.log", "a", ""},            // '..' from a record field
		{"out/{record.none|default}.log", "a", "out/default.log"},
		{"out/{{x}}/{tag}.log", "a", "out/{x}/a.log"},
		{"out/all.log", "../x", "out/all.log"}, // a fixed path is used as it is
	}
	for _, tc := range tests {
		p, err := parsePath(tc.tmpl)
		if err != nil {
			t.Fatalf("%s: %v", tc.tmpl, err)
		}
		_, got, err := p.render(nil, tc.tag, rec)
		if tc.want == "" {
			if !errors.Is(err, errInvalidPath) {
				t.Errorf("%s with tag %.20q: %q, %v; want refused", tc.tmpl, tc.tag, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s with tag %q: %q, %v; want %q", tc.tmpl, tc.tag, got, err, tc.want)
		}
	}
}

func TestValidatePath(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string // in the error; "" for none
	}{
		{Config{Path: "out/{tag}.log", Mode: "0644", MaxOpenFiles: 1}, ""},
		{Config{Path: "out/{record.a.b|x}.log", Mode: "0644", MaxOpenFiles: 256}, ""},
		{Config{Path: "out/{tag.log", Mode: "0644", MaxOpenFiles: 256}, "path: "},
		{Config{Path: "out/{nope}.log", Mode: "0644", MaxOpenFiles: 256}, "unknown variable"},
		{Config{Path: "out/{tag}.log", Mode: "0644"}, "max_open_files: must be at least 1"},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// tagged is batch(p, off, ep) with tag tag.
func tagged(tag string, p int, off, ep uint64) pipeline.Batch {
	b := batch(p, off, ep)
	b.Tag = tag
	return b
}

func templated(t *testing.T, tmpl string, maxOpen int) *harness {
	h := newHarness(t)
	h.cfg.Path = filepath.Join(h.dir, tmpl)
	h.cfg.MaxOpenFiles = maxOpen
	return h
}

func (h *harness) file(name string) string { return filepath.Join(h.dir, "out", name) }

// TestFilePerTag: path ./out/{tag}.log writes each tag's events to its own
// file, and a restart that delivers batches again writes them once.
func TestFilePerTag(t *testing.T) {
	h := templated(t, "out/{tag}.log", 256)
	h.start()
	h.write(tagged("a", 0, 0, 1), tagged("b", 1, 0, 1), tagged("a", 0, 1, 1), tagged("b", 1, 1, 1))
	h.kill()
	h.start()
	h.write(tagged("a", 0, 1, 1), tagged("b", 1, 1, 1), tagged("a", 0, 2, 1))
	if d := h.duplicates(); d != 2 {
		t.Fatalf("duplicates_suppressed_total = %v, want 2", d)
	}
	h.stop()
	if got := fmt.Sprint(h.seqs(h.file("a.log"))); got != "[0 1 2]" {
		t.Fatalf("a.log: %s", got)
	}
	if got := fmt.Sprint(h.seqs(h.file("b.log"))); got != "[1000 1001]" {
		t.Fatalf("b.log: %s", got)
	}
}

// shardBatch is one batch of events {"seq": N, "shard": S} per pair.
func shardBatch(tag string, p int, off uint64, pairs ...[2]int) pipeline.Batch {
	var recs [][]byte
	for _, sp := range pairs {
		rec := mpack.AppendMapHeader(nil, 2)
		rec = mpack.AppendString(rec, "seq")
		rec = mpack.AppendInt(rec, int64(sp[0]))
		rec = mpack.AppendString(rec, "shard")
		rec = mpack.AppendString(rec, fmt.Sprint(sp[1]))
		recs = append(recs, rec)
	}
	return pipeline.Batch{Chunk: pipeline.Chunk{Tag: tag, Entries: entries(recs...), Count: len(recs)}, Partition: p, Offset: off, Epoch: 1}
}

// TestRecordFieldSplitsBatch: a record field in the path splits a batch
// over several files, in order within each; a kill after the writes and
// before the state is stored cuts every file back, new ones included, and
// the batch read again is written once.
func TestRecordFieldSplitsBatch(t *testing.T) {
	h := templated(t, "out/{record.shard}.log", 256)
	o := h.start()
	h.write(shardBatch("t", 0, 0, [2]int{0, 0}, [2]int{1, 1}, [2]int{2, 0}))
	// Batch 1 goes to 0.log and to 2.log, opened for it: the state that
	// names 2.log is stored, the one after the writes fails.
	saves := 0
	o.saveHook = func() error {
		if saves++; saves == 2 {
			return errors.New("injected")
		}
		return nil
	}
	b1 := shardBatch("t", 0, 1, [2]int{3, 2}, [2]int{4, 0}, [2]int{5, 2})
	if err := o.Write(context.Background(), b1); err == nil {
		t.Fatal("the state save after the writes did not fail")
	}
	if got := fmt.Sprint(h.seqs(h.file("2.log"))); got != "[3 5]" {
		t.Fatalf("2.log before the kill: %s", got)
	}
	h.kill()
	h.start()
	h.write(shardBatch("t", 0, 0, [2]int{0, 0}, [2]int{1, 1}, [2]int{2, 0}), b1)
	h.stop()
	for name, want := range map[string]string{"0.log": "[0 2 4]", "1.log": "[1]", "2.log": "[3 5]"} {
		if got := fmt.Sprint(h.seqs(h.file(name))); got != want {
			t.Fatalf("%s: %s, want %s", name, got, want)
		}
	}
}

// TestMaxOpenFiles: beyond max_open_files the least recently written file
// is closed, and opened again (appending) when an event goes to it; the
// state names the open files only.
func TestMaxOpenFiles(t *testing.T) {
	h := templated(t, "out/{tag}.log", 2)
	o := h.start()
	tags := []string{"a", "b", "c", "a", "d", "c", "a"}
	for i, tag := range tags {
		h.write(tagged(tag, 0, uint64(i), 1))
		if n := len(o.open); n > 2 {
			t.Fatalf("after %d batches: %d files open", i+1, n)
		}
		if n := len(o.st.files); n > 2 {
			t.Fatalf("after %d batches: the state names %d files", i+1, n)
		}
	}
	if _, ok := o.open[h.file("a.log")]; !ok {
		t.Fatalf("the most recently written file is not open")
	}
	h.kill()
	appendBytes(t, h.file("a.log"), `{"seq":7,`) // torn, in an open file
	h.start()
	h.stop()
	want := map[string]string{"a.log": "[0 3 6]", "b.log": "[1]", "c.log": "[2 5]", "d.log": "[4]"}
	for name, w := range want {
		if got := fmt.Sprint(h.seqs(h.file(name))); got != w {
			t.Fatalf("%s: %s, want %s", name, got, w)
		}
	}
}

// TestInvalidPathDropped: events whose path would leave the directory are
// dropped and counted, nothing is written outside it, and the batch does
// not block the ones after it.
func TestInvalidPathDropped(t *testing.T) {
	h := templated(t, "out/{tag}", 256)
	h.start()
	h.write(tagged("../escaped", 0, 0, 1), tagged("ok", 0, 1, 1), tagged("ok/x", 0, 2, 1), tagged("ok", 0, 3, 1))
	if n := droppedTotal(t, h.reg, ReasonInvalidPath); n != 2 {
		t.Fatalf("dropped_records_total{reason=invalid_path} = %v, want 2 (an escape, a file in the way of a directory)", n)
	}
	h.stop()
	if _, err := os.Stat(filepath.Join(h.dir, "escaped")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file was written outside the directory: %v", err)
	}
	if got := fmt.Sprint(h.seqs(h.file("ok"))); got != "[1 3]" {
		t.Fatalf("ok: %s", got)
	}
	// per record: one event of a batch refused, the others written
	h = templated(t, "out/{record.svc}.log", 256)
	h.start()
	var recs [][]byte
	for i, svc := range []string{"api", "../../x", "api"} {
		rec := mpack.AppendMapHeader(nil, 2)
		rec = mpack.AppendString(rec, "seq")
		rec = mpack.AppendInt(rec, int64(i))
		rec = mpack.AppendString(rec, "svc")
		recs = append(recs, mpack.AppendString(rec, svc))
	}
	h.write(pipeline.Batch{Chunk: pipeline.Chunk{Tag: "t", Entries: entries(recs...), Count: 3}, Epoch: 1})
	if n := droppedTotal(t, h.reg, ReasonInvalidPath); n != 1 {
		t.Fatalf("dropped_records_total{reason=invalid_path} = %v, want 1", n)
	}
	h.stop()
	if got := fmt.Sprint(h.seqs(h.file("api.log"))); got != "[0 2]" {
		t.Fatalf("api.log: %s", got)
	}
}

func droppedTotal(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "logship_dropped_records_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, "reason", reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestReopenAll: a reload's Reopen reopens every open file renamed away,
// and the state follows them: a kill then cuts the new files.
func TestReopenAll(t *testing.T) {
	h := templated(t, "out/{tag}.log", 256)
	o := h.start()
	h.write(tagged("a", 0, 0, 1), tagged("b", 0, 1, 1), tagged("c", 0, 2, 1))
	for _, name := range []string{"a.log", "b.log"} {
		if err := os.Rename(h.file(name), h.file(name+".1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Reopen(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.log", "b.log"} {
		if _, err := os.Stat(h.file(name)); err != nil {
			t.Fatalf("%s not created again: %v", name, err)
		}
	}
	h.write(tagged("a", 0, 3, 1), tagged("b", 0, 4, 1), tagged("c", 0, 5, 1))
	h.kill()
	appendBytes(t, h.file("b.log"), `{"seq":6,`)
	h.start()
	h.write(tagged("b", 0, 6, 1))
	h.stop()
	want := map[string]string{"a.log.1": "[0]", "b.log.1": "[1]", "c.log": "[2 5]", "a.log": "[3]", "b.log": "[4 6]"}
	for name, w := range want {
		if got := fmt.Sprint(h.seqs(h.file(name))); got != w {
			t.Fatalf("%s: %s, want %s", name, got, w)
		}
	}
}

// TestStateVersion1: a state written by an older logship (version 1, one
// file without its path) is read: the configured file is cut back to the
// recorded length and written batches are skipped.
func TestStateVersion1(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.write(batch(0, 0, 1), batch(0, 1, 1))
	recorded := h.size()
	f := h.out.open[h.path]
	dev, ino := f.dev, f.ino
	h.stop()
	appendBytes(t, h.path, `{"seq":2,`)
	// slot A of a version-1 file: header, one partition, CRC
	rec := make([]byte, stateHeader1+statePart+stateCRC)
	copy(rec, stateMagic)
	binary.LittleEndian.PutUint16(rec[4:], stateVersion1)
	binary.LittleEndian.PutUint32(rec[8:], 1)
	binary.LittleEndian.PutUint64(rec[16:], 10) // sequence (slot 10%2: A)
	binary.LittleEndian.PutUint64(rec[24:], dev)
	binary.LittleEndian.PutUint64(rec[32:], ino)
	binary.LittleEndian.PutUint64(rec[40:], uint64(recorded))
	binary.LittleEndian.PutUint64(rec[48:], 1) // epoch
	binary.LittleEndian.PutUint64(rec[56:], 2) // next offset
	binary.LittleEndian.PutUint32(rec[64:], crc32.Checksum(rec[:64], castagnoli))
	data := make([]byte, 2*slotAlign)
	copy(data, rec)
	if err := os.WriteFile(filepath.Join(h.dir, "data", "output", "file", stateFileName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	h.start()
	if got := h.size(); got != recorded {
		t.Fatalf("%d bytes after start, want %d", got, recorded)
	}
	h.write(batch(0, 1, 1), batch(0, 2, 1))
	if d := h.duplicates(); d != 1 {
		t.Fatalf("duplicates_suppressed_total = %v, want 1", d)
	}
	h.stop()
	if got := fmt.Sprint(h.seqs(h.path)); got != "[0 1 2]" {
		t.Fatalf("events %s", got)
	}
}
