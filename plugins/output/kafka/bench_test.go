package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logship/logship/pipeline"
)

// BenchmarkWrite produces 1000-event chunks to a three-broker kfake, one
// Write after another (Direct: franz-go producing the same JSON values
// with the same options, the client's own limit on this machine), and
// with WriteAsync keeping max_in_flight chunks in flight as the runner
// does, with and without exactly_once (a transaction per group of up to
// max_in_flight chunks).
func BenchmarkWrite(b *testing.B) {
	const per = 1000
	c := cluster(b, kfake.SeedTopics(3, "logs"))
	evs := events(per, time.Now(), func(i int) map[string]any {
		return map[string]any{"log": fmt.Sprintf("GET /api/v1/items/%d HTTP/1.1 200 512 0.003", i), "stream": "stdout", "host": "node-1"}
	})
	chunk := batch(b, "app.web", 0, evs...)
	for _, codec := range []string{"none", "zstd"} {
		b.Run("Write/"+codec, func(b *testing.B) {
			h := start(b, c, func(cfg *Config) { cfg.Compression = codec })
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				chunk.Offset = uint64(i)
				if err := h.out.Write(context.Background(), chunk); err != nil {
					b.Fatal(err)
				}
			}
			report(b, per)
		})
		for _, eo := range []bool{false, true} {
			name := "WriteAsync/" + codec
			if eo {
				name += "/exactly_once"
			}
			b.Run(name, func(b *testing.B) {
				h := start(b, c, func(cfg *Config) { cfg.Compression, cfg.ExactlyOnce = codec, eo })
				writeAsyncLoop(b, h.out, chunk)
				report(b, per)
			})
		}
		b.Run("Direct/"+codec, func(b *testing.B) {
			h := start(b, c, func(cfg *Config) { cfg.Compression = codec })
			cl, err := kgo.NewClient(h.out.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			// The same messages, encoded once up front.
			j := h.out.jobs.Get().(*job)
			if err := j.build(context.Background(), chunk, func(error) {}); err != nil {
				b.Fatal(err)
			}
			recs := make([]kgo.Record, per)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for k := range recs {
					recs[k] = j.recs[k]
					recs[k].Context = nil
				}
				ptrs := make([]*kgo.Record, per)
				for k := range recs {
					ptrs[k] = &recs[k]
				}
				if err := cl.ProduceSync(context.Background(), ptrs...).FirstErr(); err != nil {
					b.Fatal(err)
				}
			}
			report(b, per)
		})
	}
}

// writeAsyncLoop keeps max_in_flight copies of chunk in flight, at
// offsets 0 to b.N-1, as the runner does.
func writeAsyncLoop(b *testing.B, o *Output, chunk pipeline.Batch) {
	b.Helper()
	b.ReportAllocs()
	sem := make(chan struct{}, o.MaxInFlight())
	errc := make(chan error, 1)
	b.ResetTimer()
	for i := range b.N {
		sem <- struct{}{}
		cb := chunk
		cb.Offset = uint64(i)
		o.WriteAsync(context.Background(), cb, func(err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
			<-sem
		})
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}
}

func report(b *testing.B, per int) {
	b.Helper()
	el := b.Elapsed().Seconds()
	if el == 0 {
		return
	}
	n := float64(b.N * per)
	b.ReportMetric(n/el, "events/s")
	b.ReportMetric(el*1e9/n, "ns/event")
}
