package mpack

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func TestAppendRecordJSON(t *testing.T) {
	rec := map[string]any{
		"log":    "hello \"world\"\n\t\x01 é ☃",
		"n":      int64(-5),
		"big":    uint64(1 << 63),
		"f":      1.5,
		"b":      true,
		"nil":    nil,
		"arr":    []any{int64(1), "two", map[string]any{"x": int64(3)}},
		"nested": map[string]any{"k": "v"},
		"bin":    []byte("bytes"),
		"tag":    "shadowed",
	}
	raw, err := msgpack.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	out, err := AppendRecordJSON(nil, raw, JSONField{"tag", "app.x"})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", out, err)
	}
	want := map[string]any{
		"log": "hello \"world\"\n\t\x01 é ☃", "n": -5.0, "big": 9223372036854775808.0, "f": 1.5, "b": true, "nil": nil,
		"arr": []any{1.0, "two", map[string]any{"x": 3.0}}, "nested": map[string]any{"k": "v"}, "bin": "bytes", "tag": "app.x",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// Invalid UTF-8 becomes U+FFFD, the JSON stays valid.
	raw, _ = msgpack.Marshal(map[string]any{"log": "a\xffb"})
	out, _ = AppendRecordJSON(nil, raw)
	if string(out) != `{"log":"a\ufffdb"}` {
		t.Fatalf("got %s", out)
	}
	// EventTime inside a record.
	raw, _ = msgpack.Marshal(map[string]any{"t": EventTime{Sec: 1700000000, Nsec: 5}})
	out, _ = AppendRecordJSON(nil, raw)
	if string(out) != `{"t":"2023-11-14T22:13:20.000000005Z"}` {
		t.Fatalf("got %s", out)
	}
	if _, err := AppendRecordJSON(nil, []byte{0x81, 0xa1}); err == nil {
		t.Fatal("truncated record accepted")
	}
}

func BenchmarkAppendRecordJSON(b *testing.B) {
	raw, _ := msgpack.Marshal(map[string]any{"log": "2026-11-22T10:00:00Z INFO request served path=/api/v1/items status=200 bytes=5123 duration=1.2ms", "stream": "stdout", "seq": 12345})
	var buf []byte
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendRecordJSON(buf[:0], raw)
	}
}

// nested returns a record nested depth levels deep: {"a":{"a":...{"a":1}}}
// (maps) or {"a":[[...[1]...]]} (arrays below the record).
func nested(depth int, arrays bool) []byte {
	b := make([]byte, 0, 3*depth+8)
	b = append(b, 0x81, 0xa1, 'a')
	for range depth - 1 {
		if arrays {
			b = append(b, 0x91)
		} else {
			b = append(b, 0x81, 0xa1, 'a')
		}
	}
	return append(b, 0x01)
}

// TestAppendRecordJSONDepth: nesting up to MaxJSONDepth is written as it
// is; a deeper map or array becomes the JSONTooDeep string, counted, and
// the JSON stays valid.
func TestAppendRecordJSONDepth(t *testing.T) {
	for _, arrays := range []bool{false, true} {
		for _, depth := range []int{1, 2, MaxJSONDepth - 1, MaxJSONDepth, MaxJSONDepth + 1, MaxJSONDepth + 2, 1000} {
			out, cut, err := AppendRecordJSONCut(nil, nested(depth, arrays))
			if err != nil {
				t.Fatalf("depth %d: %v", depth, err)
			}
			var v any
			if err := json.Unmarshal(out, &v); err != nil {
				t.Fatalf("depth %d: invalid JSON %.200s: %v", depth, out, err)
			}
			wantCut := 0
			if depth > MaxJSONDepth {
				wantCut = 1
			}
			if cut != wantCut || bytes.Contains(out, []byte(JSONTooDeep)) != (wantCut == 1) {
				t.Fatalf("depth %d (arrays %v): cut %d, want %d: %.300s", depth, arrays, cut, wantCut, out)
			}
			// The levels kept are all there.
			levels := 0
			for v != nil {
				switch x := v.(type) {
				case map[string]any:
					v, levels = x["a"], levels+1
				case []any:
					v, levels = x[0], levels+1
				default:
					v = nil
				}
			}
			if want := min(depth, MaxJSONDepth); levels != want {
				t.Fatalf("depth %d: %d levels written, want %d", depth, levels, want)
			}
		}
	}
}

// TestAppendRecordJSONMillionDeep: a record nested 1,000,000 levels (issue
// 14: it spun the file output for ever) renders at once, cut at
// MaxJSONDepth, without deep Go stacks; so do a million nested arrays and a
// million-deep value under a map key that is itself a map.
func TestAppendRecordJSONMillionDeep(t *testing.T) {
	const depth = 1_000_000
	deepKey := append([]byte{0x81, 0x81, 0xa1, 'k'}, nested(depth, false)[3:]...) // {{"k": {"a":...}}: 1}
	deepKey = append(deepKey, 0x01)
	for name, rec := range map[string][]byte{"maps": nested(depth, false), "arrays": nested(depth, true), "map key": deepKey} {
		done := make(chan struct{})
		var out []byte
		var cut int
		var err error
		go func() {
			defer close(done)
			out, cut, err = AppendRecordJSONCut(nil, rec)
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: rendering a %d-deep record did not return", name, depth)
		}
		if err != nil || cut != 1 || !json.Valid(out) || len(out) > 8*MaxJSONDepth+len(JSONTooDeep)+64 {
			t.Fatalf("%s: cut %d, %d bytes, err %v: %.200s", name, cut, len(out), err, out)
		}
	}
}

// TestAppendRecordJSONKeys: keys that are not strings are written as their
// JSON text, escaped once; a map used as a key inside a key becomes a fixed
// placeholder, so that keys nested in keys cannot grow the output
// exponentially.
func TestAppendRecordJSONKeys(t *testing.T) {
	cases := []struct {
		rec  []byte
		want string
	}{
		{[]byte{0x82, 0x07, 0xa1, 'x', 0xc3, 0x01}, `{"7":"x","true":1}`},
		{[]byte{0x81, 0x81, 0xa1, '"', 0x02, 0x03}, `{"{\"\\\"\":2}":3}`},
		{[]byte{0x81, 0x92, 0x01, 0xa1, 'b', 0xc0}, `{"[1,\"b\"]":null}`},
		{[]byte{0x81, 0x81, 0x81, 0xa1, '"', 0x01, 0x02, 0x03}, `{"{\"[logship: nested map key]\":2}":3}`},
	}
	for _, c := range cases {
		out, err := AppendRecordJSON(nil, c.rec)
		if err != nil || string(out) != c.want {
			t.Errorf("% x: got %s (%v), want %s", c.rec, out, err, c.want)
		}
	}
	// A thousand keys nested in keys, each holding a quote: linear output.
	var rec []byte
	for range 1000 {
		rec = append(rec, 0x81)
	}
	rec = append(rec, 0xa1, '"', 0x01)
	for range 999 {
		rec = append(rec, 0x01)
	}
	out, err := AppendRecordJSON(nil, rec)
	if err != nil || !json.Valid(out) || len(out) > 200 {
		t.Fatalf("%d bytes, %v: %.200s", len(out), err, out)
	}
}

// TestAppendRecordJSONTruncated: every proper prefix of a record fails
// cleanly, never panics.
func TestAppendRecordJSONTruncated(t *testing.T) {
	raw, err := msgpack.Marshal(map[string]any{
		"s": "string", "i": []any{int64(-1), int64(300), int64(70000), int64(1 << 40), uint64(1 << 63), 1.5, float32(2.5)},
		"m": map[string]any{"t": EventTime{Sec: 1, Nsec: 2}, "b": []byte{0xff, 0}, "n": nil, "k": map[int]int{1: 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw = append(raw[:len(raw):len(raw)], 0xd4, 5, 9) // not part of the record: ignored
	full, err := AppendRecordJSON(nil, raw[:len(raw)-3])
	if err != nil || !json.Valid(full) {
		t.Fatalf("%s: %v", full, err)
	}
	for i := range len(raw) - 3 {
		if out, err := AppendRecordJSON(nil, raw[:i]); err == nil {
			t.Fatalf("prefix of %d bytes accepted: %s", i, out)
		}
	}
}

// FuzzAppendRecordJSON: whatever the bytes, no panic, and what renders
// without error is valid JSON.
func FuzzAppendRecordJSON(f *testing.F) {
	for _, s := range [][]byte{nested(3, false), nested(200, true), {0x81, 0x81, 0x81, 0xa1, '"', 0x01, 0x02, 0x03}, {0x81, 0xa1, 'e', 0xc7, 8, 0, 0, 0, 0, 1, 0, 0, 0, 2}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := AppendRecordJSON(nil, b, JSONField{"tag", "x"})
		if err == nil && !json.Valid(out) {
			t.Fatalf("invalid JSON %q from % x", out, b)
		}
	})
}
