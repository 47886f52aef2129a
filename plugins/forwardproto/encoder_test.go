package forwardproto

import (
	"bytes"
	"compress/gzip"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

func entriesN(t testing.TB, n int) []byte {
	recs := testRecords(t)
	var b []byte
	for i := range n {
		b = mpack.AppendEntry(b, mpack.EventTime{Sec: 1700000000 + uint32(i), Nsec: uint32(i)}, recs[i%len(recs)])
	}
	return b
}

// TestEncoderPackedForward: what the encoder builds is read back right by an
// independent decoder (vmihailenco, compress/gzip, zstd) and by ours.
func TestEncoderPackedForward(t *testing.T) {
	e := NewEncoder()
	var buf []byte
	for _, n := range []int{0, 1, 3, 1000} { // bin8 .. bin32 sizes
		entries := entriesN(t, n)
		for _, c := range []Compression{CompressNone, CompressGzip, CompressZstd} {
			for _, chunk := range []string{"", ChunkID([6]byte{9}, 1, uint64(n))} {
				var err error
				buf, err = e.AppendPackedForward(buf[:0], "out.tag", entries, n, chunk, c)
				if err != nil {
					t.Fatal(err)
				}
				var v struct {
					_msgpack struct{} `msgpack:",as_array"`
					Tag      string
					Entries  []byte
					Option   map[string]any
				}
				if err := msgpack.Unmarshal(buf, &v); err != nil {
					t.Fatal(err)
				}
				raw := v.Entries
				switch c {
				case CompressGzip:
					zr, err := gzip.NewReader(bytes.NewReader(raw))
					if err != nil {
						t.Fatal(err)
					}
					zr.Multistream(false)
					if raw, err = io.ReadAll(zr); err != nil {
						t.Fatal(err)
					}
					if err := zr.Reset(bytes.NewReader(nil)); err != io.EOF {
						t.Fatal("more than one gzip member")
					}
				case CompressZstd:
					zd, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
					raw, err = zd.DecodeAll(raw, nil)
					zd.Close()
					if err != nil {
						t.Fatal(err)
					}
				}
				if v.Tag != "out.tag" || !bytes.Equal(raw, entries) {
					t.Fatalf("n=%d %v: tag %q, entries differ", n, c, v.Tag)
				}
				if toInt(v.Option["size"]) != n {
					t.Fatalf("size %v", v.Option["size"])
				}
				if got, ok := v.Option["chunk"]; (chunk != "") != ok || (ok && got != chunk) {
					t.Fatalf("chunk option %v", v.Option)
				}
				if got, ok := v.Option["compressed"]; (c != CompressNone) != ok || (ok && got != c.String()) {
					t.Fatalf("compressed option %v", v.Option)
				}
				// Our decoder agrees.
				d := newTestDecoder(bytes.NewReader(buf), Limits{})
				req, err := d.Next()
				if err != nil {
					t.Fatal(err)
				}
				if req.Count != n || !bytes.Equal(req.Entries, entries) || string(req.Chunk) != chunk || req.HasChunk != (chunk != "") || req.Compression != c {
					t.Fatalf("round trip %+v", summarize(req))
				}
			}
		}
	}
}

func toInt(v any) int {
	switch x := v.(type) {
	case int8:
		return int(x)
	case int16:
		return int(x)
	case int32:
		return int(x)
	case int64:
		return int(x)
	case uint8:
		return int(x)
	case uint16:
		return int(x)
	case uint32:
		return int(x)
	case uint64:
		return int(x)
	}
	return -1
}

// TestEncoderReusesBuffers: in steady state, encoding allocates nothing.
func TestEncoderReusesBuffers(t *testing.T) {
	entries := entriesN(t, 100)
	e := NewEncoder()
	for _, c := range []Compression{CompressNone, CompressGzip, CompressZstd} {
		buf, _ := e.AppendPackedForward(nil, "t", entries, 100, "id", c)
		buf = append(buf, make([]byte, 1<<16)...)
		allocs := testing.AllocsPerRun(20, func() {
			buf, _ = e.AppendPackedForward(buf[:0], "t", entries, 100, "id", c)
		})
		if allocs > 0 {
			t.Errorf("%v: %v allocations per request", c, allocs)
		}
	}
}

func TestNextAck(t *testing.T) {
	stream := cat(
		AppendAck(nil, []byte("a1"), false),
		marshal(t, map[string]any{"ack": []byte("bin-ack")}),
		marshal(t, map[any]any{1: 2, "other": "x", "ack": "a3"}),
	)
	d := newTestDecoder(bytes.NewReader(stream), Limits{})
	for _, want := range []string{"a1", "bin-ack", "a3"} {
		got, err := d.NextAck()
		if err != nil || got != want {
			t.Fatalf("ack %q %v, want %q", got, err, want)
		}
	}
	if _, err := d.NextAck(); err != io.EOF {
		t.Fatalf("%v, want EOF", err)
	}
	for _, b := range [][]byte{
		marshal(t, map[string]any{"nack": "x"}),
		marshal(t, map[string]any{"ack": 5}),
		marshal(t, []any{"ack", "x"}),
	} {
		_, err := newTestDecoder(bytes.NewReader(b), Limits{}).NextAck()
		wantErr(t, err, ErrMalformed)
	}
}

// TestPackedForwardAround: the request around the entries, with the
// entries put in at its split, is byte for byte what AppendPackedForward
// builds uncompressed.
func TestPackedForwardAround(t *testing.T) {
	e := NewEncoder()
	for _, n := range []int{0, 1, 3, 1000} { // bin8 .. bin32 sizes
		entries := entriesN(t, n)
		for _, chunk := range []string{"", ChunkID([6]byte{9}, 1, uint64(n))} {
			want, err := e.AppendPackedForward(nil, "out.tag", entries, n, chunk, CompressNone)
			if err != nil {
				t.Fatal(err)
			}
			prefix := []byte("kept")
			out, at := AppendPackedForwardAround(prefix, "out.tag", len(entries), n, chunk)
			if string(out[:len(prefix)]) != "kept" {
				t.Fatal("dst overwritten")
			}
			got := append(append(append([]byte(nil), out[len(prefix):at]...), entries...), out[at:]...)
			if !bytes.Equal(got, want) {
				t.Fatalf("%d events, chunk %q: around the entries differs from AppendPackedForward", n, chunk)
			}
		}
	}
}
