package forwardproto

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestJSONFraming: a connection starting with '[' (after whitespace) is
// JSON; every mode decodes; answers must be JSON.
func TestJSONFraming(t *testing.T) {
	stream := " \r\n\t" + `["app.json", 1700000000, {"msg": "a]}\"[", "n": 1, "f": 2.5, "b": true, "z": null, "arr": [1, -2, 18446744073709551615]}, {"chunk": "j1", "size": 1}]` + "\n" +
		`["app.json",[[1700000000.5,{"k":"v"}],[0,{"x":"y"}],["bad",{}]],{"chunk":"j2","fluent_signal":1}]` + "\n\n" +
		`["t\"ag]", 5, {"b": 1, "a": 2}]` + " "
	got := mustDecodeAll(t, []byte(stream))
	if len(got) != 3 {
		t.Fatalf("%d requests", len(got))
	}
	for _, s := range got {
		if !s.JSON {
			t.Fatal("not flagged JSON")
		}
	}
	if g := got[0]; g.Mode != ModeMessage || g.Chunk != "j1" || g.Count != 1 || g.Tag != "app.json" {
		t.Fatalf("%+v", g)
	}
	e := entriesOf(t, []byte(got[0].Entries))
	var rec map[string]any
	if err := msgpack.Unmarshal([]byte(e[0].Rec), &rec); err != nil {
		t.Fatal(err)
	}
	if e[0].T.Sec != 1700000000 || rec["msg"] != `a]}"[` || rec["b"] != true || rec["z"] != nil || rec["f"] != 2.5 {
		t.Fatalf("record %v", rec)
	}
	if g := got[1]; g.Mode != ModeForward || g.Chunk != "j2" || g.Count != 2 || g.Dropped != 1 {
		t.Fatalf("%+v", g)
	}
	e = entriesOf(t, []byte(got[1].Entries))
	if e[0].T != (mpack.EventTime{Sec: 1700000000, Nsec: 500000000}) || e[1].T != fixedNow {
		t.Fatalf("times %v", e)
	}
	if g := got[2]; g.Tag != `t"ag]` || g.HasChunk {
		t.Fatalf("%+v", g)
	}
	// Key order is kept: b before a.
	rb := []byte(entriesOf(t, []byte(got[2].Entries))[0].Rec)
	if !bytes.Equal(rb, []byte{0x82, 0xa1, 'b', 1, 0xa1, 'a', 2}) {
		t.Fatalf("record %x", rb)
	}
}

func TestJSONBadInput(t *testing.T) {
	deep := "[" + strings.Repeat("[", 200) + strings.Repeat("]", 200) + "]"
	for name, s := range map[string]string{
		"trailing comma": `["t", 1, {"a": 1},]`,
		"object request": `{"tag": "t"}`,
		"not a request":  `[1, 2, 3]`,
		"too deep":       `["t", 1, {"a": ` + deep + `}]`,
		"bad token":      `["t", 1, {"a": tru}]`,
		"garbage after":  `["t", 1, {}] x`,
		"tag not string": `[1, 1, {}]`,
	} {
		_, err := decodeAll(t, strings.NewReader(s), Limits{})
		wantErr(t, err, ErrMalformed)
		_ = name
	}
	_, err := decodeAll(t, strings.NewReader(`["t", 1, {"a": "`+strings.Repeat("x", 2000)+`"}]`), Limits{MaxFrameBytes: 1000})
	wantErr(t, err, ErrFrameTooLarge)
}

// TestJSONAck: the client side reads a JSON answer too.
func TestJSONAck(t *testing.T) {
	chunk := "abc\n\"\\\x01é\xff"
	b := AppendAck(nil, []byte(chunk), true)
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["ack"] != strings.ToValidUTF8(chunk, "\ufffd") {
		t.Fatalf("ack %q", m["ack"])
	}
	d := newTestDecoder(bytes.NewReader(append(AppendAck(nil, []byte("one"), true), AppendAck(nil, []byte("two"), true)...)), Limits{})
	for _, want := range []string{"one", "two"} {
		got, err := d.NextAck()
		if err != nil || got != want {
			t.Fatalf("ack %q %v, want %q", got, err, want)
		}
	}
}
