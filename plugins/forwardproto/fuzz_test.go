package forwardproto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/logship/logship/internal/mpack"
)

// fuzzSeeds is one input of every kind the decoder reads.
func fuzzSeeds(t testing.TB) [][]byte {
	recs := testRecords(t)
	var seeds [][]byte
	for _, mc := range modeCases() {
		for _, tf := range timeForms(t)[:4] {
			times := [][]byte{tf.raw, tf.raw, tf.raw}
			var entries []byte
			for i := range recs {
				entries = append(entries, rawEntry(t, tf.raw, recs[i])...)
			}
			seeds = append(seeds, mc.build(t, times, recs, entries, "chunk"))
		}
	}
	var entries []byte
	for _, tf := range timeForms(t) {
		entries = append(entries, rawEntry(t, tf.raw, recs[0])...)
	}
	seeds = append(seeds,
		frame(t, "all.times", binOf(t, entries), map[string]any{"chunk": "x", "size": 99}),
		mixedStream(t),
		[]byte{0xc0},
		[]byte(`["t", 1700000000, {"a": [1, 2.5, "x", null, true]}, {"chunk": "j"}]`),
		[]byte(` ["t", [[1.5, {"k": "v"}], [0, {}]], {}]`+"\n"+`["t", "\u0092\u0001\u0080"]`),
		AppendHelo(nil, goldenHelo()),
		AppendPong(nil, goldenHelo(), Ping{SharedKeySalt: goldenSalt}, "s", "k", nil),
		AppendAck(nil, []byte("ack-id"), false),
		AppendAck(nil, []byte("ack-id"), true),
		frame(t, "t", binOf(t, gzipStd(t, make([]byte, 1<<20))), map[string]any{"compressed": "gzip"}),
		[]byte{0x92, 0xa1, 't', 0xc6, 0xff, 0xff, 0xff, 0xff},
	)
	ping, _ := AppendPing(nil, goldenHelo(), goldenClient, goldenSalt)
	seeds = append(seeds, ping)
	return seeds
}

// FuzzDecoder feeds arbitrary bytes to every reading entry point. The decoder
// must not panic, must keep its buffers within the limits, must fail only
// with its documented errors, must return entries in the pipeline's format,
// and must decode the same however the input is split.
func FuzzDecoder(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	lim := Limits{MaxFrameBytes: 64 << 10, MaxDecompressedBytes: 256 << 10, MaxEntries: 1000, MaxDepth: 8}
	f.Fuzz(func(t *testing.T, data []byte) {
		whole := fuzzDecode(t, bytes.NewReader(data), lim)
		mid := len(data) / 2
		split := fuzzDecode(t, &splitReader{parts: [][]byte{data[:mid:mid], data[mid:]}}, lim)
		if whole != split {
			t.Fatalf("split input decodes differently:\n%s\n%s", whole, split)
		}
		if len(data) < 1024 {
			if one := fuzzDecode(t, &splitReader{parts: oneByteParts(data)}, lim); one != whole {
				t.Fatalf("one-byte reads decode differently:\n%s\n%s", whole, one)
			}
		}
		// The client-side and handshake readers.
		_, _ = newTestDecoder(bytes.NewReader(data), lim).NextHelo()
		_, _ = newTestDecoder(bytes.NewReader(data), lim).NextPong()
		_, _ = newTestDecoder(bytes.NewReader(data), lim).NextAck()
		if p, err := newTestDecoder(bytes.NewReader(data), lim).NextPing(); err == nil {
			_ = VerifyPing(p, goldenHelo(), "k", goldenUsers)
		}
	})
}

func oneByteParts(b []byte) [][]byte {
	parts := make([][]byte, len(b))
	for i := range b {
		parts[i] = b[i : i+1 : i+1]
	}
	return parts
}

// fuzzDecode decodes a whole stream, checks every request and returns a
// digest of the results.
func fuzzDecode(t *testing.T, r io.Reader, lim Limits) string {
	d := newTestDecoder(r, lim)
	var out bytes.Buffer
	for {
		req, err := d.Next()
		checkBounds(t, d, lim)
		if err == io.EOF {
			return out.String()
		}
		if err != nil {
			switch {
			case errors.Is(err, ErrMalformed), errors.Is(err, ErrFrameTooLarge),
				errors.Is(err, ErrDecompressedTooLarge), errors.Is(err, io.ErrUnexpectedEOF),
				errors.Is(err, ErrTooManyEntries):
			default:
				t.Fatalf("undocumented error %v", err)
			}
			cls := "malformed"
			switch {
			case errors.Is(err, ErrFrameTooLarge):
				cls = "too large"
			case errors.Is(err, ErrDecompressedTooLarge):
				cls = "decompressed too large"
			case errors.Is(err, io.ErrUnexpectedEOF):
				cls = "truncated"
			case errors.Is(err, ErrTooManyEntries):
				cls = "too many entries"
			}
			fmt.Fprintf(&out, "error: %s\n", cls)
			return out.String()
		}
		n := 0
		err = mpack.ForEachEntry(req.Entries, func(tm mpack.EventTime, rec []byte) error {
			if tm.IsZero() {
				return errors.New("zero time stored")
			}
			n++
			return nil
		})
		if err != nil || n != req.Count {
			t.Fatalf("entries %x: %d events of %d: %v", req.Entries, n, req.Count, err)
		}
		if req.TooDeep < 0 || req.TooDeep > req.Dropped || req.Count+req.Dropped > lim.MaxEntries ||
			req.Count < 0 || req.Dropped < 0 || (req.Mode == ModeMessage && req.Count+req.Dropped != 1) {
			t.Fatalf("counts %+v", summarize(req))
		}
		fmt.Fprintf(&out, "%+v\n", summarize(req))
	}
}

// checkBounds: no buffer grows past what the limits allow.
func checkBounds(t *testing.T, d *Decoder, lim Limits) {
	frameMax := max(initialBuffer, lim.MaxFrameBytes)
	if cap(d.buf) > frameMax {
		t.Fatalf("read buffer %d > %d", cap(d.buf), frameMax)
	}
	if cap(d.inflated) > lim.MaxDecompressedBytes+1 {
		t.Fatalf("inflate buffer %d", cap(d.inflated))
	}
	if bound := max(lim.MaxDecompressedBytes, retainSmall); cap(d.out) > bound {
		t.Fatalf("entries buffer %d > %d", cap(d.out), bound)
	}
	if bound := 3*lim.MaxFrameBytes + 4096; cap(d.jbuf) > bound {
		t.Fatalf("JSON buffer %d > %d", cap(d.jbuf), bound)
	}
}

// FuzzSkipDepth: skipDepth measures any bytes as mpack.SkipValue does,
// unless it finds them too deep, and then they are deeper than the limit.
func FuzzSkipDepth(f *testing.F) {
	f.Add([]byte{0x81, 0xa1, 'k', 0x91, 0x91, 0x01})
	f.Add([]byte{0x92, 0x01, 0x80})
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	stack := make([]int, 4)
	f.Fuzz(func(t *testing.T, data []byte) {
		want, werr := mpack.SkipValue(data)
		rn, rdeep, rerr := skipRecord(data, 4, stack)
		got, deep, err := skipDepth(data, 4, stack)
		// On a valid value both agree; on an invalid one either may find
		// the depth or the error first.
		if werr == nil && (rdeep != deep || (rerr == nil) != (err == nil) || rn != got) {
			t.Fatalf("skipRecord %d %v %v, skipDepth %d %v %v", rn, rdeep, rerr, got, deep, err)
		}
		if deep {
			if werr != nil {
				return // too deep found before the truncation or the bad byte
			}
			// No fuzz input nests 4096 levels: without a binding limit the
			// length is SkipValue's.
			if n, deep, err := skipDepth(data, 4096, make([]int, 4096)); deep || err != nil || n != want {
				t.Fatalf("with a limit of 4096: %d %v %v, SkipValue %d", n, deep, err, want)
			}
			return
		}
		if (err == nil) != (werr == nil) || got != want {
			t.Fatalf("skipDepth %d %v, SkipValue %d %v", got, err, want, werr)
		}
	})
}
