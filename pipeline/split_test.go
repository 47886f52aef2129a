package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// captureInput hands its Emitter to the test.
type captureInput struct{ emit pipeline.Emitter }

func (c *captureInput) Start(_ context.Context, e pipeline.Emitter) error { c.emit = e; return nil }
func (c *captureInput) Stop(context.Context) error                        { return nil }

// sizedEntry is one [time, {"i": i, "pad": "xxx..."}] entry of about size bytes.
func sizedEntry(i, size int) []byte {
	rec := mpack.AppendMapHeader(nil, 2)
	rec = mpack.AppendString(rec, "i")
	rec = mpack.AppendInt(rec, int64(i))
	rec = mpack.AppendString(rec, "pad")
	rec = mpack.AppendString(rec, strings.Repeat("x", size))
	return mpack.AppendEntry(nil, mpack.EventTime{Sec: 1}, rec)
}

// TestEmitSplitsChunkLargerThanARecord: a chunk larger than the buffer can
// store in one record is stored in pieces, in order, and acked once; a
// single event too large on its own is dropped and counted, the rest is
// kept. Before, Emit failed with ErrTooLarge and the source resent forever.
func TestEmitSplitsChunkLargerThanARecord(t *testing.T) {
	buf, err := broker.Open(t.TempDir(), broker.WithPartitions(1), broker.WithSegmentBytes(4096), broker.WithSync(broker.SyncAlways))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	max := buf.MaxChunkBytes()

	var entries []byte
	want := []int64{}
	for i := range 60 {
		size := 100
		if i == 30 {
			size = int(max) + 10 // can never be stored
		} else {
			want = append(want, int64(i))
		}
		entries = append(entries, sizedEntry(i, size)...)
	}
	if int64(len(entries)) < 2*max {
		t.Fatalf("test chunk of %d bytes is not larger than two records (%d)", len(entries), max)
	}

	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg).Component(pipeline.KindInput, "in", "test")
	in := &captureInput{}
	out := newIntOutput()
	r := pipeline.NewRunner(buf, zap.NewNop(),
		[]pipeline.Component{{Name: "in", Type: "test", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: m}}, nil,
		[]pipeline.Component{comp("out", pipeline.KindOutput, "**", out)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		acks []error
	)
	if err := in.emit.Emit(context.Background(), pipeline.Chunk{Tag: "big", Entries: entries, Count: 60}, func(err error) {
		mu.Lock()
		acks = append(acks, err)
		mu.Unlock()
	}); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := len(out.values()); n != len(want) {
			return fmt.Errorf("delivered %d events, want %d", n, len(want))
		}
		return nil
	})
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(acks) != 1 || acks[0] != nil {
		t.Fatalf("acks = %v, want exactly one nil", acks)
	}
	mu.Unlock()
	if got := out.values(); !equalInts(got, want) {
		t.Fatalf("delivered %v\nwant %v", got, want)
	}
	if out.batches() < 2 {
		t.Fatalf("stored in %d records, want the chunk split", out.batches())
	}
	dropped := (counterOf(t, reg, "logship_dropped_records_total", "too_large"))
	if dropped != 1 {
		t.Fatalf("dropped_records_total{reason=too_large} = %v, want 1", dropped)
	}
}

// TestEmitTagTooLongIsDroppedNotRetried: a tag longer than the buffer can
// store drops the chunk, counted, and acks it, instead of an error that
// makes the source resend forever.
func TestEmitTagTooLongIsDroppedNotRetried(t *testing.T) {
	buf, err := broker.Open(t.TempDir(), broker.WithPartitions(1), broker.WithSync(broker.SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg).Component(pipeline.KindInput, "in", "test")
	in := &captureInput{}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{{Name: "in", Type: "test", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: m}}, nil, nil)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	acked := make(chan error, 2)
	err = in.emit.Emit(context.Background(), pipeline.Chunk{Tag: strings.Repeat("t", 70000), Entries: sizedEntry(1, 10), Count: 1}, func(err error) { acked <- err })
	if err != nil {
		t.Fatalf("Emit: %v", err)
	}
	if err := <-acked; err != nil {
		t.Fatalf("ack: %v", err)
	}
	if got := (counterOf(t, reg, "logship_dropped_records_total", "too_large")); got != 1 {
		t.Fatalf("dropped = %v, want 1", got)
	}
}

// intOutput records the "i" field of every event and the number of batches.
type intOutput struct {
	mu   sync.Mutex
	got  []int64
	nbat int
}

func newIntOutput() *intOutput                   { return &intOutput{} }
func (o *intOutput) Start(context.Context) error { return nil }
func (o *intOutput) Stop(context.Context) error  { return nil }
func (o *intOutput) Write(_ context.Context, b pipeline.Batch) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.nbat++
	return mpack.ForEachEntry(b.Entries, func(_ mpack.EventTime, rec []byte) error {
		// {"i": fixint or int16, ...}
		v := int64(rec[3])
		if rec[3] == 0xd1 {
			v = int64(int16(uint16(rec[4])<<8 | uint16(rec[5])))
		}
		o.got = append(o.got, v)
		return nil
	})
}

func (o *intOutput) values() []int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int64(nil), o.got...)
}

func (o *intOutput) batches() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nbat
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// counterOf returns the value of a counter family's series with the given
// reason label.
func counterOf(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		b.WriteString(mf.GetName() + " ")
	}
	t.Fatalf("no %s{reason=%q} among %s", name, reason, b.String())
	return 0
}
