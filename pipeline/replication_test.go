package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// handInput hands its Emitter to the test, which emits by hand.
type handInput struct {
	emit pipeline.Emitter
}

func (in *handInput) Start(_ context.Context, emit pipeline.Emitter) error {
	in.emit = emit
	return nil
}
func (in *handInput) Stop(context.Context) error { return nil }

// send emits one event of tag and returns where its ack goes.
func (in *handInput) send(t *testing.T, tag string) <-chan error {
	t.Helper()
	return in.sendEntries(t, tag, oneEvent(0), 1)
}

func (in *handInput) sendEntries(t *testing.T, tag string, entries []byte, n int) <-chan error {
	t.Helper()
	acked := make(chan error, 2)
	if err := in.emit.Emit(context.Background(), pipeline.Chunk{Tag: tag, Entries: entries, Count: n}, func(err error) { acked <- err }); err != nil {
		t.Fatal(err)
	}
	return acked
}

func oneEvent(i int) []byte {
	rec := mpack.AppendMapHeader(nil, 1)
	rec = mpack.AppendString(rec, "i")
	rec = mpack.AppendInt(rec, int64(i))
	return mpack.AppendEntry(nil, mpack.EventTime{Sec: 1}, rec)
}

// gateOutput blocks every Write until the gate opens, then returns err.
type gateOutput struct {
	gate    chan struct{}
	entered chan pipeline.Batch
	err     error
	once    sync.Once
}

func newGateOutput() *gateOutput {
	return &gateOutput{gate: make(chan struct{}), entered: make(chan pipeline.Batch, 100)}
}

func (o *gateOutput) open()                       { o.once.Do(func() { close(o.gate) }) }
func (o *gateOutput) Start(context.Context) error { return nil }
func (o *gateOutput) Stop(context.Context) error  { return nil }
func (o *gateOutput) Write(ctx context.Context, b pipeline.Batch) error {
	o.entered <- b
	select {
	case <-o.gate:
		return o.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitWrite waits until o is writing a batch (so the chunk is durable and
// read back).
func (o *gateOutput) waitWrite(t *testing.T) pipeline.Batch {
	t.Helper()
	select {
	case b := <-o.entered:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("the output was given no batch")
	}
	return pipeline.Batch{}
}

func notAcked(t *testing.T, acked <-chan error, d time.Duration) {
	t.Helper()
	select {
	case err := <-acked:
		t.Fatalf("acked (%v) before the outputs delivered", err)
	case <-time.After(d):
	}
}

func ackedWith(t *testing.T, acked <-chan error) error {
	t.Helper()
	select {
	case err := <-acked:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no ack")
	}
	return nil
}

// downstreamRunner runs a handInput with the given ack level against outs
// (name -> match, output).
func downstreamRunner(t *testing.T, buf *broker.Broker, level pipeline.AckLevel, metrics *pipeline.ComponentMetrics, outs ...pipeline.Component) (*handInput, *pipeline.Runner) {
	t.Helper()
	in := &handInput{}
	ic := comp("in", pipeline.KindInput, "", in)
	ic.Ack = level
	if metrics != nil {
		ic.Metrics = metrics
	}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{ic}, nil, outs)
	r.MinBackoff, r.MaxBackoff = time.Millisecond, 5*time.Millisecond
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return in, r
}

func stopRunner(t *testing.T, r *pipeline.Runner, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_ = r.Stop(ctx)
}

// TestAckLocalBeforeDelivery: the default level acknowledges once the chunk
// is durable, while the output still holds it.
func TestAckLocalBeforeDelivery(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	out := newGateOutput()
	in, r := downstreamRunner(t, buf, "", nil, comp("out", pipeline.KindOutput, "**", out))
	acked := in.send(t, "a.x")
	out.waitWrite(t)
	if err := ackedWith(t, acked); err != nil {
		t.Fatal(err)
	}
	out.open()
	stopRunner(t, r, 5*time.Second)
}

// TestAckDownstreamAfterCommit: with ack: downstream the ack comes only
// once the output has delivered the chunk and committed past it, and its
// latency is observed.
func TestAckDownstreamAfterCommit(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg).Component(pipeline.KindInput, "in", "test")
	out := newGateOutput()
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, m, comp("out", pipeline.KindOutput, "**", out))
	defer stopRunner(t, r, 5*time.Second)
	acked := in.send(t, "a.x")
	out.waitWrite(t)
	notAcked(t, acked, 200*time.Millisecond)
	out.open()
	if err := ackedWith(t, acked); err != nil {
		t.Fatal(err)
	}
	if n := histogramCount(t, reg, "logship_downstream_ack_seconds"); n != 1 {
		t.Fatalf("latency observed %d times, want 1", n)
	}
	// Chunks sent after the output caught up are acked too.
	for i := range 20 {
		if err := ackedWith(t, in.send(t, fmt.Sprintf("t.%d", i))); err != nil {
			t.Fatal(err)
		}
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != name || mf.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range mf.GetMetric() {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}

// TestAckDownstreamOnlyMatchingOutputs: an output whose match does not
// cover the tag is not waited for (even while it is stuck), one that does
// is; a tag no output matches is acked once durable.
func TestAckDownstreamOnlyMatchingOutputs(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	outA := newGateOutput()
	outB := newGateOutput() // never opens before the end
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, nil,
		comp("outA", pipeline.KindOutput, "a.**", outA), comp("outB", pipeline.KindOutput, "b.**", outB))
	defer stopRunner(t, r, 5*time.Second)
	defer outB.open()
	acked := in.send(t, "a.x")
	outA.waitWrite(t)
	notAcked(t, acked, 100*time.Millisecond)
	outA.open()
	if err := ackedWith(t, acked); err != nil {
		t.Fatal(err)
	}
	// Matched by no output: nothing to wait for.
	if err := ackedWith(t, in.send(t, "c.x")); err != nil {
		t.Fatal(err)
	}
	// outB is stuck: its chunk waits.
	ackB := in.send(t, "b.x")
	outB.waitWrite(t)
	notAcked(t, ackB, 100*time.Millisecond)
	outB.open()
	if err := ackedWith(t, ackB); err != nil {
		t.Fatal(err)
	}
}

// TestAckDownstreamBothOutputs: a tag two outputs match waits for both.
func TestAckDownstreamBothOutputs(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	out1, out2 := newGateOutput(), newGateOutput()
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, nil,
		comp("out1", pipeline.KindOutput, "**", out1), comp("out2", pipeline.KindOutput, "a.**", out2))
	defer stopRunner(t, r, 5*time.Second)
	acked := in.send(t, "a.x")
	out1.waitWrite(t)
	out2.waitWrite(t)
	out1.open()
	notAcked(t, acked, 200*time.Millisecond)
	out2.open()
	if err := ackedWith(t, acked); err != nil {
		t.Fatal(err)
	}
}

// TestAckDownstreamPermanentErrorAcks: a batch the output refuses for good
// is skipped by the runner and counts as delivered: the source gets its ack
// (nil) and does not resend it forever.
func TestAckDownstreamPermanentErrorAcks(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	out := newGateOutput()
	out.err = pipeline.Permanent(errors.New("never"))
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, nil, comp("out", pipeline.KindOutput, "**", out))
	defer stopRunner(t, r, 5*time.Second)
	acked := in.send(t, "a.x")
	out.waitWrite(t)
	notAcked(t, acked, 100*time.Millisecond)
	out.open()
	if err := ackedWith(t, acked); err != nil {
		t.Fatalf("ack %v, want nil", err)
	}
}

// TestAckDownstreamRetriedUntilDelivered: transient failures keep the ack
// waiting until a write succeeds.
func TestAckDownstreamRetriedUntilDelivered(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	ev := &events{}
	out := newRecOutput("out", ev)
	out.failFirst = 5
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, nil, comp("out", pipeline.KindOutput, "**", out))
	defer stopRunner(t, r, 5*time.Second)
	if err := ackedWith(t, in.send(t, "a.x")); err != nil {
		t.Fatal(err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if out.writes != 6 || len(out.got["a.x"]) != 1 {
		t.Fatalf("acked after %d writes (%d delivered), want after the 6th", out.writes, len(out.got["a.x"]))
	}
}

// TestAckDownstreamNotCalledOnStop: acks still waiting when the pipeline
// stops are never called (the source resends those chunks).
func TestAckDownstreamNotCalledOnStop(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	out := newGateOutput()
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, nil, comp("out", pipeline.KindOutput, "**", out))
	acked := in.send(t, "a.x")
	out.waitWrite(t)
	stopRunner(t, r, 200*time.Millisecond) // the output never delivers
	out.open()
	notAcked(t, acked, 100*time.Millisecond)
}

// TestAckDownstreamPipelinedInOrder: with a pipelined output completing
// out of order, a chunk is acked only once the cursor committed past it:
// every batch before it delivered too.
func TestAckDownstreamPipelinedInOrder(t *testing.T) {
	buf, err := broker.Open(t.TempDir(), broker.WithPartitions(1), broker.WithSync(broker.SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	out := &pipeOutput{recOutput: *newRecOutput("out", &events{}), pending: make(chan pend, 100)}
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, nil, comp("out", pipeline.KindOutput, "**", out))
	acks := make([]<-chan error, 3)
	for i := range acks {
		acks[i] = in.send(t, "t")
	}
	var fns []pend
	for len(fns) < 3 {
		select {
		case f := <-out.pending:
			fns = append(fns, f)
		case <-time.After(5 * time.Second):
			t.Fatal("batches not in flight")
		}
	}
	fns[2].deliver()
	fns[1].deliver()
	notAcked(t, acks[2], 100*time.Millisecond) // offset 0 is not delivered yet
	fns[0].deliver()
	for i, a := range acks {
		if err := ackedWith(t, a); err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
	}
	stopRunner(t, r, 5*time.Second)
}

// TestAckDownstreamSplitChunk: a chunk stored in several records is acked
// once the output committed past all of them.
func TestAckDownstreamSplitChunk(t *testing.T) {
	buf, err := broker.Open(t.TempDir(), broker.WithPartitions(1), broker.WithSync(broker.SyncNone), broker.WithSegmentBytes(4096))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	out := newGateOutput()
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, nil, comp("out", pipeline.KindOutput, "**", out))
	defer stopRunner(t, r, 5*time.Second)
	var entries []byte
	n := 0
	for int64(len(entries)) < 3*buf.MaxChunkBytes() {
		entries = append(entries, oneEvent(n)...)
		n++
	}
	acked := in.sendEntries(t, "big", entries, n)
	out.waitWrite(t) // the first piece
	notAcked(t, acked, 100*time.Millisecond)
	out.open()
	if err := ackedWith(t, acked); err != nil {
		t.Fatal(err)
	}
	if pieces := 1 + len(out.entered); pieces < 3 {
		t.Fatalf("the chunk was stored in %d records, want at least 3", pieces)
	}
}

// TestAckDownstreamOutputRemovedByReload: an output a reload removes is no
// longer waited for.
func TestAckDownstreamOutputRemovedByReload(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	out := newGateOutput()
	in := &handInput{}
	ic := comp("in", pipeline.KindInput, "", in)
	ic.Ack = pipeline.AckDownstream
	oc := comp("out", pipeline.KindOutput, "**", out)
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{ic}, nil, []pipeline.Component{oc})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer stopRunner(t, r, 5*time.Second)
	acked := in.send(t, "a.x")
	out.waitWrite(t)
	notAcked(t, acked, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Update(ctx, []pipeline.Component{ic}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := ackedWith(t, acked); err != nil {
		t.Fatal(err)
	}
}

// TestAckDownstreamManyConcurrent: many chunks from many goroutines over
// two partitions are each acked exactly once, after delivery.
func TestAckDownstreamManyConcurrent(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	out := newRecOutput("out", &events{})
	in, r := downstreamRunner(t, buf, pipeline.AckDownstream, nil, comp("out", pipeline.KindOutput, "**", out))
	defer stopRunner(t, r, 5*time.Second)
	const workers, per = 8, 200
	var wg sync.WaitGroup
	var acks atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				acked := make(chan struct{})
				tag := fmt.Sprintf("w%d.%d", w, i%3)
				err := in.emit.Emit(context.Background(), pipeline.Chunk{Tag: tag, Entries: oneEvent(i % 100), Count: 1}, func(err error) {
					if err != nil {
						t.Error(err)
					}
					acks.Add(1)
					close(acked) // a second call panics
				})
				if err != nil {
					t.Error(err)
					return
				}
				if i%4 == 3 { // some senders wait, others pipeline
					<-acked
				}
			}
		}()
	}
	wg.Wait()
	testutil.CheckFor(t, 10*time.Second, func() error {
		if n := acks.Load(); n != workers*per {
			return fmt.Errorf("%d acks, want %d", n, workers*per)
		}
		return nil
	})
	if n := out.total(); n != workers*per {
		t.Fatalf("delivered %d, want %d", n, workers*per)
	}
}
