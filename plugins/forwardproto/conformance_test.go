package forwardproto

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

// timeForm is one way a peer sends an event's time.
type timeForm struct {
	name string
	raw  []byte          // the time as it travels
	want mpack.EventTime // as stored (fixedNow for "now")
	keep bool            // stored as received
}

func eventTimeBytes(sec, nsec uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, sec), nsec)
}

func timeForms(t testing.TB) []timeForm {
	e := func(fn func(e *msgpack.Encoder) error) []byte { return enc(t, fn) }
	et := mpack.EventTime{Sec: 1700000000, Nsec: 123456789}
	fixext8 := e(func(e *msgpack.Encoder) error {
		if err := e.EncodeExtHeader(0, 8); err != nil {
			return err
		}
		_, err := e.Writer().Write(eventTimeBytes(et.Sec, et.Nsec))
		return err
	})
	ext8 := append([]byte{0xc7, 0x08, 0x00}, eventTimeBytes(et.Sec, et.Nsec)...)
	meta := marshal(t, map[string]any{"trace_id": "abc", "otlp": map[string]any{"k": 1}})
	return []timeForm{
		{"fixint", e(func(e *msgpack.Encoder) error { return e.EncodeUint(100) }), mpack.EventTime{Sec: 100}, true},
		{"uint8", e(func(e *msgpack.Encoder) error { return e.EncodeUint8(200) }), mpack.EventTime{Sec: 200}, true},
		{"uint16", e(func(e *msgpack.Encoder) error { return e.EncodeUint16(60000) }), mpack.EventTime{Sec: 60000}, true},
		{"uint32", e(func(e *msgpack.Encoder) error { return e.EncodeUint32(1700000000) }), mpack.EventTime{Sec: 1700000000}, true},
		{"uint64", e(func(e *msgpack.Encoder) error { return e.EncodeUint64(1700000000) }), mpack.EventTime{Sec: 1700000000}, true},
		{"int8", e(func(e *msgpack.Encoder) error { return e.EncodeInt8(100) }), mpack.EventTime{Sec: 100}, true},
		{"int16", e(func(e *msgpack.Encoder) error { return e.EncodeInt16(30000) }), mpack.EventTime{Sec: 30000}, true},
		{"int32", e(func(e *msgpack.Encoder) error { return e.EncodeInt32(1700000000) }), mpack.EventTime{Sec: 1700000000}, true},
		{"int64", e(func(e *msgpack.Encoder) error { return e.EncodeInt64(1700000000) }), mpack.EventTime{Sec: 1700000000}, true},
		{"float32", e(func(e *msgpack.Encoder) error { return e.EncodeFloat32(1.5) }), mpack.EventTime{Sec: 1, Nsec: 500000000}, false},
		{"float32 large", e(func(e *msgpack.Encoder) error { return e.EncodeFloat32(1700000000) }), mpack.EventTime{Sec: 1700000000}, false},
		{"float64", e(func(e *msgpack.Encoder) error { return e.EncodeFloat64(1700000000.25) }), mpack.EventTime{Sec: 1700000000, Nsec: 250000000}, false},
		{"EventTime fixext8", fixext8, et, true},
		{"EventTime ext8", ext8, et, true},
		{"EventTime via pipeline type", marshal(t, et), et, true},
		{"[EventTime, metadata]", marshal(t, []msgpack.RawMessage{fixext8, meta}), et, false},
		{"[int, metadata]", marshal(t, []any{1700000000, map[string]any{}}), mpack.EventTime{Sec: 1700000000}, false},
		{"[nil, metadata]", marshal(t, []any{nil, map[string]any{"a": 1}}), fixedNow, false},
		{"timestamp ext -1 32-bit", e(func(e *msgpack.Encoder) error { return e.EncodeTime(time.Unix(1700000000, 0)) }), mpack.EventTime{Sec: 1700000000}, false},
		{"timestamp ext -1 64-bit", e(func(e *msgpack.Encoder) error { return e.EncodeTime(time.Unix(1700000000, 5)) }), mpack.EventTime{Sec: 1700000000, Nsec: 5}, false},
		{"timestamp ext -1 96-bit", e(func(e *msgpack.Encoder) error { return e.EncodeTime(time.Unix(1<<35, 7)) }), mpack.EventTime{Sec: math.MaxUint32}, false},
		{"nil is now", []byte{0xc0}, fixedNow, false},
		{"0 is now", []byte{0x00}, fixedNow, false},
		{"uint32 0 is now", e(func(e *msgpack.Encoder) error { return e.EncodeUint32(0) }), fixedNow, false},
		{"float 0 is now", e(func(e *msgpack.Encoder) error { return e.EncodeFloat64(0) }), fixedNow, false},
		{"EventTime 0 is now", append([]byte{0xd7, 0x00}, make([]byte, 8)...), fixedNow, false},
		{"negative is now", e(func(e *msgpack.Encoder) error { return e.EncodeInt(-5) }), fixedNow, false},
	}
}

// testRecords are records of a few shapes: fixmap, nested, map16.
func testRecords(t testing.TB) [][]byte {
	big := map[string]any{}
	for i := range 20 {
		big[fmt.Sprintf("key%02d", i)] = strings.Repeat("v", i)
	}
	return [][]byte{
		marshal(t, map[string]any{"message": "hello"}),
		marshal(t, map[string]any{"log": "GET /index.html 200", "kubernetes": map[string]any{"pod": "web-1", "labels": []any{"a", 1, 2.5, true, nil}}}),
		marshal(t, big),
	}
}

type modeCase struct {
	name string
	mode Mode
	comp Compression
	// build makes the stream for entries (each [time, record]) and chunk.
	build func(t testing.TB, times, recs [][]byte, entries []byte, chunk string) []byte
}

func modeCases() []modeCase {
	opt := func(chunk string, extra ...any) map[string]any {
		m := map[string]any{"chunk": chunk}
		for i := 0; i < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}
	packed := func(wrap func(testing.TB, []byte) msgpack.RawMessage, comp func(testing.TB, []byte) []byte, name string) func(t testing.TB, times, recs [][]byte, entries []byte, chunk string) []byte {
		return func(t testing.TB, times, recs [][]byte, entries []byte, chunk string) []byte {
			if comp != nil {
				entries = comp(t, entries)
			}
			o := opt(chunk, "size", len(recs))
			if name != "" {
				o["compressed"] = name
			}
			return frame(t, "app.log", wrap(t, entries), o)
		}
	}
	return []modeCase{
		{"Message/3", ModeMessage, CompressNone, func(t testing.TB, times, recs [][]byte, _ []byte, _ string) []byte {
			var out []byte
			for i := range recs {
				out = append(out, frame(t, "app.log", msgpack.RawMessage(times[i]), msgpack.RawMessage(recs[i]))...)
			}
			return out
		}},
		{"Message/4", ModeMessage, CompressNone, func(t testing.TB, times, recs [][]byte, _ []byte, chunk string) []byte {
			var out []byte
			for i := range recs {
				out = append(out, frame(t, "app.log", msgpack.RawMessage(times[i]), msgpack.RawMessage(recs[i]), opt(chunk))...)
			}
			return out
		}},
		{"Forward", ModeForward, CompressNone, func(t testing.TB, times, recs [][]byte, _ []byte, chunk string) []byte {
			var es []msgpack.RawMessage
			for i := range recs {
				es = append(es, rawEntry(t, times[i], recs[i]))
			}
			return frame(t, "app.log", es, opt(chunk))
		}},
		{"Forward/no option", ModeForward, CompressNone, func(t testing.TB, times, recs [][]byte, _ []byte, _ string) []byte {
			var es []msgpack.RawMessage
			for i := range recs {
				es = append(es, rawEntry(t, times[i], recs[i]))
			}
			return frame(t, "app.log", es)
		}},
		{"PackedForward/bin", ModePackedForward, CompressNone, packed(binOf, nil, "")},
		{"PackedForward/str", ModePackedForward, CompressNone, packed(strOf, nil, "")},
		{"PackedForward/text", ModePackedForward, CompressNone, packed(binOf, nil, "text")},
		{"CompressedPackedForward/gzip/bin", ModeCompressedPackedForward, CompressGzip, packed(binOf, gzipStd, "gzip")},
		{"CompressedPackedForward/gzip/str", ModeCompressedPackedForward, CompressGzip, packed(strOf, gzipStd, "gzip")},
		{"CompressedPackedForward/zstd/bin", ModeCompressedPackedForward, CompressZstd, packed(binOf, zstdOf, "zstd")},
		{"CompressedPackedForward/zstd/str", ModeCompressedPackedForward, CompressZstd, packed(strOf, zstdOf, "zstd")},
	}
}

// TestModesTimeForms runs every mode with every time form and both entries
// encodings, and checks the stored entries: times normalised, records
// untouched, entries that need no change kept byte for byte.
func TestModesTimeForms(t *testing.T) {
	recs := testRecords(t)
	for _, mc := range modeCases() {
		for _, tf := range timeForms(t) {
			t.Run(mc.name+"/"+tf.name, func(t *testing.T) {
				times := make([][]byte, len(recs))
				var entries []byte
				for i := range recs {
					times[i] = tf.raw
					entries = append(entries, rawEntry(t, tf.raw, recs[i])...)
				}
				chunk := "c2VuZGVyAAEAAAAAAAAAKg=="
				got := mustDecodeAll(t, mc.build(t, times, recs, entries, chunk))
				var all []entryOut
				count := 0
				for _, s := range got {
					if s.Mode != mc.mode || s.Comp != mc.comp || s.Tag != "app.log" || s.Dropped != 0 || s.JSON {
						t.Fatalf("request %+v", s)
					}
					if strings.HasSuffix(mc.name, "/3") || strings.HasSuffix(mc.name, "no option") {
						if s.HasChunk {
							t.Fatal("a request without chunk option reports one")
						}
					} else if !s.HasChunk || s.Chunk != chunk {
						t.Fatalf("chunk %q %v, want %q", s.Chunk, s.HasChunk, chunk)
					}
					count += s.Count
					all = append(all, entriesOf(t, []byte(s.Entries))...)
				}
				if count != len(recs) || len(all) != len(recs) {
					t.Fatalf("count %d, entries %d, want %d", count, len(all), len(recs))
				}
				for i, e := range all {
					if e.T != tf.want {
						t.Errorf("event %d: time %v, want %v", i, e.T, tf.want)
					}
					if e.Rec != string(recs[i]) {
						t.Errorf("event %d: record changed", i)
					}
				}
				if mc.mode != ModeMessage && tf.keep && len(got) == 1 && got[0].Entries != string(entries) {
					t.Errorf("entries that need no change were rewritten")
				}
				if !tf.keep && len(got) == 1 {
					want := ""
					for i := range recs {
						want += string(mpack.AppendEntry(nil, tf.want, recs[i]))
					}
					if tf.name == "[int, metadata]" {
						want = ""
						for i := range recs {
							want += string(rawEntry(t, marshal(t, 1700000000), recs[i]))
						}
					}
					if got[0].Entries != want {
						t.Errorf("rewritten entries\n got %x\nwant %x", got[0].Entries, want)
					}
				}
			})
		}
	}
}

// TestMixedEntriesRewriteOnlyWhatNeedsIt: in a PackedForward whose entries
// mostly need no change, only the others are rewritten.
func TestMixedEntriesRewriteOnlyWhatNeedsIt(t *testing.T) {
	recs := testRecords(t)
	good := rawEntry(t, marshal(t, mpack.EventTime{Sec: 1700000000, Nsec: 1}), recs[1])
	fb := rawEntry(t, marshal(t, []any{mpack.EventTime{Sec: 1700000001}, map[string]any{"m": 1}}), recs[0])
	fl := rawEntry(t, enc(t, func(e *msgpack.Encoder) error { return e.EncodeFloat64(1700000002.5) }), recs[2])
	entries := cat(good, fb, good, good, fl, good)
	got := mustDecodeAll(t, frame(t, "t", binOf(t, entries)))
	want := cat(good,
		mpack.AppendEntry(nil, mpack.EventTime{Sec: 1700000001}, recs[0]),
		good, good,
		mpack.AppendEntry(nil, mpack.EventTime{Sec: 1700000002, Nsec: 500000000}, recs[2]),
		good)
	if len(got) != 1 || got[0].Entries != string(want) || got[0].Count != 6 {
		t.Fatalf("got %+v", got)
	}
}

// TestPassThroughIsZeroCopy: PackedForward entries that need no change are
// returned as a slice of the decoder's read buffer.
func TestPassThroughIsZeroCopy(t *testing.T) {
	recs := testRecords(t)
	entries := cat(rawEntry(t, marshal(t, mpack.EventTime{Sec: 1700000000}), recs[0]), rawEntry(t, marshal(t, 1700000000), recs[1]))
	d := newTestDecoder(bytes.NewReader(frame(t, "t", binOf(t, entries), map[string]any{})), Limits{})
	req, err := d.Next()
	if err != nil {
		t.Fatal(err)
	}
	if string(req.Entries) != string(entries) {
		t.Fatal("entries changed")
	}
	if &req.Entries[0] != &d.buf[bytes.Index(d.buf, entries)] {
		t.Fatal("entries were copied")
	}
}

func TestMultiMemberGzip(t *testing.T) {
	recs := testRecords(t)
	var entries, compressed []byte
	for i := range 9 {
		e := rawEntry(t, marshal(t, 1700000000+i), recs[i%3])
		entries = append(entries, e...)
		compressed = append(compressed, gzipStd(t, e)...) // one member per event
	}
	got := mustDecodeAll(t, frame(t, "t", binOf(t, compressed), map[string]any{"compressed": "gzip", "chunk": "x"}))
	if len(got) != 1 || got[0].Count != 9 || got[0].Entries != string(entries) || got[0].Mode != ModeCompressedPackedForward {
		t.Fatalf("got %+v", got)
	}
	// Empty compressed entries are zero events, not an error.
	got = mustDecodeAll(t, frame(t, "t", binOf(t, []byte{}), map[string]any{"compressed": "gzip"}))
	if len(got) != 1 || got[0].Count != 0 {
		t.Fatalf("got %+v", got)
	}
}

// TestAckEqualsChunk: the answer carries the chunk as received, in the
// request's encoding; fluentd's ids end in a newline (Base64.encode64).
func TestAckEqualsChunk(t *testing.T) {
	rec := testRecords(t)[0]
	for _, chunk := range []string{"c2VuZGVyAAEAAAAAAAAAKg==", "Wq3f8e2Oq1c5H9Z4P0V0sQ==\n", "", "with \"quotes\" and \\ and é"} {
		for _, asBin := range []bool{false, true} {
			c := msgpack.RawMessage(strOf(t, []byte(chunk)))
			if asBin {
				c = binOf(t, []byte(chunk))
			}
			got := mustDecodeAll(t, frame(t, "t", msgpack.RawMessage(marshal(t, 1)), msgpack.RawMessage(rec), map[string]msgpack.RawMessage{"chunk": c}))
			if len(got) != 1 || !got[0].HasChunk || got[0].Chunk != chunk {
				t.Fatalf("got %+v", got)
			}
			var ack map[string]string
			if err := msgpack.Unmarshal(AppendAck(nil, []byte(got[0].Chunk), false), &ack); err != nil || len(ack) != 1 || ack["ack"] != chunk {
				t.Fatalf("msgpack ack %v %v", ack, err)
			}
			if err := jsonUnmarshal(AppendAck(nil, []byte(chunk), true), &ack); err != nil || ack["ack"] != chunk {
				t.Fatalf("JSON ack %v %v", ack, err)
			}
		}
	}
}

// TestNoChunkNoAnswer: no chunk option (or a nil one) means HasChunk false.
func TestNoChunkNoAnswer(t *testing.T) {
	rec := msgpack.RawMessage(testRecords(t)[0])
	tm := msgpack.RawMessage(marshal(t, 1700000000))
	for name, b := range map[string][]byte{
		"3 elements":     frame(t, "t", tm, rec),
		"empty option":   frame(t, "t", tm, rec, map[string]any{}),
		"nil option":     frame(t, "t", tm, rec, nil),
		"nil chunk":      frame(t, "t", tm, rec, map[string]any{"chunk": nil}),
		"only size":      frame(t, "t", binOf(t, rawEntry(t, tm, rec)), map[string]any{"size": 1}),
		"forward no opt": frame(t, "t", []msgpack.RawMessage{rawEntry(t, tm, rec)}),
	} {
		got := mustDecodeAll(t, b)
		if len(got) != 1 || got[0].HasChunk || got[0].Count != 1 {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

// TestOptions: size is never rejected, whatever it holds (npm fluent-logger
// puts the byte length there); unknown keys are ignored.
func TestOptions(t *testing.T) {
	tm := marshal(t, 1700000000)
	rec := testRecords(t)[0]
	entries := cat(rawEntry(t, tm, rec), rawEntry(t, tm, rec))
	for name, opt := range map[string]any{
		"size is byte length": map[string]any{"size": len(entries), "chunk": "a"},
		"size huge":           map[string]any{"size": uint64(math.MaxUint64), "chunk": "a"},
		"size negative":       map[string]any{"size": -1, "chunk": "a"},
		"size string":         map[string]any{"size": "12", "chunk": "a"},
		"size map":            map[string]any{"size": map[string]any{"x": 1}, "chunk": "a"},
		"unknown keys": map[string]any{"chunk": "a", "fluent_signal": 1, "eventEntryDataSize": 10,
			"metadata": map[string]any{"k": []any{1, 2}}, "x": nil},
		"non-string key": map[any]any{7: "x", true: 1, "chunk": "a"},
		"compressed nil": map[string]any{"compressed": nil, "chunk": "a"},
	} {
		got := mustDecodeAll(t, frame(t, "t", binOf(t, entries), opt))
		if len(got) != 1 || got[0].Count != 2 || got[0].Chunk != "a" {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

// TestInvalidEventsDropped: events fluentd would drop are dropped and
// counted, the valid ones kept, the chunk still answered.
func TestInvalidEventsDropped(t *testing.T) {
	tm := marshal(t, 1700000000)
	rec := testRecords(t)[0]
	good := rawEntry(t, tm, rec)
	bad := [][]byte{
		rawEntry(t, tm, marshal(t, "not a map")),
		rawEntry(t, tm, []byte{0xc0}),
		rawEntry(t, tm, marshal(t, []any{1, 2})),
		marshal(t, 5),
		marshal(t, "entry"),
		marshal(t, []msgpack.RawMessage{tm, rec, rec}),
		marshal(t, []msgpack.RawMessage{tm}),
		rawEntry(t, marshal(t, "yesterday"), rec),
		rawEntry(t, marshal(t, []any{1, 2, 3}), rec),
		rawEntry(t, marshal(t, []any{[]any{1}, map[string]any{}}), rec),
		rawEntry(t, []byte{0xd6, 0x05, 0, 0, 0, 1}, rec), // ext 5 is not a time
	}
	entries := append([]byte(nil), good...)
	for _, b := range bad {
		entries = append(entries, b...)
		entries = append(entries, good...)
	}
	wantEntries := bytes.Repeat(good, len(bad)+1)
	for _, mc := range []struct {
		name string
		b    []byte
	}{
		{"PackedForward", frame(t, "t", binOf(t, entries), map[string]any{"chunk": "k"})},
		{"Forward", frame(t, "t", msgpack.RawMessage(cat([]byte{0xdc, 0, byte(2*len(bad) + 1)}, entries)), map[string]any{"chunk": "k"})},
	} {
		got := mustDecodeAll(t, mc.b)
		if len(got) != 1 || got[0].Count != len(bad)+1 || got[0].Dropped != len(bad) || got[0].Entries != string(wantEntries) || got[0].Chunk != "k" {
			t.Errorf("%s: %+v", mc.name, got)
		}
	}
	// Message mode: the one event dropped, the chunk still there.
	got := mustDecodeAll(t, frame(t, "t", msgpack.RawMessage(tm), "not a map", map[string]any{"chunk": "k"}))
	if len(got) != 1 || got[0].Count != 0 || got[0].Dropped != 1 || got[0].Entries != "" || !got[0].HasChunk {
		t.Errorf("Message: %+v", got)
	}
}

// TestMessageWithTimeArray: a Message whose time is [time, metadata] is not
// mistaken for Forward.
func TestMessageWithTimeArray(t *testing.T) {
	rec := testRecords(t)[0]
	tm := marshal(t, []any{mpack.EventTime{Sec: 1700000000}, map[string]any{"m": 1}})
	for _, b := range [][]byte{
		frame(t, "t", msgpack.RawMessage(tm), msgpack.RawMessage(rec)),
		frame(t, "t", msgpack.RawMessage(tm), msgpack.RawMessage(rec), map[string]any{"chunk": "z"}),
	} {
		got := mustDecodeAll(t, b)
		if len(got) != 1 || got[0].Mode != ModeMessage || got[0].Count != 1 ||
			got[0].Entries != string(mpack.AppendEntry(nil, mpack.EventTime{Sec: 1700000000}, rec)) {
			t.Fatalf("got %+v", got)
		}
	}
	// An empty Forward is zero events.
	got := mustDecodeAll(t, frame(t, "t", []any{}, map[string]any{"chunk": "z"}))
	if len(got) != 1 || got[0].Mode != ModeForward || got[0].Count != 0 || got[0].Chunk != "z" {
		t.Fatalf("got %+v", got)
	}
}

// mixedStream is one request of every mode, with heartbeats between.
func mixedStream(t testing.TB) []byte {
	recs := testRecords(t)
	var out []byte
	i := 0
	for _, mc := range modeCases() {
		tfs := timeForms(t)
		tf := tfs[i%len(tfs)]
		i += 5
		times := [][]byte{tf.raw, tf.raw, tf.raw}
		var entries []byte
		for j := range recs {
			entries = append(entries, rawEntry(t, tf.raw, recs[j])...)
		}
		out = append(out, mc.build(t, times, recs, entries, fmt.Sprint("chunk-", i))...)
		out = append(out, 0xc0)
	}
	return out
}

// TestSplitAnywhere: a stream decodes the same whether it arrives whole, one
// byte per read, or split in two at any position.
func TestSplitAnywhere(t *testing.T) {
	stream := mixedStream(t)
	want := mustDecodeAll(t, stream)
	if len(want) < len(modeCases()) {
		t.Fatalf("only %d requests", len(want))
	}
	check := func(name string, r io.Reader) {
		t.Helper()
		got, err := decodeAll(t, r, Limits{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: decoded differently", name)
		}
	}
	check("one byte at a time", iotest.OneByteReader(bytes.NewReader(stream)))
	check("data with EOF", iotest.DataErrReader(bytes.NewReader(stream)))
	for p := range len(stream) + 1 {
		check(fmt.Sprint("split at ", p), &splitReader{parts: [][]byte{stream[:p:p], stream[p:]}})
	}
	// Three-way splits around one frame boundary region.
	for p := 0; p < len(stream); p += 7 {
		q := min(p+13, len(stream))
		check(fmt.Sprint("split at ", p, q), &splitReader{parts: [][]byte{stream[:p:p], stream[p:q:q], stream[q:]}})
	}
}

// TestPipelined: many requests in one buffer, heartbeats between them.
func TestPipelined(t *testing.T) {
	rec := testRecords(t)[0]
	var stream []byte
	for i := range 200 {
		stream = append(stream, 0xc0)
		stream = append(stream, frame(t, fmt.Sprint("tag.", i%3), msgpack.RawMessage(marshal(t, 1700000000+i)), msgpack.RawMessage(rec), map[string]any{"chunk": fmt.Sprint(i)})...)
	}
	stream = append(stream, 0xc0, 0xc0)
	got := mustDecodeAll(t, stream)
	if len(got) != 200 {
		t.Fatalf("%d requests", len(got))
	}
	for i, s := range got {
		if s.Chunk != fmt.Sprint(i) || s.Tag != fmt.Sprint("tag.", i%3) || s.Count != 1 {
			t.Fatalf("request %d: %+v", i, s)
		}
	}
}

func TestHeartbeatsOnly(t *testing.T) {
	got := mustDecodeAll(t, []byte{0xc0, 0xc0, 0xc0})
	if len(got) != 0 {
		t.Fatal(got)
	}
	got = mustDecodeAll(t, nil)
	if len(got) != 0 {
		t.Fatal(got)
	}
}
