package forwardproto

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

// TestMalformedRejected: bytes that are not a request fail with
// ErrMalformed, and the error is final.
func TestMalformedRejected(t *testing.T) {
	tm := marshal(t, 1700000000)
	rec := testRecords(t)[0]
	good := rawEntry(t, tm, rec)
	cases := map[string][]byte{
		"0xc1":                 {0xc1},
		"0xc1 inside":          {0x93, 0xa1, 't', 0xc1, 0x80},
		"not an array":         marshal(t, 5),
		"HTTP":                 []byte("GET / HTTP/1.1\r\n\r\n"),
		"a map":                marshal(t, map[string]any{"tag": "t"}),
		"array of 1":           marshal(t, []any{"t"}),
		"array of 5":           marshal(t, []any{"t", 1, rec, map[string]any{}, 1}),
		"tag int":              frame(t, 5, binOf(t, good)),
		"tag nil":              frame(t, nil, binOf(t, good)),
		"Message of 2":         frame(t, "t", 1),
		"Forward of 4":         frame(t, "t", []msgpack.RawMessage{good}, map[string]any{}, 1),
		"Packed of 4":          frame(t, "t", binOf(t, good), map[string]any{}, 1),
		"entries garbage":      frame(t, "t", binOf(t, cat(good, []byte{0xc1}))),
		"entries truncated":    frame(t, "t", binOf(t, cat(good, good[:len(good)-1]))),
		"entries huge len":     frame(t, "t", binOf(t, cat(good, []byte{0x92, 0x01, 0xdf, 0xff, 0xff, 0xff, 0xff}))),
		"option not a map":     frame(t, "t", binOf(t, good), "chunk"),
		"chunk not a string":   frame(t, "t", binOf(t, good), map[string]any{"chunk": 12}),
		"unknown compression":  frame(t, "t", binOf(t, good), map[string]any{"compressed": "lz4"}),
		"compressed int":       frame(t, "t", binOf(t, good), map[string]any{"compressed": 1}),
		"gzip garbage":         frame(t, "t", binOf(t, []byte("not gzip at all")), map[string]any{"compressed": "gzip"}),
		"gzip truncated":       frame(t, "t", binOf(t, gzipStd(t, good)[:20]), map[string]any{"compressed": "gzip"}),
		"gzip trailing junk":   frame(t, "t", binOf(t, cat(gzipStd(t, good), []byte("junk"))), map[string]any{"compressed": "gzip"}),
		"gzip of garbage":      frame(t, "t", binOf(t, gzipStd(t, []byte{0xc1, 0xc1})), map[string]any{"compressed": "gzip"}),
		"zstd garbage":         frame(t, "t", binOf(t, []byte("not zstd at all")), map[string]any{"compressed": "zstd"}),
		"ext as entries":       frame(t, "t", msgpack.RawMessage{0xd4, 0x01, 0x00}),
		"heartbeat then junk":  {0xc0, 0x07},
		"JSON then msgpack":    cat([]byte(`["t",1,{}]`), good),
		"JSON non-array first": []byte(`{"a":1}`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			d := newTestDecoder(bytes.NewReader(b), Limits{})
			var err error
			for err == nil {
				_, err = d.Next()
			}
			wantErr(t, err, ErrMalformed)
			if _, err2 := d.Next(); err2 != err {
				t.Fatalf("error not final: %v then %v", err, err2)
			}
		})
	}
}

// TestTruncatedFrame: a stream that ends inside a frame fails with
// io.ErrUnexpectedEOF, at every cut.
func TestTruncatedFrame(t *testing.T) {
	f := frame(t, "app", binOf(t, entriesN(t, 5)), map[string]any{"chunk": "c"})
	for cut := 1; cut < len(f); cut++ {
		_, err := decodeAll(t, bytes.NewReader(f[:cut]), Limits{})
		wantErr(t, err, io.ErrUnexpectedEOF)
	}
}

// TestFrameTooLarge: a frame over the limit fails; a length prefix claiming
// gigabytes fails as soon as it is read, without buffering.
func TestFrameTooLarge(t *testing.T) {
	entries := entriesN(t, 50)
	f := frame(t, "t", binOf(t, entries))
	if _, err := decodeAll(t, bytes.NewReader(f), Limits{MaxFrameBytes: len(f)}); err != nil {
		t.Fatalf("a frame at the limit: %v", err)
	}
	_, err := decodeAll(t, bytes.NewReader(f), Limits{MaxFrameBytes: len(f) - 1})
	wantErr(t, err, ErrFrameTooLarge)

	huge := map[string][]byte{
		"bin32 4GiB":           {0x92, 0xa1, 't', 0xc6, 0xff, 0xff, 0xff, 0xff},
		"str32 2GiB":           {0x92, 0xa1, 't', 0xdb, 0x80, 0, 0, 0},
		"array32 of 4G":        {0xdd, 0xff, 0xff, 0xff, 0xff},
		"map32 of 4G":          {0xdf, 0xff, 0xff, 0xff, 0xff},
		"ext32":                {0x92, 0xa1, 't', 0xc9, 0xff, 0xff, 0xff, 0xff, 0},
		"tag str32":            {0x92, 0xdb, 0x7f, 0xff, 0xff, 0xff},
		"entries array32":      {0x92, 0xa1, 't', 0xdd, 0x10, 0, 0, 0},
		"nested map32":         {0x93, 0xa1, 't', 0x01, 0x81, 0xa1, 'k', 0xdf, 0x01, 0, 0, 0},
		"bin32 just over 16MB": {0x92, 0xa1, 't', 0xc6, 0x01, 0x00, 0x00, 0x00},
	}
	for name, prefix := range huge {
		cr := &countingReader{r: io.MultiReader(bytes.NewReader(prefix), zeros{})}
		_, err := decodeAll(t, cr, Limits{})
		wantErr(t, err, ErrFrameTooLarge)
		if cr.n > initialBuffer {
			t.Errorf("%s: read %d bytes before failing", name, cr.n)
		}
	}
}

// TestDecompressionBomb: gzip and zstd entries inflating past the limit are
// refused without being inflated, in bounded memory.
func TestDecompressionBomb(t *testing.T) {
	const limit = 1 << 20
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 32 { // 32 MiB of zeros, ~32 KiB compressed
		_, _ = w.Write(zero)
	}
	_ = w.Close()
	bombs := map[string][]byte{
		"gzip":              frame(t, "t", binOf(t, gz.Bytes()), map[string]any{"compressed": "gzip", "chunk": "x"}),
		"gzip multi-member": frame(t, "t", binOf(t, cat(gz.Bytes(), gz.Bytes())), map[string]any{"compressed": "gzip"}),
		"zstd":              frame(t, "t", binOf(t, zstdOf(t, make([]byte, 32<<20))), map[string]any{"compressed": "zstd"}),
	}
	for name, b := range bombs {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		d := newTestDecoder(bytes.NewReader(b), Limits{MaxDecompressedBytes: limit})
		_, err := d.Next()
		runtime.ReadMemStats(&after)
		wantErr(t, err, ErrDecompressedTooLarge)
		if cap(d.inflated) > limit+1 {
			t.Errorf("%s: inflated buffer grew to %d", name, cap(d.inflated))
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 12*limit {
			t.Errorf("%s: allocated %d bytes for a %d limit", name, alloc, limit)
		}
	}
	// Just under the limit is fine.
	entries := entriesN(t, 1000)
	b := frame(t, "t", binOf(t, gzipStd(t, entries)), map[string]any{"compressed": "gzip"})
	if got, err := decodeAll(t, bytes.NewReader(b), Limits{MaxDecompressedBytes: len(entries)}); err != nil || got[0].Count != 1000 {
		t.Fatalf("%v %v", got, err)
	}
	_, err := decodeAll(t, bytes.NewReader(b), Limits{MaxDecompressedBytes: len(entries) - 1})
	wantErr(t, err, ErrDecompressedTooLarge)
}

// flakyReader fails once with a deadline error after its first part.
type flakyReader struct {
	parts  [][]byte
	failed bool
}

func (f *flakyReader) Read(p []byte) (int, error) {
	if len(f.parts) == 0 {
		return 0, io.EOF
	}
	if len(f.parts) == 1 && !f.failed {
		f.failed = true
		return 0, os.ErrDeadlineExceeded
	}
	n := copy(p, f.parts[0])
	if f.parts[0] = f.parts[0][n:]; len(f.parts[0]) == 0 {
		f.parts = f.parts[1:]
	}
	return n, nil
}

// TestReadErrorsAreNotFinal: a read deadline mid-frame is returned as is, and
// the next call resumes the frame.
func TestReadErrorsAreNotFinal(t *testing.T) {
	f := frame(t, "t", binOf(t, entriesN(t, 10)), map[string]any{"chunk": "c"})
	d := newTestDecoder(&flakyReader{parts: [][]byte{f[:17], f[17:]}}, Limits{})
	_, err := d.Next()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%v", err)
	}
	req, err := d.Next()
	if err != nil || req.Count != 10 || string(req.Chunk) != "c" {
		t.Fatalf("%v %v", req, err)
	}
	if _, err := d.Next(); err != io.EOF {
		t.Fatal(err)
	}
}

// TestDecoderSteadyStateAllocs: decoding PackedForward allocates nothing per
// request once warmed up.
func TestDecoderSteadyStateAllocs(t *testing.T) {
	rec := testRecords(t)[1]
	var fluentBit []byte
	for i := range 100 {
		fluentBit = append(fluentBit, rawEntry(t, marshal(t, []any{mpack.EventTime{Sec: 1700000000 + uint32(i)}, map[string]any{}}), rec)...)
	}
	for name, f := range map[string][]byte{
		"kept":      frame(t, "app.log", binOf(t, entriesN(t, 100)), map[string]any{"chunk": "abc", "size": 100}),
		"rewritten": frame(t, "app.log", binOf(t, fluentBit), map[string]any{"chunk": "abc", "size": 100}),
		"gzip":      frame(t, "app.log", binOf(t, gzipStd(t, entriesN(t, 100))), map[string]any{"chunk": "abc", "compressed": "gzip"}),
	} {
		d := newTestDecoder(&loopReader{data: f}, Limits{})
		for range 3 {
			if _, err := d.Next(); err != nil {
				t.Fatal(err)
			}
		}
		allocs := testing.AllocsPerRun(100, func() {
			if req, err := d.Next(); err != nil || req.Count != 100 {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per request", name, allocs)
		}
	}
}

// loopReader repeats data forever, like a peer sending the same request.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.off:])
		n += c
		l.off = (l.off + c) % len(l.data)
	}
	return n, nil
}

// TestDecoderReset: a decoder is reusable on a new stream.
func TestDecoderReset(t *testing.T) {
	d := newTestDecoder(bytes.NewReader([]byte{0xc1}), Limits{})
	_, err := d.Next()
	wantErr(t, err, ErrMalformed)
	d.Reset(bytes.NewReader([]byte(`["t",1,{"a":1}]`)))
	req, err := d.Next()
	if err != nil || !req.JSON || req.Count != 1 {
		t.Fatalf("%v %v", req, err)
	}
	d.Reset(bytes.NewReader(frame(t, "t", 1, map[string]any{})))
	req, err = d.Next()
	if err != nil || req.JSON || req.Count != 1 {
		t.Fatalf("%v %v", req, err)
	}
	if d.Buffered() != 0 || fmt.Sprint(req.Mode) != "Message" {
		t.Fatal(d.Buffered(), req.Mode)
	}
}
