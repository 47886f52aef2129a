package forward

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// chunkInput emits n chunks, tags t.0 ... t.n-1, 5 events each, once.
type chunkInput struct {
	n     int
	acked sync.WaitGroup
	done  chan struct{}
}

func (in *chunkInput) Start(ctx context.Context, emit pipeline.Emitter) error {
	in.done = make(chan struct{})
	go func() {
		defer close(in.done)
		for i := range in.n {
			in.acked.Add(1)
			if err := emit.Emit(ctx, pipeline.Chunk{Tag: fmt.Sprintf("t.%d", i), Entries: makeEntries(5, 60), Count: 5}, func(error) { in.acked.Done() }); err != nil {
				in.acked.Done()
				return
			}
		}
	}()
	return nil
}

func (in *chunkInput) Stop(context.Context) error {
	<-in.done
	in.acked.Wait()
	return nil
}

// runPipeline runs input -> buffer -> forward output to addr, in dataDir,
// until until() holds, then stops it within shutdown.
func runPipeline(t *testing.T, dataDir, addr string, in pipeline.Input, until func() bool, shutdown time.Duration) {
	t.Helper()
	buf, err := broker.Open(filepath.Join(dataDir, "buffer"), broker.WithPartitions(2), broker.WithSync(broker.SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	cfg := defaultConfig()
	cfg.Servers = []string{addr}
	cfg.RetryMin, cfg.RetryMax, cfg.SelfHostname = conftypes.Duration(10*time.Millisecond), conftypes.Duration(100*time.Millisecond), "sender"
	set := pipeline.Settings{Name: "fwd", Type: "forward", DataDir: dataDir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindOutput, "fwd")}
	o, err := New(set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	comp := func(name string, kind pipeline.Kind, inst any) pipeline.Component {
		return pipeline.Component{Name: name, Type: "test", Kind: kind, Instance: pipeline.InstanceOf(kind, inst), Metrics: pipeline.NopMetrics(kind, name), Matcher: pipeline.MustCompileMatch("**")}
	}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{comp("in", pipeline.KindInput, in)}, nil,
		[]pipeline.Component{comp("fwd", pipeline.KindOutput, o)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, func() error {
		if !until() {
			return errors.New("pipeline not there yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), shutdown)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWithRunnerCursorMovesOnlyOnAck: with the real runner and buffer,
// chunks a receiver read but never acknowledged stay buffered across a
// stop, are sent again after a restart, and once acknowledged are not
// sent a third time.
func TestWithRunnerCursorMovesOnlyOnAck(t *testing.T) {
	dataDir := t.TempDir()
	const n = 12

	// 1: the receiver reads every chunk but stores and acks none.
	recA := newRecorder()
	recA.hold = true
	a := receiver(t, "127.0.0.1:0", nil, recA)
	t.Cleanup(func() { recA.fail(errors.New("test over")) })
	runPipeline(t, dataDir, a.Addr().String(), &chunkInput{n: n}, func() bool { return recA.holding() == n }, 300*time.Millisecond)
	if recA.count() != 0 {
		t.Fatal("events stored at a receiver that never acked")
	}

	// 2: after a restart, everything is sent again and acknowledged.
	recB := newRecorder()
	b := receiver(t, "127.0.0.1:0", nil, recB)
	runPipeline(t, dataDir, b.Addr().String(), &chunkInput{}, func() bool { return recB.count() == n*5 }, 5*time.Second)

	// 3: nothing is sent a third time: the cursor moved on the acks.
	recC := newRecorder()
	c := receiver(t, "127.0.0.1:0", nil, recC)
	runPipeline(t, dataDir, c.Addr().String(), &chunkInput{}, func() bool { return true }, 5*time.Second)
	if recC.count() != 0 || recB.count() != n*5 {
		t.Fatalf("after the acks, %d events were sent again (and %d the first time)", recC.count(), recB.count())
	}
	for i := range n {
		if got := recB.tags()[fmt.Sprintf("t.%d", i)]; len(got) != 1 {
			t.Fatalf("t.%d stored %d times", i, len(got))
		}
	}
}
