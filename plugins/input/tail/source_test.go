package tail

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

func testSource() source {
	return source{
		seq: 1 << 40, origin: 77, originOff: 12, key: fileKey{dev: 2049, ino: 1 << 33},
		fp: fingerprint{256, 0xdeadbeefcafef00d}, start: 4096, end: 1<<40 + 5,
		tail: tailSum{256, 0x0123456789abcdef}, count: 500, path: "/var/log/containers/a_b_c-0123.log",
	}
}

func TestSourceRoundTrip(t *testing.T) {
	long := testSource()
	long.path = "/" + strings.Repeat("x", maxSourcePath) // too long: left out
	short := source{seq: 1, origin: 1, key: fileKey{1, 1}}
	for _, s := range []source{testSource(), long, short} {
		b := appendSource(nil, &s)
		if len(b) > 1024-64 {
			t.Fatalf("source of %d bytes, the pipeline takes 1 KiB with the input's name", len(b))
		}
		if b[0] != sourceVersion {
			t.Fatalf("first byte %d, want the version", b[0])
		}
		got, err := decodeSource(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", s, err)
		}
		if len(s.path) > maxSourcePath {
			s.path = ""
		}
		if got != s {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
		}
	}
	// The longest a source gets stays within the pipeline's bound.
	max := source{seq: 1<<64 - 1, origin: 1<<64 - 1, originOff: 1<<63 - 1, key: fileKey{1<<64 - 1, 1<<64 - 1}, fp: fingerprint{256, 1}, start: 1<<63 - 1, end: 1<<63 - 1, tail: tailSum{256, 1}, count: 1 << 30, path: strings.Repeat("p", maxSourcePath)}
	if b := appendSource(nil, &max); len(b) > 1000 {
		t.Fatalf("largest source %d bytes", len(b))
	}
}

// TestSourceRefusesGarbage: records are on disk and may come from another
// version or be damaged: a source that does not decode whole, or whose
// values are out of bounds, is refused, and nothing panics.
func TestSourceRefusesGarbage(t *testing.T) {
	s := testSource()
	good := appendSource(nil, &s)
	cases := map[string][]byte{
		"empty":            nil,
		"version 0":        append([]byte{0}, good[1:]...),
		"version 2":        append([]byte{2}, good[1:]...),
		"trailing byte":    append(append([]byte(nil), good...), 'x'),
		"another input's?": []byte("{\"id\":1}"),
	}
	for i := 1; i < len(good); i++ {
		cases[fmt.Sprintf("cut at %d", i)] = good[:i]
	}
	bad := func(mod func(*source)) []byte {
		c := testSource()
		mod(&c)
		return appendSource(nil, &c)
	}
	cases["end before start"] = bad(func(c *source) { c.end = c.start - 1 })
	cases["start before origin"] = bad(func(c *source) { c.originOff = c.start + 1 })
	cases["no origin"] = bad(func(c *source) { c.origin = 0 })
	cases["seq before origin"] = bad(func(c *source) { c.seq = c.origin - 1 })
	cases["negative offset"] = bad(func(c *source) { c.start, c.end = -5, -1; c.originOff = -5 })
	cases["fingerprint too long"] = func() []byte {
		b := append([]byte(nil), good...)
		i := bytes.Index(b, []byte{0x80, 0x02}) // uvarint 256, the fp length
		b[i+1] = 0x03                           // 384
		return b
	}()
	for name, b := range cases {
		if _, err := decodeSource(b); err == nil {
			t.Errorf("%s: %x decoded", name, b)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 && len(b) > 0 {
			b[0] = sourceVersion
		}
		_, _ = decodeSource(b) // must not panic
		m := append([]byte(nil), good...)
		m[rng.IntN(len(m))] ^= byte(1 + rng.IntN(255))
		if got, err := decodeSource(m); err == nil && (got.end < got.start || got.start < got.originOff) {
			t.Fatalf("damaged source decoded out of bounds: %+v", got)
		}
	}
}

func FuzzDecodeSource(f *testing.F) {
	s := testSource()
	f.Add(appendSource(nil, &s))
	f.Add([]byte{sourceVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeSource(b)
		if err != nil {
			return
		}
		if again, err := decodeSource(appendSource(nil, &got)); err != nil || again != got {
			t.Fatalf("decoded %+v does not encode back: %+v %v", got, again, err)
		}
	})
}

// TestApplySources: the newest position per file wins, but only where it
// continues what is known to be durable.
func TestApplySources(t *testing.T) {
	fpA, fpB := fingerprint{256, 1}, fingerprint{256, 2}
	k := fileKey{1, 10}
	src := func(seq, origin uint64, originOff, start, end int64, fp fingerprint) source {
		return source{seq: seq, origin: origin, originOff: originOff, key: k, fp: fp, start: start, end: end, tail: tailSum{1, uint64(end)}, count: 1, path: "/l/a.log"}
	}
	ck := func(off int64, fp fingerprint, origin uint64) *checkpoint {
		return &checkpoint{Dev: 1, Ino: 10, FPLen: fp.n, FP: fp.sum, Offset: off, Path: "/l/a.log", TailLen: 1, TailFP: uint64(off), origin: origin}
	}
	for _, tc := range []struct {
		name string
		ck   *checkpoint
		srcs []source
		want *checkpoint
	}{
		{"the same chain moves on", ck(100, fpA, 5), []source{src(7, 5, 0, 100, 200, fpA), src(6, 5, 0, 50, 100, fpA), src(8, 5, 0, 200, 300, fpA)}, ck(300, fpA, 5)},
		{"older sources change nothing", ck(300, fpA, 5), []source{src(6, 5, 0, 100, 200, fpA)}, ck(300, fpA, 5)},
		{"a gap (an earlier chunk not durable) stops it", ck(100, fpA, 5), []source{src(7, 5, 0, 200, 300, fpA)}, ck(100, fpA, 5)},
		{"read again after the gap: the chain goes on", ck(100, fpA, 5), []source{src(7, 5, 0, 200, 300, fpA), src(9, 5, 0, 100, 250, fpA), src(10, 5, 0, 250, 320, fpA)}, ck(320, fpA, 5)},
		{"an older chain (content before a truncation) is ignored", ck(0, fpB, 9), []source{src(6, 5, 0, 0, 300, fpA), src(7, 5, 0, 300, 400, fpA)}, ck(0, fpB, 9)},
		{"a newer chain from its origin replaces", ck(300, fpA, 5), []source{src(11, 10, 0, 0, 80, fpB), src(12, 10, 0, 80, 90, fpB)}, ck(90, fpB, 10)},
		{"a newer chain whose first chunk is missing does not", ck(300, fpA, 5), []source{src(12, 10, 0, 80, 90, fpB)}, ck(300, fpA, 5)},
		{"no checkpoint: a chain from its origin makes one", nil, []source{src(3, 2, 40, 40, 90, fpA), src(4, 2, 40, 90, 95, fpA)}, ck(95, fpA, 2)},
		{"no checkpoint: a chain without its start makes none", nil, []source{src(4, 2, 40, 90, 95, fpA)}, nil},
		{"saved without chains: the same content moves on and takes the chain", ck(100, fpA, 0), []source{src(4, 2, 0, 100, 150, fpA), src(5, 2, 0, 150, 160, fpA)}, ck(160, fpA, 2)},
		{"saved without chains: other content from its origin replaces", ck(100, fpA, 0), []source{src(4, 2, 0, 0, 10, fpB)}, ck(10, fpB, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[fileKey]*checkpoint{}
			if tc.ck != nil {
				m[k] = tc.ck
			}
			applySources(m, tc.srcs)
			if got := m[k]; !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	noPath := src(3, 2, 0, 0, 10, fpA)
	noPath.path = ""
	m := map[fileKey]*checkpoint{}
	if applySources(m, []source{noPath}); len(m) != 0 {
		t.Fatalf("a source without its path made a checkpoint: %+v", m[k])
	}
}

// TestCheckpointFloorSavedAndRead: the floor is saved with the entries
// and the chains beside them; an older logship reading the file finds the
// entries it knows, whole and with their sums right; a file without a
// floor is read as before.
func TestCheckpointFloorSavedAndRead(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	s.floorFn = func() []uint64 { order = append(order, "floor"); return []uint64{5, 7} }
	s.set(fileKey{1, 2}, "/l/a.log", fingerprint{256, 9}, 1000, tailSum{256, 8}, 42)
	s.set(fileKey{1, 3}, "/l/b.log", fingerprint{10, 9}, 10, tailSum{10, 8}, 0)
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "checkpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["version"]) != "1" {
		t.Fatalf("version %s: the format stays 1 (new fields are ignored by older versions)", raw["version"])
	}
	if f := strings.Join(strings.Fields(string(raw["buffer_floor"])), ""); f != "[5,7]" {
		t.Fatalf("buffer_floor %s", f)
	}
	// The entries hold only the fields an older version knows: its sums
	// are computed over them.
	var entries []map[string]any
	if err := json.Unmarshal(raw["files"], &entries); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"dev": true, "ino": true, "fp_len": true, "fp": true, "offset": true, "path": true, "tail_len": true, "tail_fp": true, "sum": true}
	for _, e := range entries {
		for f := range e {
			if !known[f] {
				t.Fatalf("entry field %q: an older version's sum would not match", f)
			}
		}
	}
	// What an older version does: decode into its struct (no floor, no
	// chains) and check every sum.
	var old struct {
		Version int          `json:"version"`
		SavedAt int64        `json:"saved_at_unix_nano"`
		Files   []checkpoint `json:"files"`
	}
	if err := json.Unmarshal(b, &old); err != nil || old.Version != 1 || len(old.Files) != 2 {
		t.Fatalf("an older version reads %+v, %v", old, err)
	}
	if _, _, trusted, err := parseCheckpoints(b); err != nil || !trusted[0] || !trusted[1] {
		t.Fatalf("parse: %v %v", trusted, err)
	}
	s2, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s2.recovered != nil || fmt.Sprint(s2.floor) != "[5 7]" {
		t.Fatalf("reopened: floor %v, recovered %v", s2.floor, s2.recovered)
	}
	if c, _ := s2.get(fileKey{1, 2}); c.origin != 42 || c.Offset != 1000 {
		t.Fatalf("reopened entry %+v", c)
	}
	if c, _ := s2.get(fileKey{1, 3}); c.origin != 0 {
		t.Fatalf("entry without a chain got %d", c.origin)
	}
	// A file of an older version: no floor, no chains; read whole.
	delete(raw, "buffer_floor")
	delete(raw, "origins")
	b, _ = json.Marshal(raw)
	if err := os.WriteFile(filepath.Join(dir, "checkpoints.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	s3, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s3.recovered != nil || s3.floor != nil || len(s3.m) != 2 || s3.maxOrigin() != 0 {
		t.Fatalf("older file: floor %v, %d entries, recovered %v", s3.floor, len(s3.m), s3.recovered)
	}
}

// posEmitter is a testEmitter that keeps the chunks' sources the way the
// pipeline does (pipeline.Positions): one partition, a record per chunk.
type posEmitter struct {
	*testEmitter
	mu      sync.Mutex
	records [][]byte // the source of each chunk (nil: none), by offset
	pending map[uint64]bool
	from    [][]uint64 // what Sources was asked for
}

func newPosEmitter(t testing.TB, records [][]byte) *posEmitter {
	return &posEmitter{testEmitter: newEmitter(t), records: records, pending: map[uint64]bool{}}
}

func (e *posEmitter) Emit(ctx context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	e.mu.Lock()
	off := uint64(len(e.records))
	e.records = append(e.records, append([]byte(nil), c.Source...))
	e.pending[off] = true
	e.mu.Unlock()
	return e.testEmitter.Emit(ctx, c, func(err error) {
		ack(err)
		e.mu.Lock()
		delete(e.pending, off)
		e.mu.Unlock()
	})
}

func (e *posEmitter) Floor() []uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := uint64(len(e.records))
	for off := range e.pending {
		f = min(f, off)
	}
	return []uint64{f}
}

func (e *posEmitter) Sources(_ context.Context, from []uint64, fn func(int, uint64, []byte) error) error {
	e.mu.Lock()
	e.from = append(e.from, from)
	recs := append([][]byte(nil), e.records...)
	e.mu.Unlock()
	start := uint64(0)
	if len(from) > 0 {
		start = from[0]
	}
	for off := start; off < uint64(len(recs)); off++ {
		if len(recs[off]) > 0 {
			if err := fn(0, off, recs[off]); err != nil {
				return err
			}
		}
	}
	return nil
}

// startWith starts an input of h's config with emitter e.
func startWith(t *testing.T, h *harness, e pipeline.Emitter) *Input {
	t.Helper()
	set := pipeline.Settings{Name: "tail.test", Type: "tail", DataDir: h.data, Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), Metrics: pipeline.NopMetrics(pipeline.KindInput, "tail.test")}
	in, err := New(set, h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Stop(context.Background()) })
	return in
}

// lagCheckpoint rewrites the checkpoint file as it was when only the
// first `lines` lines of a.log were acknowledged and saved (a SIGKILL
// came before the next save), with floor (nil: a file without one).
func lagCheckpoint(t *testing.T, h *harness, content []byte, lines int, floor []uint64) int64 {
	t.Helper()
	p := filepath.Join(h.data, "input", "tail.test", "checkpoints.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var cf checkpointFile
	if err := json.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	off := int64(0)
	for range lines {
		off += int64(bytes.IndexByte(content[off:], '\n') + 1)
	}
	for i := range cf.Files {
		c := &cf.Files[i]
		c.Offset = off
		ts := tailSumOf(content[:off])
		c.TailLen, c.TailFP = ts.n, ts.sum
		c.Sum = c.checksum()
	}
	cf.Floor = floor
	b, _ = json.Marshal(&cf)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return off
}

// TestPositionsOverrideCheckpoint: after a kill, the positions stored with
// the chunks after the saved floor override the older checkpoint: nothing
// is read again. Without the floor in the file every record is looked at,
// with the same result; with an emitter that keeps no positions, the lines
// after the checkpoint are read again, as before.
func TestPositionsOverrideCheckpoint(t *testing.T) {
	for _, mode := range []string{"floor", "no floor", "no positions"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.Batch.MaxEvents = 7 })
			content := []byte(lines("a", 0, 100))
			appendFile(t, h.path("a.log"), string(content))
			e := newPosEmitter(t, nil)
			in := startWith(t, h, e)
			testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(e.logs(), want("a", 0, 100)) })
			if err := in.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, r := range e.records {
				if len(r) == 0 {
					t.Fatal("a chunk without its source position")
				}
			}
			if f := readCheckpointFile(t, h).Floor; len(f) != 1 || f[0] > uint64(len(e.records)) || f[0] == 0 {
				t.Fatalf("floor saved at stop %v, want one at most %d", f, len(e.records))
			}
			var floor []uint64
			if mode == "floor" {
				floor = []uint64{2} // chunks 0 and 1 (14 lines) were acked before the save
			}
			off := lagCheckpoint(t, h, content, 14, floor)

			var e2 pipeline.Emitter
			var got func() []string
			switch mode {
			case "no positions":
				te := newEmitter(t)
				e2, got = te, te.logs
			default:
				pe := newPosEmitter(t, e.records)
				e2, got = pe, pe.logs
				defer func() {
					if mode == "floor" && fmt.Sprint(pe.from) != "[[2]]" || mode == "no floor" && fmt.Sprint(pe.from) != "[[]]" {
						t.Errorf("Sources asked from %v", pe.from)
					}
				}()
			}
			in2 := startWith(t, h, e2)
			appendFile(t, h.path("a.log"), lines("a", 100, 110))
			testutil.CheckFor(t, 5*time.Second, func() error {
				if l := got(); len(l) == 0 || l[len(l)-1] != "a-000109" {
					return fmt.Errorf("not read to the end: %v", l)
				}
				return nil
			})
			if mode == "no positions" {
				if err := exactlyOnce(got(), want("a", 14, 110)); err != nil {
					t.Fatalf("without positions the lines after the checkpoint are read again: %v", err)
				}
				return
			}
			if err := exactlyOnce(got(), want("a", 100, 110)); err != nil {
				t.Fatalf("read again after the recovery: %v", err)
			}
			r := in2.recovered
			if r.files != 1 || r.bytes != int64(len(content))-off || r.lines != 86 {
				t.Fatalf("recovered %+v, want 1 file, %d bytes, 86 lines", r, int64(len(content))-off)
			}
		})
	}
}

func readCheckpointFile(t *testing.T, h *harness) checkpointFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.data, "input", "tail.test", "checkpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cf checkpointFile
	if err := json.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	return cf
}

// TestPositionsOfAContentGone: the newest position is for a content the
// file no longer has (truncated and written again while stopped, with the
// same first bytes and past the position; or other first bytes): the
// checks at open treat it as they treat a checkpoint, and the file is read
// from its start.
func TestPositionsOfAContentGone(t *testing.T) {
	for _, sameHead := range []bool{true, false} {
		t.Run(fmt.Sprintf("same head %v", sameHead), func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.Batch.MaxEvents = 7 })
			content := lines("a", 0, 50)
			appendFile(t, h.path("a.log"), content)
			e := newPosEmitter(t, nil)
			in := startWith(t, h, e)
			testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(e.logs(), want("a", 0, 50)) })
			if err := in.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			lagCheckpoint(t, h, []byte(content), 7, []uint64{1})
			// Rewritten while stopped, longer than before.
			var next string
			if sameHead {
				next = lines("a", 0, 40) + lines("b", 40, 80) // the first 256 bytes too
			} else {
				next = lines("b", 0, 80)
			}
			if err := os.WriteFile(h.path("a.log"), []byte(next), 0o644); err != nil {
				t.Fatal(err)
			}
			e2 := newPosEmitter(t, e.records)
			in2 := startWith(t, h, e2)
			if in2.recovered.files != 1 {
				t.Fatalf("recovered %+v: the positions were applied", in2.recovered)
			}
			var w []string
			if sameHead {
				w = append(want("a", 0, 40), want("b", 40, 80)...)
			} else {
				w = want("b", 0, 80)
			}
			testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(e2.logs(), w) })
			got := e2.logs()
			sort.Strings(got)
			if len(got) != len(w) {
				t.Fatalf("got %d lines, want %d", len(got), len(w))
			}
		})
	}
}

// BenchmarkAppendSource is the cost a chunk pays for its source position
// (a chunk holds up to batch.max_events events, 1000 by default).
func BenchmarkAppendSource(b *testing.B) {
	s := testSource()
	var buf []byte
	for i := 0; i < b.N; i++ {
		s.seq++
		buf = appendSource(buf[:0], &s)
	}
	b.SetBytes(int64(len(buf)))
}
