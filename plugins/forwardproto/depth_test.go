package forwardproto

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

// nestedRecord is a map {"k": [[[ ... 1 ... ]]]} nesting depth levels in
// all, the map counting as one.
func nestedRecord(depth int) []byte {
	b := []byte{0x81, 0xa1, 'k'}
	b = append(b, bytes.Repeat([]byte{0x91}, depth-1)...)
	return append(b, 0x01)
}

// TestNestingDepthBounded: an event nested deeper than MaxDepth is dropped
// and counted in TooDeep, in every mode, and the events around it are kept;
// a record at the limit is kept. A million levels cost linear time.
func TestNestingDepthBounded(t *testing.T) {
	tm := marshal(t, 1700000000)
	good := rawEntry(t, tm, marshal(t, map[string]any{"ok": 1}))
	const limit = 10
	for _, depth := range []int{limit, limit + 1, 1000, 1 << 20} {
		deep := rawEntry(t, tm, nestedRecord(depth))
		entries := cat(good, deep, good)
		cases := map[string][]byte{
			"PackedForward": frame(t, "t", binOf(t, entries), map[string]any{"chunk": "c"}),
			"gzip":          frame(t, "t", binOf(t, gzipStd(t, entries)), map[string]any{"compressed": "gzip"}),
			"Forward":       frame(t, "t", []msgpack.RawMessage{good, deep, good}),
			"Message":       cat(frame(t, "t", 1, msgpack.RawMessage(marshal(t, map[string]any{"ok": 1}))), frame(t, "t", 1, msgpack.RawMessage(nestedRecord(depth))), frame(t, "t", 1, msgpack.RawMessage(marshal(t, map[string]any{"ok": 1})))),
		}
		if depth < 1000 {
			cases["JSON"] = []byte(`["t",[[1,{"ok":1}],[1,{"k":` + strings.Repeat("[", depth-1) + "1" + strings.Repeat("]", depth-1) + `}],[1,{"ok":1}]]]`)
		}
		for name, f := range cases {
			t.Run(fmt.Sprintf("%s/depth=%d", name, depth), func(t *testing.T) {
				start := time.Now()
				got, err := decodeAll(t, bytes.NewReader(f), Limits{MaxDepth: limit, MaxFrameBytes: 4 << 20})
				if err != nil {
					t.Fatal(err)
				}
				if el := time.Since(start); el > 2*time.Second {
					t.Errorf("took %v", el)
				}
				count, dropped := 0, 0
				for _, s := range got {
					count += s.Count
					dropped += s.Dropped
					for _, e := range entriesOf(t, []byte(s.Entries)) {
						if e.Rec != string(marshal(t, map[string]any{"ok": 1})) && depth > limit {
							t.Fatalf("kept %x", e.Rec)
						}
					}
				}
				wantCount, wantDropped := 2, 1
				if depth <= limit {
					wantCount, wantDropped = 3, 0
				}
				if count != wantCount || dropped != wantDropped {
					t.Fatalf("count %d dropped %d, want %d %d", count, dropped, wantCount, wantDropped)
				}
			})
		}
	}
	// TooDeep says why.
	d := newTestDecoder(bytes.NewReader(frame(t, "t", binOf(t, cat(good, rawEntry(t, tm, nestedRecord(1<<20)))))), Limits{MaxFrameBytes: 4 << 20})
	req, err := d.Next()
	if err != nil || req.Count != 1 || req.Dropped != 1 || req.TooDeep != 1 {
		t.Fatalf("%+v %v", req, err)
	}
	// A JSON frame far deeper than the limit is malformed (the transcoder
	// recurses, so it stops).
	_, err = decodeAll(t, strings.NewReader(`["t",1,{"k":`+strings.Repeat("[", 5000)+strings.Repeat("]", 5000)+`}]`), Limits{})
	wantErr(t, err, ErrMalformed)
}

// TestSkipDepthMatchesSkipValue: skipDepth measures values as
// mpack.SkipValue does, and counts levels right.
func TestSkipDepthMatchesSkipValue(t *testing.T) {
	stack := make([]int, 64)
	values := [][]byte{
		marshal(t, map[string]any{"a": []any{1, "x", 2.5, nil, true, map[string]any{"b": []byte{1, 2}}}}),
		marshal(t, []any{}), marshal(t, map[string]any{}), marshal(t, "s"),
		marshal(t, mpack.EventTime{Sec: 1}), marshal(t, strings.Repeat("x", 70000)),
		marshal(t, make([]any, 70000)), nestedRecord(5),
	}
	for _, tf := range timeForms(t) {
		values = append(values, tf.raw)
	}
	values = append(values, testRecords(t)...)
	for i, v := range values {
		want, err := mpack.SkipValue(v)
		if err != nil {
			t.Fatal(err)
		}
		got, deep, err := skipDepth(append(v, 0x01), 64, stack)
		if err != nil || deep || got != want {
			t.Fatalf("value %d: %d %v %v, want %d", i, got, deep, err, want)
		}
		for _, max := range []int{1, 64} {
			got, deep, err = skipRecord(append(v, 0x01), max, stack)
			_, wantDeep, _ := skipDepth(v, max, stack)
			if err != nil || deep != wantDeep || (!deep && got != want) {
				t.Fatalf("value %d, skipRecord(%d): %d %v %v, want %d", i, max, got, deep, err, want)
			}
		}
		if _, _, err := skipDepth(v[:len(v)-1], 64, stack); !errors.Is(err, mpack.ErrShortBuffer) {
			t.Fatalf("value %d truncated: %v", i, err)
		}
	}
	for _, c := range []struct{ depth, max int }{{1, 1}, {2, 1}, {5, 5}, {6, 5}} {
		_, deep, err := skipDepth(nestedRecord(c.depth), c.max, stack)
		if err != nil || deep != (c.depth > c.max) {
			t.Fatalf("%+v: deep %v %v", c, deep, err)
		}
		_, deep, err = skipRecord(nestedRecord(c.depth), c.max, stack)
		if err != nil || deep != (c.depth > c.max) {
			t.Fatalf("skipRecord %+v: deep %v %v", c, deep, err)
		}
	}
	// Many maps side by side are not deep.
	wide := marshal(t, map[string]any{"a": []any{map[string]any{}, map[string]any{}, map[string]any{}, []any{}, []any{1}}})
	if n, deep, err := skipRecord(wide, 3, stack); err != nil || deep || n != len(wide) {
		t.Fatalf("wide record: %d %v %v", n, deep, err)
	}
	// An empty container one level too deep counts.
	if _, deep, _ := skipDepth([]byte{0x81, 0xa1, 'k', 0x90}, 1, stack); !deep {
		t.Fatal("empty array at level 2 passed a limit of 1")
	}
}

// tinyBomb is gzip of n entries [1, {}], 3 bytes each.
func tinyBomb(t testing.TB, n int) []byte {
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	chunk := bytes.Repeat([]byte{0x92, 0x01, 0x80}, 100000)
	for i := 0; i < n; i += 100000 {
		_, _ = w.Write(chunk)
	}
	_ = w.Close()
	return gz.Bytes()
}

// TestTooManyEntries: a 30 KB gzip request inflating to ten million tiny
// events is refused with ErrTooManyEntries, in bounded memory, and the error
// is final; MaxEntries events pass.
func TestTooManyEntries(t *testing.T) {
	bomb := frame(t, "t", binOf(t, tinyBomb(t, 10_000_000)), map[string]any{"compressed": "gzip", "chunk": "x"})
	if len(bomb) > 64<<10 {
		t.Fatalf("bomb of %d bytes", len(bomb))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d := newTestDecoder(bytes.NewReader(bomb), Limits{})
	_, err := d.Next()
	runtime.ReadMemStats(&after)
	wantErr(t, err, ErrTooManyEntries)
	if _, err2 := d.Next(); err2 != err {
		t.Fatalf("not final: %v", err2)
	}
	// Inflated within MaxDecompressedBytes, grown by doubling.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2*DefaultMaxDecompressedBytes+4<<20 {
		t.Errorf("allocated %d MiB", alloc>>20)
	}
	ok := frame(t, "t", binOf(t, bytes.Repeat([]byte{0x92, 0x01, 0x80}, 1000)))
	if got, err := decodeAll(t, bytes.NewReader(ok), Limits{MaxEntries: 1000}); err != nil || got[0].Count != 1000 {
		t.Fatal(err)
	}
	_, err = decodeAll(t, bytes.NewReader(ok), Limits{MaxEntries: 999})
	wantErr(t, err, ErrTooManyEntries)
}

// TestRewriteGrowthBounded: entries that grow when rewritten (a time of 0
// becomes a 10-byte EventTime) are bounded by MaxDecompressedBytes too.
func TestRewriteGrowthBounded(t *testing.T) {
	entries := bytes.Repeat([]byte{0x92, 0x00, 0x80}, 10000) // 30 KB, 120 KB rewritten
	f := frame(t, "t", binOf(t, entries))
	if got, err := decodeAll(t, bytes.NewReader(f), Limits{MaxDecompressedBytes: 121000}); err != nil || got[0].Count != 10000 {
		t.Fatal(err)
	}
	_, err := decodeAll(t, bytes.NewReader(f), Limits{MaxDecompressedBytes: 100000})
	wantErr(t, err, ErrDecompressedTooLarge)
}

// TestChunkIDTooLong: a chunk option longer than MaxChunkIDBytes is
// malformed.
func TestChunkIDTooLong(t *testing.T) {
	good := entriesN(t, 1)
	if _, err := decodeAll(t, bytes.NewReader(frame(t, "t", binOf(t, good), map[string]any{"chunk": strings.Repeat("c", MaxChunkIDBytes)})), Limits{}); err != nil {
		t.Fatal(err)
	}
	_, err := decodeAll(t, bytes.NewReader(frame(t, "t", binOf(t, good), map[string]any{"chunk": strings.Repeat("c", MaxChunkIDBytes+1)})), Limits{})
	wantErr(t, err, ErrMalformed)
}

// TestHandshakeBytesBounded: a PING larger than MaxHandshakeBytes fails as
// soon as its headers prove it.
func TestHandshakeBytesBounded(t *testing.T) {
	ping := marshal(t, []any{"PING", strings.Repeat("h", 10000), "salt", "digest", "", ""})
	cr := &countingReader{r: io.MultiReader(bytes.NewReader(ping), zeros{})}
	_, err := newTestDecoder(cr, Limits{}).NextPing()
	wantErr(t, err, ErrFrameTooLarge)
	if cr.n > initialBuffer {
		t.Fatalf("read %d bytes", cr.n)
	}
	ping = marshal(t, []any{"PING", "host", "salt", strings.Repeat("a", 128), "", ""})
	if _, err := newTestDecoder(bytes.NewReader(ping), Limits{}).NextPing(); err != nil {
		t.Fatal(err)
	}
}

// fakeMemory records what a decoder reports.
type fakeMemory struct {
	n, peak int
	calls   int
	fail    error
}

func (m *fakeMemory) Resize(n int) error {
	m.calls++
	if n > m.n && m.fail != nil {
		return m.fail
	}
	m.n = n
	m.peak = max(m.peak, n)
	return nil
}

// TestMemoryAccounted: every buffer growth is reported before it happens,
// the buffers are released once the stream is idle, and a refusal is final.
func TestMemoryAccounted(t *testing.T) {
	big := entriesN(t, 5000)
	f := cat(frame(t, "t", binOf(t, gzipStd(t, big)), map[string]any{"compressed": "gzip"}), frame(t, "t", binOf(t, big)))
	m := &fakeMemory{}
	// Two reads: the stream goes idle after them.
	r := &splitReader{parts: [][]byte{f, frame(t, "t", 1, map[string]any{"a": 1})}}
	d := newTestDecoder(r, Limits{Memory: m})
	for range 2 {
		if _, err := d.Next(); err != nil {
			t.Fatal(err)
		}
		if m.n != max(0, d.footprint()-IdleBytes) {
			t.Fatalf("told %d, holds %d", m.n, d.footprint())
		}
	}
	if m.peak < len(big) {
		t.Fatalf("peak %d for %d bytes of entries", m.peak, len(big))
	}
	if _, err := d.Next(); err != nil { // after an idle wait
		t.Fatal(err)
	}
	if m.n != 0 || d.footprint() > IdleBytes {
		t.Fatalf("idle decoder holds %d, told %d", d.footprint(), m.n)
	}
	refuse := errors.New("no memory")
	d = newTestDecoder(bytes.NewReader(frame(t, "t", binOf(t, big))), Limits{Memory: &fakeMemory{fail: refuse}})
	_, err := d.Next()
	wantErr(t, err, refuse)
	if _, err2 := d.Next(); !errors.Is(err2, refuse) {
		t.Fatalf("not final: %v", err2)
	}
}

// TestZstdWindowBounded: the zstd decoder's window is accounted and capped
// at 8 MiB (a frame asking for more fails), and it is dropped with the
// other buffers once the stream is idle.
func TestZstdWindowBounded(t *testing.T) {
	var big bytes.Buffer
	w, err := zstd.NewWriter(&big, zstd.WithWindowSize(32<<20), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	entries := entriesN(t, 100)
	for big.Len() == 0 || w.Close() != nil {
		_, _ = w.Write(entries)
	}
	f := frame(t, "t", binOf(t, big.Bytes()), map[string]any{"compressed": "zstd"})
	_, err = decodeAll(t, bytes.NewReader(f), Limits{})
	wantErr(t, err, ErrDecompressedTooLarge)

	m := &fakeMemory{}
	ok := frame(t, "t", binOf(t, zstdOf(t, entries)), map[string]any{"compressed": "zstd"})
	d := newTestDecoder(&splitReader{parts: [][]byte{ok, ok}}, Limits{Memory: m})
	if req, err := d.Next(); err != nil || req.Count != 100 {
		t.Fatal(err)
	}
	if m.n < zstdMaxWindow {
		t.Fatalf("zstd window not accounted: %d", m.n)
	}
	if _, err := d.Next(); err != nil { // a new zstd decoder after an idle wait
		t.Fatal(err)
	}
	if _, err := d.Next(); err != io.EOF {
		t.Fatal(err)
	}
	if d.zd != nil || m.n != 0 {
		t.Fatalf("idle decoder keeps its zstd decoder (told %d)", m.n)
	}
}

// TestMemoryFollowsArrivedBytes: a header claiming a 16 MiB frame does not
// make the decoder reserve 16 MiB: its buffer grows as bytes arrive.
func TestMemoryFollowsArrivedBytes(t *testing.T) {
	head := []byte{0x92, 0xa1, 't', 0xc6, 0x00, 0xff, 0xff, 0x00} // bin32 of ~16 MiB
	m := &fakeMemory{}
	d := newTestDecoder(&flakyReader{parts: [][]byte{cat(head, make([]byte, 100<<10)), nil}}, Limits{Memory: m})
	if _, err := d.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
	if m.peak > 256<<10 || len(d.buf) > 256<<10 {
		t.Fatalf("%d bytes reserved, %d buffered, for 100 KiB received", m.peak, len(d.buf))
	}
}
