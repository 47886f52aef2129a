package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

type sourceRec struct {
	partition int
	offset    uint64
	source    string
}

func sourcesOf(t *testing.T, e pipeline.Emitter, from []uint64) []sourceRec {
	t.Helper()
	pos, ok := e.(pipeline.Positions)
	if !ok {
		t.Fatal("the Emitter does not implement Positions")
	}
	var out []sourceRec
	err := pos.Sources(context.Background(), from, func(p int, off uint64, src []byte) error {
		out = append(out, sourceRec{p, off, string(src)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func startCapture(t *testing.T, buf *broker.Broker, names ...string) []*captureInput {
	t.Helper()
	var ins []*captureInput
	var comps []pipeline.Component
	for _, n := range names {
		in := &captureInput{}
		ins = append(ins, in)
		comps = append(comps, pipeline.Component{Name: n, Type: "test", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: pipeline.NopMetrics(pipeline.KindInput, n)})
	}
	r := pipeline.NewRunner(buf, zap.NewNop(), comps, nil, nil)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	return ins
}

func emitWait(t *testing.T, e pipeline.Emitter, c pipeline.Chunk) {
	t.Helper()
	done := make(chan error, 1)
	if err := e.Emit(context.Background(), c, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSourcesAreStoredWithTheirChunks: an input's Chunk.Source comes back
// from Sources after a reopen of the buffer, in offset order, only that
// input's (another input's sources and chunks without one are skipped),
// and only from the floor given.
func TestSourcesAreStoredWithTheirChunks(t *testing.T) {
	dir := t.TempDir()
	buf, err := broker.Open(dir, broker.WithPartitions(1), broker.WithSync(broker.SyncAlways))
	if err != nil {
		t.Fatal(err)
	}
	ins := startCapture(t, buf, "tail.a", "tail.ab")
	entry := sizedEntry(1, 10)
	var mid []uint64
	for i := 0; i < 10; i++ {
		if i == 6 {
			// the last ack's floor is released just after the ack returned
			testutil.CheckFor(t, 5*time.Second, func() error {
				mid = ins[0].emit.(pipeline.Positions).Floor()
				if mid[0] != buf.NextOffset(0) {
					return fmt.Errorf("floor %v", mid)
				}
				return nil
			})
		}
		emitWait(t, ins[0].emit, pipeline.Chunk{Tag: "x", Entries: entry, Count: 1, Source: []byte(fmt.Sprintf("a%d", i))})
		emitWait(t, ins[1].emit, pipeline.Chunk{Tag: "x", Entries: entry, Count: 1, Source: []byte(fmt.Sprintf("b%d", i))})
		emitWait(t, ins[0].emit, pipeline.Chunk{Tag: "x", Entries: entry, Count: 1}) // no source
	}
	got := sourcesOf(t, ins[0].emit, nil)
	var want []string
	for i := 0; i < 10; i++ {
		want = append(want, fmt.Sprintf("{0 %d a%d}", 3*i, i))
	}
	if fmt.Sprint(got) != "["+strings.Join(want, " ")+"]" {
		t.Fatalf("sources of tail.a:\n%v\nwant\n%v", got, want)
	}
	if fmt.Sprint(mid) != "[18]" {
		t.Fatalf("floor with nothing pending = %v, want the next offset [18]", mid)
	}
	if got := sourcesOf(t, ins[0].emit, mid); fmt.Sprint(got) != "[{0 18 a6} {0 21 a7} {0 24 a8} {0 27 a9}]" {
		t.Fatalf("sources from the floor: %v", got)
	}
	// another buffer open: the sources are in the durable records
	_ = buf.Close()
	buf2, err := broker.Open(dir, broker.WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	defer buf2.Close()
	ins2 := startCapture(t, buf2, "tail.ab")
	got = sourcesOf(t, ins2[0].emit, []uint64{25})
	if fmt.Sprint(got) != "[{0 25 b8} {0 28 b9}]" {
		t.Fatalf("after reopen, sources of tail.ab from 25: %v", got)
	}
}

// TestFloorHoldsWhilePending: while a chunk's ack has not returned to the
// input, Floor stays at or below its record, even as later chunks (of this
// input without a source, or of others) move the partition on; once the
// ack returned it moves to the next offset.
func TestFloorHoldsWhilePending(t *testing.T) {
	buf, err := broker.Open(t.TempDir(), broker.WithPartitions(2), broker.WithSync(broker.SyncAlways))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	ins := startCapture(t, buf, "in", "other")
	pos := ins[0].emit.(pipeline.Positions)
	entry := sizedEntry(1, 10)
	tag := "x"
	p := buf.PartitionFor(tag)
	for i := 0; i < 3; i++ {
		emitWait(t, ins[1].emit, pipeline.Chunk{Tag: tag, Entries: entry, Count: 1})
	}
	release := make(chan struct{})
	acked := make(chan struct{})
	if err := ins[0].emit.Emit(context.Background(), pipeline.Chunk{Tag: tag, Entries: entry, Count: 1, Source: []byte("s")}, func(error) {
		close(acked)
		<-release // the input is still handling the ack
	}); err != nil {
		t.Fatal(err)
	}
	<-acked
	// The ack blocks the partition's sync goroutine: appends are written
	// (and get offsets), their acks wait.
	later := make(chan error, 10)
	for i := 0; i < 5; i++ {
		for _, c := range []struct {
			e   pipeline.Emitter
			tag string
			src []byte
		}{{ins[1].emit, tag, []byte("o")}, {ins[0].emit, tag, nil}} {
			if err := c.e.Emit(context.Background(), pipeline.Chunk{Tag: c.tag, Entries: entry, Count: 1, Source: c.src}, func(err error) { later <- err }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := buf.NextOffset(p); n != 14 {
		t.Fatalf("next offset %d, want 14", n)
	}
	if f := pos.Floor(); f[p] != 3 {
		t.Fatalf("floor %v while the chunk at offset 3 of partition %d is pending, want 3", f, p)
	}
	close(release)
	for i := 0; i < 10; i++ {
		if err := <-later; err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f := pos.Floor()
		if f[p] == buf.NextOffset(p) && f[1-p] == buf.NextOffset(1-p) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("floor %v after the ack, want the next offsets", f)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSourceGoesWithTheLastPiece: a chunk split into several records
// stores its source once, in the last piece, so that a position is never
// durable before all of the data it covers.
func TestSourceGoesWithTheLastPiece(t *testing.T) {
	buf, err := broker.Open(t.TempDir(), broker.WithPartitions(1), broker.WithSegmentBytes(4096), broker.WithSync(broker.SyncAlways))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	ins := startCapture(t, buf, "in")
	var entries []byte
	for i := range 60 {
		entries = append(entries, sizedEntry(i, 100)...)
	}
	emitWait(t, ins[0].emit, pipeline.Chunk{Tag: "big", Entries: entries, Count: 60, Source: []byte("end")})
	n := buf.NextOffset(0)
	if n < 2 {
		t.Fatalf("chunk stored in %d records, want it split", n)
	}
	if got := sourcesOf(t, ins[0].emit, nil); fmt.Sprint(got) != fmt.Sprintf("[{0 %d end}]", n-1) {
		t.Fatalf("sources %v, want one, in the last record %d", got, n-1)
	}
	// a source too large is refused, not stored without it
	err = ins[0].emit.Emit(context.Background(), pipeline.Chunk{Tag: "t", Entries: sizedEntry(1, 1), Count: 1, Source: make([]byte, 2000)}, func(error) { t.Error("ack called") })
	if err == nil {
		t.Fatal("Emit took a 2000-byte source")
	}
	// (the big chunk's floor is released just after its ack returned)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if f := ins[0].emit.(pipeline.Positions).Floor(); f[0] != buf.NextOffset(0) {
			return fmt.Errorf("floor %v held by a refused chunk", f)
		}
		return nil
	})
}
