package pipeline

import (
	"encoding/json"
	"reflect"
	"testing"

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
