package forward

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkDedupAck is the dedup cost of one acknowledged chunk: begin when
// the request arrives, finish (journal the id) when the buffer made it
// durable, with a journal on disk and a full window. Parallel runs the
// finishes of many connections at once, as the writer goroutines do under
// load; memory is serial without a journal: the window's own cost (hash,
// lookup, commit, eviction).
func BenchmarkDedupAck(b *testing.B) {
	run := func(b *testing.B, parallel bool, dir string) {
		d, err := openDedup(dir, 100000, time.Minute, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer d.close()
		var seq atomic.Uint64
		one := func(id []byte) {
			binary.BigEndian.PutUint64(id[8:], seq.Add(1))
			if !d.begin(id, func(error) {}) {
				b.Fatal("fresh id taken for a resend")
			}
			d.finish(id, nil)
		}
		b.ReportAllocs()
		b.ResetTimer()
		if !parallel {
			id := make([]byte, 16)
			for range b.N {
				one(id)
			}
			return
		}
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			id := make([]byte, 16)
			for pb.Next() {
				one(id)
			}
		})
		d.mu.Lock()
		b.ReportMetric(float64(d.writes)/float64(b.N), "writes/op")
		d.mu.Unlock()
	}
	b.Run("serial", func(b *testing.B) { run(b, false, b.TempDir()) })
	b.Run("parallel", func(b *testing.B) { run(b, true, b.TempDir()) })
	b.Run("memory", func(b *testing.B) { run(b, false, "") })
}
