package mpack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// sameAsV0 fails t unless SkipCount and skipCountV0 agree on b: the same
// length, the same container count and the same error.
func sameAsV0(t testing.TB, b []byte) {
	t.Helper()
	n, c, err := SkipCount(b)
	rn, rc, rerr := skipCountV0(b)
	if n != rn || c != rc || (err == nil) != (rerr == nil) ||
		(err != nil && (err.Error() != rerr.Error() || errors.Is(err, ErrShortBuffer) != errors.Is(rerr, ErrShortBuffer) ||
			errors.Is(err, ErrMalformed) != errors.Is(rerr, ErrMalformed))) {
		t.Fatalf("% x:\nSkipCount   %d %d %v\nskipCountV0 %d %d %v", b, n, c, err, rn, rc, rerr)
	}
}

// v0Seeds are msgpack values of every type byte, entries as the forward
// decoder skips them, and the forward protocol's stored fuzz corpus.
func v0Seeds(t testing.TB) [][]byte {
	big := bytes.Repeat([]byte("x"), 70000)
	values := []any{
		nil, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, int64(1) << 40, -1, -32, -33, -128, -129, -32768, -32769, int64(-1) << 40,
		float32(1.5), 2.25, "", "short", string(big[:31]), string(big[:32]), string(big[:255]), string(big[:256]), string(big[:70000]),
		[]byte("bin"), big[:300], big, []any{}, []any{1, "a", []any{2, 3}}, make([]any, 20), map[string]any{},
		map[string]any{"a": 1, "b": []any{map[string]any{"c": nil}}}, EventTime{Sec: 1, Nsec: 2},
		msgpack.RawMessage{0xd4, 1, 2}, msgpack.RawMessage{0xd5, 1, 2, 3}, msgpack.RawMessage{0xd6, 1, 0, 0, 0, 0},
		msgpack.RawMessage(append([]byte{0xd8, 1}, make([]byte, 16)...)), msgpack.RawMessage{0xc7, 3, 1, 'a', 'b', 'c'},
		msgpack.RawMessage{0xc8, 0, 1, 1, 'a'}, msgpack.RawMessage{0xc9, 0, 0, 0, 1, 1, 'a'}, msgpack.RawMessage{0xc5, 0, 1, 'a'},
		msgpack.RawMessage{0xc6, 0, 0, 0, 1, 'a'}, msgpack.RawMessage{0xdb, 0, 0, 0, 1, 'a'}, msgpack.RawMessage{0xda, 0, 1, 'a'},
		msgpack.RawMessage{0xde, 0, 1, 0xa1, 'k', 0xc0}, msgpack.RawMessage{0xdf, 0, 0, 0, 1, 0xa1, 'k', 0xc0},
		msgpack.RawMessage{0xdc, 0, 1, 0xc3}, msgpack.RawMessage{0xdd, 0, 0, 0, 1, 0xc2},
	}
	var seeds [][]byte
	for _, v := range values {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	for c := range 256 { // every type byte alone and before a few bytes
		seeds = append(seeds, []byte{byte(c)}, []byte{byte(c), 0x01, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	}
	seeds = append(seeds, benchEntries(t, 3), nestedEntry(t), relayEntries(t, 3),
		[]byte{0xdb, 0x80, 0, 0, 0}, []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, []byte{0xdf, 0x40, 0, 0, 0},
		[]byte{0xdf, 0x3f, 0xff, 0xff, 0xff}, []byte{0xdd, 0x7f, 0xff, 0xff, 0xff, 0xdd, 0x7f, 0xff, 0xff, 0xff})
	files, _ := filepath.Glob("../../plugins/forwardproto/testdata/fuzz/*/*")
	more, _ := filepath.Glob("testdata/fuzz/*/*")
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if q, ok := strings.CutPrefix(line, "[]byte("); ok {
				if s, err := strconv.Unquote(strings.TrimSuffix(q, ")")); err == nil {
					seeds = append(seeds, []byte(s))
				}
			}
		}
	}
	return seeds
}

// benchEntries is n container-log-like entries, [EventTime, record].
func benchEntries(t testing.TB, n int) []byte {
	rec := benchRec(t)
	var entries []byte
	for i := range n {
		entries = AppendEntry(entries, EventTime{Sec: 1700000000 + uint32(i)}, rec)
	}
	return entries
}

// nestedEntry is an entry whose record is a JSON-like document: maps in
// arrays in maps, ints of every width, floats, nulls and long strings.
func nestedEntry(t testing.TB) []byte {
	rec, err := msgpack.Marshal(map[string]any{
		"log": strings.Repeat("y", 300), "level": "info", "ts": 1700000000.125, "n": -70000, "big": uint64(1) << 50,
		"http":  map[string]any{"method": "GET", "status": 200, "headers": map[string]any{"a": "b", "accept": []any{"x", "y", nil, true}}},
		"spans": []any{map[string]any{"id": 1, "dur": 0.5}, map[string]any{"id": 2, "tags": []any{1, -1, 300, "t"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return AppendEntry(nil, EventTime{Sec: 1700000000, Nsec: 5}, rec)
}

// TestSkipCountMatchesV0 runs SkipCount and the implementation it replaced
// on every seed, every prefix and suffix of it, and random mutations.
func TestSkipCountMatchesV0(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	inputs := 0
	for _, s := range v0Seeds(t) {
		for cut := range len(s) + 1 {
			if len(s) > 4096 && cut%97 != 0 && cut != len(s) {
				continue
			}
			sameAsV0(t, s[:cut])
			sameAsV0(t, s[cut:])
			inputs += 2
		}
		if len(s) > 4096 {
			continue
		}
		m := make([]byte, len(s))
		for range 200 {
			copy(m, s)
			for range 1 + rng.IntN(4) {
				if len(m) > 0 {
					m[rng.IntN(len(m))] = byte(rng.Uint32())
				}
			}
			sameAsV0(t, m)
			inputs++
		}
	}
	t.Logf("%d inputs", inputs)
}

func FuzzSkipCountMatchesV0(f *testing.F) {
	for _, s := range v0Seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsV0(t, b)
	})
}

// BenchmarkSkipCountV0 is BenchmarkSkipCount with the implementation
// SkipCount replaced, for a comparison in one run.
func BenchmarkSkipCountV0(b *testing.B) {
	benchSkip(b, benchEntries(b, 100), skipCountV0)
}

// BenchmarkSkipCountRelay skips the entries bench/ack sends: a record of
// "log" (about 180 bytes), "stream", "seq" and "host".
func BenchmarkSkipCountRelay(b *testing.B) {
	benchSkip(b, relayEntries(b, 100), SkipCount)
}

func BenchmarkSkipCountRelayV0(b *testing.B) {
	benchSkip(b, relayEntries(b, 100), skipCountV0)
}

func relayEntries(t testing.TB, n int) []byte {
	var entries []byte
	for i := range n {
		var rec []byte
		rec = AppendMapHeader(rec, 4)
		rec = AppendString(rec, "log")
		rec = AppendString(rec, "2026-11-22T10:00:00Z INFO request served path=/api/v1/items status=200 "+strings.Repeat("x", 110))
		rec = AppendString(rec, "stream")
		rec = AppendString(rec, "stdout")
		rec = AppendString(rec, "seq")
		rec = AppendInt(rec, int64(i*1000))
		rec = AppendString(rec, "host")
		rec = AppendString(rec, "node-1")
		entries = AppendEntry(entries, EventTime{Sec: 1700000000 + uint32(i)}, rec)
	}
	return entries
}

func BenchmarkSkipCountNested(b *testing.B) {
	benchSkip(b, bytes.Repeat(nestedEntry(b), 100), SkipCount)
}

func BenchmarkSkipCountNestedV0(b *testing.B) {
	benchSkip(b, bytes.Repeat(nestedEntry(b), 100), skipCountV0)
}

func benchSkip(b *testing.B, entries []byte, skip func([]byte) (int, int, error)) {
	b.SetBytes(int64(len(entries)))
	b.ReportAllocs()
	for b.Loop() {
		for p := 0; p < len(entries); {
			n, _, err := skip(entries[p:])
			if err != nil {
				b.Fatal(err)
			}
			p += n
		}
	}
}

// skipCountV0 is SkipCount as it was before its fast paths (commit
// d4b5a8d), kept as the reference the tests and the fuzz target compare it
// with: the two must agree on every input.
func skipCountV0(b []byte) (n, containers int, err error) {
	pos := 0
	remaining := 1 // values still to skip
	for remaining > 0 {
		if pos >= len(b) {
			return 0, 0, ErrShortBuffer
		}
		remaining--
		c := b[pos]
		// The one-byte headers, most of any record, first.
		switch {
		case c <= 0x7f || c >= 0xe0:
			pos++
			continue
		case c <= 0x8f:
			pos++
			remaining += 2 * int(c&0x0f)
			containers++
			continue
		case c <= 0x9f:
			pos++
			remaining += int(c & 0x0f)
			containers++
			continue
		case c <= 0xbf:
			pos += 1 + int(c&0x1f)
			continue
		}
		var hdr, size int // header length, payload bytes after it
		switch c {
		case 0xc0, 0xc2, 0xc3:
			hdr = 1
		case 0xc1:
			return 0, 0, fmt.Errorf("%w: byte 0xc1 at %d", ErrMalformed, pos)
		case 0xcc, 0xd0:
			hdr, size = 1, 1
		case 0xcd, 0xd1:
			hdr, size = 1, 2
		case 0xca, 0xce, 0xd2:
			hdr, size = 1, 4
		case 0xcb, 0xcf, 0xd3:
			hdr, size = 1, 8
		case 0xd4:
			hdr, size = 2, 1
		case 0xd5:
			hdr, size = 2, 2
		case 0xd6:
			hdr, size = 2, 4
		case 0xd7:
			hdr, size = 2, 8
		case 0xd8:
			hdr, size = 2, 16
		default:
			var lw int // width of the length field
			switch c {
			case 0xc4, 0xd9, 0xc7:
				lw = 1
			case 0xc5, 0xda, 0xc8, 0xdc, 0xde:
				lw = 2
			default: // 0xc6, 0xdb, 0xc9, 0xdd, 0xdf
				lw = 4
			}
			if pos+1+lw > len(b) {
				return 0, 0, ErrShortBuffer
			}
			var l int
			switch lw {
			case 1:
				l = int(b[pos+1])
			case 2:
				l = int(binary.BigEndian.Uint16(b[pos+1:]))
			default:
				v := binary.BigEndian.Uint32(b[pos+1:])
				if v > math.MaxInt32 {
					return 0, 0, errLength
				}
				l = int(v)
			}
			hdr = 1 + lw
			switch c {
			case 0xc7, 0xc8, 0xc9:
				hdr, size = hdr+1, l // ext: a type byte after the length
			case 0xdc, 0xdd, 0xde, 0xdf:
				if c >= 0xde { // pairs
					if l > math.MaxInt32/2 {
						return 0, 0, errTooLarge
					}
					l *= 2
				}
				// Every value takes at least one byte, so a container
				// claiming more children than there can be bytes left
				// is only truncated if the stream goes on; callers
				// bound frame sizes, so it is short, unless no int32
				// could count it.
				if remaining += l; remaining < 0 || remaining > math.MaxInt32 {
					return 0, 0, errTooLarge
				}
				containers++
			default:
				size = l
			}
		}
		// Compared before adding, so a huge declared length cannot wrap
		// pos around on 32-bit platforms.
		if size > len(b)-pos-hdr {
			return 0, 0, ErrShortBuffer
		}
		pos += hdr + size
	}
	if pos > len(b) { // a fixstr ran past the end
		return 0, 0, ErrShortBuffer
	}
	return pos, containers, nil
}
