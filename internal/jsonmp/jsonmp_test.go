package jsonmp

import (
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestAppendRecord: an object becomes a msgpack map with the extra entries
// at its end; anything else, and an object nested deeper than MaxDepth,
// is refused with dst's length unchanged.
func TestAppendRecord(t *testing.T) {
	extra, _ := msgpack.Marshal("path")
	v, _ := msgpack.Marshal("/var/log/a.log")
	extra = append(extra, v...)
	dst := []byte("prefix")
	out, ok := AppendRecord(dst, []byte(` {"a": 1, "b": [true, null, "x\u00e9"], "c": {"d": -2.5e3}} `), extra, 1)
	if !ok {
		t.Fatal("object refused")
	}
	var m map[string]any
	if err := msgpack.Unmarshal(out[len(dst):], &m); err != nil {
		t.Fatal(err)
	}
	if m["a"] != int8(1) && m["a"] != uint8(1) && m["a"] != int64(1) {
		t.Fatalf("a = %#v", m["a"])
	}
	if b := m["b"].([]any); len(b) != 3 || b[0] != true || b[1] != nil || b[2] != "xé" {
		t.Fatalf("b = %#v", m["b"])
	}
	if m["path"] != "/var/log/a.log" || m["c"].(map[string]any)["d"] != -2500.0 {
		t.Fatalf("record %#v", m)
	}
	deep := strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1)
	for _, bad := range []string{`[1]`, `"s"`, `{"a":}`, `{"a":1} x`, deep} {
		if out, ok := AppendRecord(dst, []byte(bad), nil, 0); ok || len(out) != len(dst) {
			t.Errorf("%.40q: ok %v, %d bytes", bad, ok, len(out))
		}
	}
	if !TooDeep([]byte(deep)) || TooDeep([]byte(strings.Repeat("[", MaxDepth)+strings.Repeat("]", MaxDepth))) {
		t.Error("TooDeep wrong at the bound")
	}
}
