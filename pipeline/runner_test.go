package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// events is a tiny log of what happened, in order, across components.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

func (e *events) snapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

// genInput emits n chunks of one event each, tags cycling through tags.
type genInput struct {
	name  string
	ev    *events
	n     int
	tags  []string
	acked sync.WaitGroup
	fails int
	mu    sync.Mutex
	done  chan struct{}
}

func (g *genInput) Start(ctx context.Context, emit pipeline.Emitter) error {
	g.ev.add("start " + g.name)
	g.done = make(chan struct{})
	go func() {
		defer close(g.done)
		for i := range g.n {
			var rec []byte
			rec = mpack.AppendMapHeader(rec, 1)
			rec = mpack.AppendString(rec, "i")
			rec = mpack.AppendInt(rec, int64(i))
			entries := mpack.AppendEntry(nil, mpack.EventTime{Sec: 1}, rec)
			g.acked.Add(1)
			err := emit.Emit(ctx, pipeline.Chunk{Tag: g.tags[i%len(g.tags)], Entries: entries, Count: 1}, func(err error) {
				if err != nil {
					g.mu.Lock()
					g.fails++
					g.mu.Unlock()
				}
				g.acked.Done()
			})
			if err != nil {
				g.acked.Done()
				return
			}
		}
	}()
	return nil
}

func (g *genInput) Stop(context.Context) error {
	<-g.done
	g.acked.Wait()
	g.ev.add("stop " + g.name)
	return nil
}

// recOutput records the events it is given, optionally failing.
type recOutput struct {
	name string
	ev   *events
	mu   sync.Mutex
	got  map[string][]int64 // tag -> values of i in delivery order
	// failFirst makes the first n writes fail with a retryable error.
	failFirst int
	// permanentTag makes writes of that tag fail permanently.
	permanentTag string
	writes       int
	refused      int // events refused with a permanent error
}

func newRecOutput(name string, ev *events) *recOutput {
	return &recOutput{name: name, ev: ev, got: map[string][]int64{}}
}

func (o *recOutput) Start(context.Context) error { o.ev.add("start " + o.name); return nil }
func (o *recOutput) Stop(context.Context) error  { o.ev.add("stop " + o.name); return nil }

func (o *recOutput) Write(_ context.Context, b pipeline.Batch) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.writes++
	if o.writes <= o.failFirst {
		return errors.New("transient")
	}
	if b.Tag == o.permanentTag {
		o.refused += b.Count
		return pipeline.Permanent(errors.New("never"))
	}
	return mpack.ForEachEntry(b.Entries, func(_ mpack.EventTime, rec []byte) error {
		// {"i": int}
		v := int64(rec[3])
		if rec[3] == 0xd1 {
			v = int64(int16(uint16(rec[4])<<8 | uint16(rec[5])))
		}
		o.got[b.Tag] = append(o.got[b.Tag], v)
		return nil
	})
}

func (o *recOutput) total() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, v := range o.got {
		n += len(v)
	}
	return n
}

func openBroker(t *testing.T, dir string) *broker.Broker {
	t.Helper()
	b, err := broker.Open(dir, broker.WithPartitions(2), broker.WithSync(broker.SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func comp(name string, kind pipeline.Kind, match string, inst any) pipeline.Component {
	c := pipeline.Component{Name: name, Type: "test", Kind: kind, Instance: pipeline.InstanceOf(kind, inst), Metrics: pipeline.NopMetrics(kind, name)}
	if match != "" {
		c.Matcher = pipeline.MustCompileMatch(match)
	}
	return c
}

// TestRunnerOrderAndDrain: outputs start before inputs, inputs stop before
// outputs, and the stop drains what was buffered into the outputs.
func TestRunnerOrderAndDrain(t *testing.T) {
	ev := &events{}
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	in := &genInput{name: "in", ev: ev, n: 300, tags: []string{"a.x", "b.y", "c.z"}}
	outA := newRecOutput("outA", ev)
	outAll := newRecOutput("outAll", ev)
	r := pipeline.NewRunner(buf, zap.NewNop(),
		[]pipeline.Component{comp("in", pipeline.KindInput, "", in)}, nil,
		[]pipeline.Component{comp("outA", pipeline.KindOutput, "a.**", outA), comp("outAll", pipeline.KindOutput, "**", outAll)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-in.done
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := ev.snapshot()
	want := []string{"start outA", "start outAll", "start in", "stop in", "stop outAll", "stop outA"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if outAll.total() != 300 || outA.total() != 100 || len(outA.got["b.y"]) != 0 {
		t.Fatalf("delivered all=%d a=%d", outAll.total(), outA.total())
	}
	// One tag keeps its order.
	for tag, vals := range outAll.got {
		for i := 1; i < len(vals); i++ {
			if vals[i] <= vals[i-1] {
				t.Fatalf("tag %s out of order: %v", tag, vals)
			}
		}
	}
}

// TestRunnerRetryAndPermanent: a transient error is retried until it
// succeeds, a permanent one is skipped and counted, and the cursor moves
// past both so that a restart delivers nothing twice.
func TestRunnerRetryAndPermanent(t *testing.T) {
	dir := t.TempDir()
	buf := openBroker(t, dir)
	ev := &events{}
	in := &genInput{name: "in", ev: ev, n: 20, tags: []string{"ok", "bad"}}
	out := newRecOutput("out", ev)
	out.failFirst = 3
	out.permanentTag = "bad"
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{comp("in", pipeline.KindInput, "", in)}, nil,
		[]pipeline.Component{comp("out", pipeline.KindOutput, "**", out)})
	r.MinBackoff, r.MaxBackoff = time.Millisecond, 5*time.Millisecond
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Wait for the refusals too: Stop gives up on a batch whose write
	// fails while it drains, so stopping while a "bad" batch is still
	// in its transient-failure backoff would leave it buffered.
	testutil.CheckFor(t, 5*time.Second, func() error {
		out.mu.Lock()
		defer out.mu.Unlock()
		if n := len(out.got["ok"]); n != 10 || out.refused != 10 {
			return fmt.Errorf("delivered %d, refused %d", n, out.refused)
		}
		return nil
	})
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	// Restart on the same data: nothing is delivered again.
	buf = openBroker(t, dir)
	defer buf.Close()
	out2 := newRecOutput("out", ev)
	idle := &genInput{name: "idle", ev: ev, n: 0, tags: []string{"x"}}
	r = pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{comp("idle", pipeline.KindInput, "", idle)}, nil,
		[]pipeline.Component{comp("out", pipeline.KindOutput, "**", out2)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := out2.total(); n != 0 {
		t.Fatalf("redelivered %d events after a clean stop", n)
	}
}

// pipeOutput completes writes out of order, from another goroutine.
type pipeOutput struct {
	recOutput
	pending chan pend
}

type pend struct{ deliver, abandon func() }

func (o *pipeOutput) MaxInFlight() int { return 8 }

func (o *pipeOutput) WriteAsync(ctx context.Context, b pipeline.Batch, done func(error)) {
	entries := append([]byte(nil), b.Entries...)
	b.Entries = entries
	o.pending <- pend{func() { done(o.Write(ctx, b)) }, func() { done(context.Canceled) }}
}

// TestRunnerPipelinedCommitsInOrder: batches completed out of order move
// the cursor only over a contiguous run, so a stop with one batch unfinished
// leaves it and everything after it to be delivered again.
func TestRunnerPipelinedCommitsInOrder(t *testing.T) {
	dir := t.TempDir()
	buf, err := broker.Open(dir, broker.WithPartitions(1), broker.WithSync(broker.SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	in := &genInput{name: "in", ev: ev, n: 8, tags: []string{"t"}}
	out := &pipeOutput{recOutput: *newRecOutput("out", ev), pending: make(chan pend, 100)}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{comp("in", pipeline.KindInput, "", in)}, nil,
		[]pipeline.Component{comp("out", pipeline.KindOutput, "**", out)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var fns []pend
	testutil.CheckFor(t, 5*time.Second, func() error {
		for {
			select {
			case f := <-out.pending:
				fns = append(fns, f)
				continue
			default:
			}
			break
		}
		if len(fns) != 8 {
			return fmt.Errorf("%d in flight", len(fns))
		}
		return nil
	})
	// Complete all but the 4th (offset 3), in reverse order.
	for i := 7; i >= 0; i-- {
		if i != 3 {
			fns[i].deliver()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	go func() {
		<-ctx.Done()
		fns[3].abandon() // the stop gave up: the output reports it stopped
	}()
	_ = r.Stop(ctx)
	cancel()
	buf.Close()
	buf, err = broker.Open(dir, broker.WithPartitions(1), broker.WithSync(broker.SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	cur, err := buf.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if got := cur.Committed(); got != 3 {
		t.Fatalf("committed %d, want 3 (offsets 0..2 done, 3 not)", got)
	}
}
