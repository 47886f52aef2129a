package pipeline_test

import (
	"context"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/pipeline"
)

// BenchmarkEmitSource is the cost of keeping a source position with each
// chunk (Chunk.Source: the record's meta and the pending floor), against
// the same Emit without one: 10 events of 200 bytes per chunk, into a
// buffer that does not fsync (so that the difference is not lost in it)
// and drops its oldest segments instead of blocking.
//
//	go test -run '^$' -bench BenchmarkEmitSource -count 5 ./pipeline/
func BenchmarkEmitSource(b *testing.B) {
	var entries []byte
	for i := range 10 {
		entries = append(entries, sizedEntry(i, 180)...)
	}
	src := []byte("0123456789abcdef01234567") // a chunk id's size
	for _, withSource := range []bool{false, true} {
		name := "none"
		if withSource {
			name = "source"
		}
		b.Run(name, func(b *testing.B) {
			buf, err := broker.Open(b.TempDir(), broker.WithPartitions(1), broker.WithSync(broker.SyncNone), broker.WithSegmentBytes(16<<20), broker.WithMaxBytes(128<<20), broker.WithWhenFull(broker.DropOldest))
			if err != nil {
				b.Fatal(err)
			}
			defer buf.Close()
			in := &captureInput{}
			r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{{Name: "in", Type: "test", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: pipeline.NopMetrics(pipeline.KindInput, "in")}}, nil, nil)
			if err := r.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer r.Stop(context.Background())
			c := pipeline.Chunk{Tag: "bench", Entries: entries, Count: 10}
			if withSource {
				c.Source = src
			}
			var wg sync.WaitGroup
			ack := func(error) { wg.Done() }
			b.SetBytes(int64(len(entries)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				wg.Add(1)
				if err := in.emit.Emit(context.Background(), c, ack); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
		})
	}
}
