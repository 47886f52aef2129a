package tail

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/pipeline"
)

// countingEmitter counts events and acknowledges every chunk at once. It
// implements pipeline.Positions, as the pipeline's emitter does, so that
// the chunks carry their source positions.
type countingEmitter struct {
	events atomic.Int64
	bytes  atomic.Int64
	want   int64
	done   chan struct{}
}

var _ pipeline.Positions = (*countingEmitter)(nil)

func (e *countingEmitter) Floor() []uint64 { return []uint64{0} }

func (e *countingEmitter) Sources(context.Context, []uint64, func(int, uint64, []byte) error) error {
	return nil
}

func (e *countingEmitter) Emit(_ context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	e.bytes.Add(int64(len(c.Entries) + len(c.Source)))
	broker.PutBuffer(c.Own) // as the buffer does once it wrote the chunk
	if e.events.Add(int64(c.Count)) == e.want {
		close(e.done)
	}
	ack(nil)
	return nil
}

// benchFile writes a log of lineLen-byte lines (newline included) of
// about mib MiB, in the given format, once per benchmark run.
func benchFile(b *testing.B, format string, lineLen, mib int) (path string, lines int64) {
	b.Helper()
	path = filepath.Join(b.TempDir(), "big.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	total := int64(mib) << 20
	ts := "2024-05-06T07:08:09.123456789Z"
	var written int64
	for written < total {
		var prefix string
		switch format {
		case FormatJSON:
			prefix = fmt.Sprintf(`{"level":"info","n":%d,"msg":"`, lines)
		case FormatCRI:
			prefix = ts + " stdout F " + strconv.FormatInt(lines, 10) + " "
		case FormatDocker:
			prefix = fmt.Sprintf(`{"log":"%d `, lines)
		default:
			prefix = strconv.FormatInt(lines, 10) + " "
		}
		suffix := "\n"
		switch format {
		case FormatJSON:
			suffix = `"}` + "\n"
		case FormatDocker:
			suffix = `\n","stream":"stdout","time":"` + ts + `"}` + "\n"
		}
		pad := max(lineLen-len(prefix)-len(suffix), 1)
		w.WriteString(prefix)
		for i := range pad {
			w.WriteByte('a' + byte((int(lines)+i)%26))
		}
		w.WriteString(suffix)
		written += int64(len(prefix) + pad + len(suffix))
		lines++
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return path, lines
}

func benchTail(b *testing.B, format string, lineLen, mib int) {
	path, lines := benchFile(b, format, lineLen, mib)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Paths = []string{path}
	cfg.Format = format
	cfg.ReadFromHead = true
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		set := pipeline.Settings{Name: "tail.bench", Type: "tail", DataDir: b.TempDir(), Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "tail.bench")}
		in, err := New(set, cfg)
		if err != nil {
			b.Fatal(err)
		}
		e := &countingEmitter{want: lines, done: make(chan struct{})}
		b.StartTimer()
		if err := in.Start(context.Background(), e); err != nil {
			b.Fatal(err)
		}
		select {
		case <-e.done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("read %d of %d lines", e.events.Load(), lines)
		}
		b.StopTimer()
		if err := in.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(lines*int64(b.N)), "ns/line")
}

// benchMiB is the size of the benchmark file: TAIL_BENCH_MIB, 256 by
// default.
func benchMiB() int {
	if n, err := strconv.Atoi(os.Getenv("TAIL_BENCH_MIB")); err == nil && n > 0 {
		return n
	}
	return 256
}

// BenchmarkTailLargeFile is the headline figure: a large file of 200-byte
// lines read through the input (format none) into a counting emitter.
// Run it per core with -cpu 1:
//
//	go test -run '^$' -bench TailLargeFile -cpu 1 ./plugins/input/tail/
func BenchmarkTailLargeFile(b *testing.B) {
	benchTail(b, FormatNone, 200, benchMiB())
}

// BenchmarkTailFormats compares the formats on smaller files.
func BenchmarkTailFormats(b *testing.B) {
	mib := max(benchMiB()/4, 1)
	for _, format := range []string{FormatNone, FormatJSON, FormatCRI, FormatDocker} {
		for _, lineLen := range []int{100, 1000} {
			b.Run(fmt.Sprintf("%s/line%d", format, lineLen), func(b *testing.B) { benchTail(b, format, lineLen, mib) })
		}
	}
}
