package file

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
)

// BenchmarkWrite is the cost of one batch: the JSON lines, their write(2)
// and, with state=file, the state's pwrite; state=memory is the output
// without a data_dir (no state file). ns/op is ns per batch.
func BenchmarkWrite(b *testing.B) {
	for _, events := range []int{1, 100} {
		for _, mode := range []string{"memory", "file"} {
			b.Run(fmt.Sprintf("events=%d/state=%s", events, mode), func(b *testing.B) {
				dir := b.TempDir()
				set := pipeline.Settings{Name: "file", Type: "file", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindOutput, "file")}
				if mode == "file" {
					set.DataDir = filepath.Join(dir, "data")
				}
				o := &Output{cfg: &Config{Path: filepath.Join(dir, "all.log"), Mode: "0644"}, set: set}
				if err := o.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				defer o.Stop(context.Background())
				var recs [][]byte
				for i := range events {
					recs = append(recs, plainRecord(i))
				}
				bt := pipeline.Batch{Chunk: pipeline.Chunk{Tag: "bench", Entries: entries(recs...), Count: events}, Epoch: 1}
				b.SetBytes(int64(len(bt.Entries)))
				b.ResetTimer()
				for i := range b.N {
					bt.Partition, bt.Offset = i%4, uint64(i)
					if err := o.Write(context.Background(), bt); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
