package mpack

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestSkipValueAgainstEncoder(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70000)
	values := []any{
		nil, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, int64(math.MaxInt64), -1, -32, -33, -128, -129, -32768, -32769, int64(math.MinInt64),
		uint64(math.MaxUint64), float32(1.5), 2.25, "", "short", string(big[:40]), string(big[:300]), string(big), []byte("bin"), big,
		[]any{}, []any{1, "a", []any{2, 3}}, make([]any, 20), map[string]any{}, map[string]any{"a": 1, "b": []any{map[string]any{"c": nil}}},
		EventTime{Sec: 1, Nsec: 2},
	}
	for _, v := range values {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		// Followed by garbage: SkipValue must stop at the value's end.
		n, err := SkipValue(append(b, 0xc1, 0xc1))
		if err != nil || n != len(b) {
			t.Errorf("%T %.20v: SkipValue = %d, %v; want %d", v, v, n, err, len(b))
		}
		for cut := range len(b) {
			if _, err := SkipValue(b[:cut]); !errors.Is(err, ErrShortBuffer) {
				t.Fatalf("%T truncated at %d of %d: %v, want ErrShortBuffer", v, cut, len(b), err)
			}
		}
	}
	if _, err := SkipValue([]byte{0x91, 0xc1}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("0xc1: %v", err)
	}
	// A deep nest does not recurse.
	deep := append(bytes.Repeat([]byte{0x91}, 1_000_000), 0xc0)
	if n, err := SkipValue(deep); err != nil || n != len(deep) {
		t.Fatalf("deep: %d %v", n, err)
	}
	if n, c, err := SkipCount(deep); err != nil || n != len(deep) || c != 1_000_000 {
		t.Fatalf("deep: SkipCount %d %d %v", n, c, err)
	}
	if _, c, err := SkipCount([]byte{0x82, 0xa1, 'a', 0x90, 0xa1, 'b', 0xdc, 0, 1, 0x80}); err != nil || c != 4 {
		t.Fatalf("SkipCount counts %d containers, %v; want 4", c, err)
	}
	// Lengths no int32 holds are malformed, not short.
	for _, b := range [][]byte{{0xdb, 0x80, 0, 0, 0}, {0xdd, 0xff, 0xff, 0xff, 0xff}, {0xdf, 0x40, 0, 0, 0}} {
		if _, err := SkipValue(b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("% x: %v, want ErrMalformed", b, err)
		}
	}
}

func TestReadTimeForms(t *testing.T) {
	cases := []struct {
		name string
		v    any
		want EventTime
	}{
		{"fixint", 100, EventTime{Sec: 100}},
		{"uint32", uint32(1700000000), EventTime{Sec: 1700000000}},
		{"int64", int64(1700000000), EventTime{Sec: 1700000000}},
		{"uint64", uint64(1700000000), EventTime{Sec: 1700000000}},
		{"float64", 1700000000.25, EventTime{Sec: 1700000000, Nsec: 250000000}},
		{"float32", float32(1.5), EventTime{Sec: 1, Nsec: 500000000}},
		{"eventtime", EventTime{Sec: 1700000000, Nsec: 123}, EventTime{Sec: 1700000000, Nsec: 123}},
		{"negative", -5, EventTime{}},
	}
	for _, c := range cases {
		b, _ := msgpack.Marshal(c.v)
		got, n, err := ReadTime(b)
		if err != nil || n != len(b) || got != c.want {
			t.Errorf("%s: %v %d %v, want %v", c.name, got, n, err, c.want)
		}
	}
	// ext8 form of EventTime: c7 08 00 + 8 bytes.
	ext8 := []byte{0xc7, 8, 0, 0x65, 0x53, 0xf1, 0x00, 0, 0, 0, 7}
	if got, n, err := ReadTime(ext8); err != nil || n != 11 || got != (EventTime{Sec: 0x6553f100, Nsec: 7}) {
		t.Fatalf("ext8: %v %d %v", got, n, err)
	}
	if _, _, err := ReadTime([]byte{0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("msgpack timestamp ext -1 taken for an EventTime")
	}
	if _, _, err := ReadTime([]byte{0xa1, 'x'}); err == nil {
		t.Fatal("a string taken for a time")
	}
}

func TestAppendRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 1, 127, 128, -1, -32, -33, 300, -300, 70000, -70000, math.MaxInt64, math.MinInt64} {
		var got int64
		if err := msgpack.Unmarshal(AppendInt(nil, n), &got); err != nil || got != n {
			t.Errorf("AppendInt(%d) -> %d %v", n, got, err)
		}
	}
	for _, l := range []int{0, 31, 32, 255, 256, 65535, 65536} {
		s := string(bytes.Repeat([]byte("a"), l))
		var got string
		if err := msgpack.Unmarshal(AppendString(nil, s), &got); err != nil || got != s {
			t.Errorf("AppendString(len %d): %v", l, err)
		}
	}
	for _, n := range []int{0, 15, 16, 65535, 65536} {
		b := AppendMapHeader(nil, n)
		if c, h, err := ReadMapHeader(b); err != nil || c != n || h != len(b) {
			t.Errorf("map header %d: %d %d %v", n, c, h, err)
		}
		b = AppendArrayHeader(nil, n)
		if c, h, err := ReadArrayHeader(b); err != nil || c != n || h != len(b) {
			t.Errorf("array header %d: %d %d %v", n, c, h, err)
		}
	}
	rec, _ := msgpack.Marshal(map[string]any{"k": "v"})
	e := AppendEntry(nil, EventTime{Sec: 9, Nsec: 8}, rec)
	e = AppendEntry(e, EventTime{Sec: 10}, rec)
	var times []EventTime
	if err := ForEachEntry(e, func(t EventTime, r []byte) error {
		if !bytes.Equal(r, rec) {
			return errors.New("record changed")
		}
		times = append(times, t)
		return nil
	}); err != nil || len(times) != 2 || times[0] != (EventTime{Sec: 9, Nsec: 8}) {
		t.Fatalf("entries: %v %v", times, err)
	}
}

func FuzzSkipValue(f *testing.F) {
	for _, v := range []any{nil, 1, "s", []any{1, map[string]any{"a": []byte("b")}}, EventTime{Sec: 1}} {
		b, _ := msgpack.Marshal(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := SkipValue(b)
		if err == nil && (n <= 0 || n > len(b)) {
			t.Fatalf("n=%d of %d", n, len(b))
		}
		cn, cc, cerr := SkipCount(b)
		rn, rc, rerr := refSkip(b)
		if cn != n || (cerr == nil) != (err == nil) || cn != rn || (cerr == nil) != (rerr == nil) || (cerr == nil && cc != rc) {
			t.Fatalf("SkipCount %d %d %v, SkipValue %d %v, reference %d %d %v", cn, cc, cerr, n, err, rn, rc, rerr)
		}
	})
}

// refSkip is SkipCount done another way: the length and the validity as
// vmihailenco/msgpack's Decoder.Skip finds them, the maps and arrays
// counted by walking their headers recursively.
func refSkip(b []byte) (n, containers int, err error) {
	r := bytes.NewReader(b)
	if err := msgpack.NewDecoder(r).Skip(); err != nil {
		return 0, 0, err
	}
	n = len(b) - r.Len()
	if _, containers, err = countContainers(b[:n]); err != nil {
		return 0, 0, fmt.Errorf("msgpack skipped %d bytes, the headers do not: %w", n, err)
	}
	return n, containers, nil
}

func countContainers(b []byte) (n, containers int, err error) {
	cnt, hdr, err := ReadMapHeader(b)
	cnt *= 2
	if err != nil {
		if cnt, hdr, err = ReadArrayHeader(b); err != nil {
			n, err = SkipValue(b) // not a container
			return n, 0, err
		}
	}
	n, containers = hdr, 1
	for range cnt {
		vn, vc, err := countContainers(b[n:])
		if err != nil {
			return 0, 0, err
		}
		n, containers = n+vn, containers+vc
	}
	return n, containers, nil
}

// BenchmarkSkipCount skips container-log-like entries, [time, record] with
// an EventTime and a record of about 200 bytes, as the forward decoder does
// for every event.
func BenchmarkSkipCount(b *testing.B) {
	rec := benchRec(b)
	var entries []byte
	for i := range 100 {
		entries = AppendEntry(entries, EventTime{Sec: 1700000000 + uint32(i)}, rec)
	}
	b.SetBytes(int64(len(entries)))
	b.ReportAllocs()
	for b.Loop() {
		for p := 0; p < len(entries); {
			n, _, err := SkipCount(entries[p:])
			if err != nil {
				b.Fatal(err)
			}
			p += n
		}
	}
}

// benchRec is a container-log-like record of about 200 bytes.
func benchRec(b testing.TB) []byte {
	rec, err := msgpack.Marshal(map[string]any{
		"log":        "2024-05-01T12:00:00.000Z INFO request 000042 served GET /api/v1/items?page=3 status=200 bytes=5123 " + strings.Repeat("x", 40),
		"stream":     "stdout",
		"kubernetes": map[string]any{"pod": "web-7d9f8c6b5-abcde", "namespace": "prod", "container": "app"},
	})
	if err != nil {
		b.Fatal(err)
	}
	return rec
}
