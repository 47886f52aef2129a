package forwardproto

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

// benchRecord is a container-log-like record of about 200 bytes.
func benchRecord(b testing.TB, i int) []byte {
	return marshal(b, map[string]any{
		"log":    fmt.Sprintf("2024-05-01T12:00:00.000Z INFO request %06d served GET /api/v1/items?page=3 status=200 bytes=5123 %s", i, strings.Repeat("x", 40)),
		"stream": "stdout",
		"kubernetes": map[string]any{
			"pod": "web-7d9f8c6b5-abcde", "namespace": "prod", "container": "app",
		},
	})
}

func benchEntries(b testing.TB, n int, tm func(i int) []byte) []byte {
	var out []byte
	for i := range n {
		out = append(out, rawEntry(b, tm(i), benchRecord(b, i))...)
	}
	return out
}

func eventTimeRaw(i int) []byte {
	return mpack.EventTime{Sec: 1700000000 + uint32(i), Nsec: 1}.AppendMsgpack(nil)
}

// benchDecode decodes frame over and over, events events per frame.
func benchDecode(b *testing.B, frame []byte, events int) {
	d := newTestDecoder(&loopReader{data: frame}, Limits{})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req, err := d.Next()
		if err != nil || req.Count != events {
			b.Fatal(err, req.Count)
		}
	}
	total := float64(b.N) * float64(events)
	b.ReportMetric(total/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/event")
}

// BenchmarkDecodePackedForward: the pass-through path, entries kept as
// received.
func BenchmarkDecodePackedForward(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprint("events=", n), func(b *testing.B) {
			entries := benchEntries(b, n, eventTimeRaw)
			benchDecode(b, frame(b, "kube.var.log.containers.web", binOf(b, entries), map[string]any{"chunk": "c2VuZGVyAAEAAAAAAAAAKg==", "size": n}), n)
		})
	}
}

// BenchmarkDecodePackedForwardRewrite: every entry needs rewriting (Fluent
// Bit 5.x [[time, metadata], record]).
func BenchmarkDecodePackedForwardRewrite(b *testing.B) {
	meta := marshal(b, map[string]any{})
	entries := benchEntries(b, 1000, func(i int) []byte {
		return marshal(b, []msgpack.RawMessage{eventTimeRaw(i), meta})
	})
	benchDecode(b, frame(b, "fluentbit", binOf(b, entries), map[string]any{"chunk": "c"}), 1000)
}

func BenchmarkDecodeForward(b *testing.B) {
	var es []msgpack.RawMessage
	for i := range 1000 {
		es = append(es, rawEntry(b, eventTimeRaw(i), benchRecord(b, i)))
	}
	benchDecode(b, frame(b, "fwd", es, map[string]any{"chunk": "c"}), 1000)
}

func BenchmarkDecodeMessage(b *testing.B) {
	benchDecode(b, frame(b, "app", msgpack.RawMessage(eventTimeRaw(0)), msgpack.RawMessage(benchRecord(b, 0)), map[string]any{"chunk": "c"}), 1)
}

func BenchmarkDecodeCompressed(b *testing.B) {
	entries := benchEntries(b, 1000, eventTimeRaw)
	b.Run("gzip", func(b *testing.B) {
		benchDecode(b, frame(b, "gz", binOf(b, gzipStd(b, entries)), map[string]any{"compressed": "gzip", "chunk": "c"}), 1000)
	})
	b.Run("zstd", func(b *testing.B) {
		benchDecode(b, frame(b, "zs", binOf(b, zstdOf(b, entries)), map[string]any{"compressed": "zstd", "chunk": "c"}), 1000)
	})
}

func BenchmarkEncodePackedForward(b *testing.B) {
	entries := benchEntries(b, 1000, eventTimeRaw)
	id := ChunkID([6]byte{1, 2, 3, 4, 5, 6}, 7, 8)
	for _, c := range []Compression{CompressNone, CompressGzip, CompressZstd} {
		b.Run(c.String(), func(b *testing.B) {
			e := NewEncoder()
			var buf []byte
			b.SetBytes(int64(len(entries)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = e.AppendPackedForward(buf[:0], "out", entries, 1000, id, c); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(len(buf))/float64(len(entries)), "ratio")
		})
	}
}
