package forwardproto

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

// Test inputs are built with vmihailenco/msgpack (and fluent-logger-golang),
// never with this package's writers, so the decoder is checked against an
// independent encoder.

// fixedNow is the decoder's "now" in tests.
var fixedNow = mpack.EventTime{Sec: 1111111111, Nsec: 42}

func newTestDecoder(r io.Reader, lim Limits) *Decoder {
	d := NewDecoder(r, lim)
	d.nowFunc = func() mpack.EventTime { return fixedNow }
	return d
}

// enc builds msgpack bytes with vmihailenco's encoder.
func enc(t testing.TB, fn func(e *msgpack.Encoder) error) []byte {
	t.Helper()
	var buf bytes.Buffer
	e := msgpack.NewEncoder(&buf)
	if err := fn(e); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// marshal encodes v with vmihailenco (maps sorted, so the bytes are stable).
func marshal(t testing.TB, v any) []byte {
	t.Helper()
	return enc(t, func(e *msgpack.Encoder) error {
		e.SetSortMapKeys(true)
		return e.Encode(v)
	})
}

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// rawEntry is [time, record] from raw msgpack parts.
func rawEntry(t testing.TB, tm, rec []byte) []byte {
	return marshal(t, []msgpack.RawMessage{tm, rec})
}

// Request builders: [tag, second, option?] with raw parts.
func frame(t testing.TB, parts ...any) []byte {
	return marshal(t, parts)
}

func binOf(t testing.TB, b []byte) msgpack.RawMessage {
	return enc(t, func(e *msgpack.Encoder) error { return e.EncodeBytes(b) })
}

func strOf(t testing.TB, b []byte) msgpack.RawMessage {
	return enc(t, func(e *msgpack.Encoder) error { return e.EncodeString(string(b)) })
}

func gzipStd(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdOf(t testing.TB, b []byte) []byte {
	w, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(b, nil)
}

// summary is a Request copied out of the decoder.
type summary struct {
	Tag      string
	Entries  string
	Count    int
	Dropped  int
	Chunk    string
	HasChunk bool
	Mode     Mode
	Comp     Compression
	JSON     bool
}

func summarize(r *Request) summary {
	return summary{r.Tag, string(r.Entries), r.Count, r.Dropped, string(r.Chunk), r.HasChunk, r.Mode, r.Compression, r.JSON}
}

// decodeAll decodes every request of a stream.
func decodeAll(t testing.TB, r io.Reader, lim Limits) ([]summary, error) {
	t.Helper()
	d := newTestDecoder(r, lim)
	var out []summary
	for {
		req, err := d.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, summarize(req))
	}
}

func mustDecodeAll(t testing.TB, b []byte) []summary {
	t.Helper()
	s, err := decodeAll(t, bytes.NewReader(b), Limits{})
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return s
}

// entryOut is one decoded stored entry.
type entryOut struct {
	T   mpack.EventTime
	Rec string
}

func entriesOf(t testing.TB, entries []byte) []entryOut {
	t.Helper()
	var out []entryOut
	err := mpack.ForEachEntry(entries, func(tm mpack.EventTime, rec []byte) error {
		out = append(out, entryOut{tm, string(rec)})
		return nil
	})
	if err != nil {
		t.Fatalf("stored entries do not parse: %v", err)
	}
	return out
}

// splitReader returns its parts one Read at a time.
type splitReader struct{ parts [][]byte }

func (s *splitReader) Read(p []byte) (int, error) {
	for len(s.parts) > 0 && len(s.parts[0]) == 0 {
		s.parts = s.parts[1:]
	}
	if len(s.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.parts[0])
	s.parts[0] = s.parts[0][n:]
	return n, nil
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}
