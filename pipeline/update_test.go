package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// failStart is an output whose Start fails.
type failStart struct{ recOutput }

func (f *failStart) Start(context.Context) error { return errors.New("cannot start") }

// TestRunnerUpdateKeepsUnchanged: Update leaves running components that are
// in the new set untouched, stops the ones that are gone, starts new ones
// (a new output reads the buffer from its cursor's start), and a component
// that fails to start is reported while the rest keeps running.
func TestRunnerUpdateKeepsUnchanged(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	ev := &events{}
	in := &captureInput{}
	inComp := comp("in", pipeline.KindInput, "", in)
	a := newRecOutput("a", ev)
	b := newRecOutput("b", ev)
	ca, cb := comp("a", pipeline.KindOutput, "**", a), comp("b", pipeline.KindOutput, "**", b)
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{inComp}, nil, []pipeline.Component{ca, cb})
	r.MinBackoff, r.MaxBackoff = time.Millisecond, 5*time.Millisecond
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	emitter := in.emit
	emit := func(i int) {
		t.Helper()
		rec := mpack.AppendMapHeader(nil, 1)
		rec = mpack.AppendString(rec, "i")
		rec = mpack.AppendInt(rec, int64(i))
		if err := in.emit.Emit(context.Background(), pipeline.Chunk{Tag: "t", Entries: mpack.AppendEntry(nil, mpack.EventTime{Sec: 1}, rec), Count: 1}, func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		emit(i)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if a.total() != 10 || b.total() != 10 {
			return fmt.Errorf("a %d b %d", a.total(), b.total())
		}
		return nil
	})

	// Keep the input and a; drop b; add c.
	c := newRecOutput("c", ev)
	cc := comp("c", pipeline.KindOutput, "**", c)
	if err := r.Update(context.Background(), []pipeline.Component{inComp}, nil, []pipeline.Component{ca, cc}); err != nil {
		t.Fatal(err)
	}
	if in.emit != emitter {
		t.Fatal("the unchanged input was started again")
	}
	for i := 10; i < 20; i++ {
		emit(i)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if a.total() != 20 || c.total() != 20 {
			return fmt.Errorf("a %d c %d", a.total(), c.total())
		}
		return nil
	})
	if b.total() != 10 {
		t.Fatalf("removed output b got %d events after it was removed", b.total()-10)
	}
	log := ev.snapshot()
	want := []string{"start a", "start b", "stop b", "start c"}
	if fmt.Sprint(log) != fmt.Sprint(want) {
		t.Fatalf("lifecycle %v, want %v", log, want)
	}

	// A new output that fails to start: reported, the others keep running.
	bad := &failStart{recOutput: *newRecOutput("bad", ev)}
	err := r.Update(context.Background(), []pipeline.Component{inComp}, nil, []pipeline.Component{ca, cc, comp("bad", pipeline.KindOutput, "**", bad)})
	if err == nil {
		t.Fatal("Update with an output that cannot start succeeded")
	}
	emit(20)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if a.total() != 21 || c.total() != 21 {
			return fmt.Errorf("a %d c %d", a.total(), c.total())
		}
		return nil
	})
	if err := r.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// notReady is an input that says it cannot take data.
type notReady struct{ captureInput }

func (n *notReady) Ready() error { return errors.New("listener failed") }

// TestRunnerReadyAsksInputs: an input that reports it cannot take data
// makes the runner not ready, with the input's name and reason.
func TestRunnerReadyAsksInputs(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{comp("fwd", pipeline.KindInput, "", &notReady{})}, nil, nil)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	if err := r.Ready(); err == nil || err.Error() != "input fwd: listener failed" {
		t.Fatalf("Ready = %v, want the input's reason", err)
	}
}

// closingFilter passes chunks as they are and counts its Close calls.
type closingFilter struct{ closed atomic.Int32 }

func (f *closingFilter) Filter(c pipeline.Chunk) (pipeline.Chunk, error) { return c, nil }
func (f *closingFilter) Close() error                                    { f.closed.Add(1); return nil }

// TestRunnerClosesDroppedFilters: a filter a reload drops is closed (its
// requests and watches end), one it keeps is not, and Stop closes the
// rest, once each. Before, filters were never closed: a dropped
// kubernetes filter's watch ran on until it ended by itself.
func TestRunnerClosesDroppedFilters(t *testing.T) {
	buf := openBroker(t, t.TempDir())
	defer buf.Close()
	in := &captureInput{}
	inComp := comp("in", pipeline.KindInput, "", in)
	out := comp("out", pipeline.KindOutput, "**", newRecOutput("out", &events{}))
	kept, dropped := &closingFilter{}, &closingFilter{}
	fk, fd := comp("kept", pipeline.KindFilter, "**", kept), comp("dropped", pipeline.KindFilter, "**", dropped)
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{inComp}, []pipeline.Component{fk, fd}, []pipeline.Component{out})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Update(context.Background(), []pipeline.Component{inComp}, []pipeline.Component{fk}, []pipeline.Component{out}); err != nil {
		t.Fatal(err)
	}
	if kept.closed.Load() != 0 || dropped.closed.Load() != 1 {
		t.Fatalf("after the reload: kept closed %d times, dropped %d; want 0 and 1", kept.closed.Load(), dropped.closed.Load())
	}
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if kept.closed.Load() != 1 || dropped.closed.Load() != 1 {
		t.Fatalf("after Stop: kept closed %d times, dropped %d; want 1 and 1", kept.closed.Load(), dropped.closed.Load())
	}
}
