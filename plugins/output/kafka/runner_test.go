package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// emitInput is an input that hands its emitter to the test.
type emitInput struct{ emit pipeline.Emitter }

func (i *emitInput) Start(_ context.Context, e pipeline.Emitter) error { i.emit = e; return nil }
func (i *emitInput) Stop(context.Context) error                        { return nil }

// TestRunnerCursorWaitsForKafka: the real buffer and runner with the kafka
// output. While Kafka refuses every produce, the output's cursor does not
// move; once it takes them again, every event arrives and the cursor
// catches up.
func TestRunnerCursorWaitsForKafka(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	buf, err := broker.Open(t.TempDir(), broker.WithPartitions(2), broker.WithSync(broker.SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	cfg := defaultConfig()
	cfg.Brokers, cfg.Topic = c.ListenAddrs(), "logs"
	cfg.DeliveryTimeout = conftypes.Duration(200 * time.Millisecond)
	cfg.RetryMin, cfg.RetryMax = conftypes.Duration(20*time.Millisecond), conftypes.Duration(100*time.Millisecond)
	out, err := New(pipeline.Settings{Name: "kafka", Type: "kafka", DataDir: t.TempDir(), Logger: zaptest.NewLogger(t)}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := &emitInput{}
	comp := func(name string, kind pipeline.Kind, v any) pipeline.Component {
		cp := pipeline.Component{Name: name, Type: "test", Kind: kind, Instance: pipeline.InstanceOf(kind, v), Metrics: pipeline.NopMetrics(kind, name)}
		if kind == pipeline.KindOutput {
			cp.Matcher = pipeline.MustCompileMatch("**")
		}
		return cp
	}
	r := pipeline.NewRunner(buf, zaptest.NewLogger(t), []pipeline.Component{comp("in", pipeline.KindInput, in)}, nil,
		[]pipeline.Component{comp("kafka", pipeline.KindOutput, out)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Stop(context.Background()) }()

	emit := func(tag string, n int) {
		t.Helper()
		b := batch(t, tag, 0, events(n, time.Now(), func(i int) map[string]any { return map[string]any{"tag": tag, "i": i} })...)
		if err := in.emit.Emit(context.Background(), b.Chunk, func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
	committed := func() (sum, lag uint64) {
		for _, cs := range buf.Stats().Cursors {
			if cs.Name == "kafka" {
				sum += cs.Committed
				lag += cs.Lag
			}
		}
		return sum, lag
	}
	emit("a", 100)
	emit("b", 100)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if _, lag := committed(); lag != 0 {
			return fmt.Errorf("lag %d", lag)
		}
		return nil
	})
	before, _ := committed()

	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	for i := range 10 {
		emit(fmt.Sprintf("t%d", i), 50)
	}
	if err := fault.Wait(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // past delivery_timeout: the output may retry
	if now, lag := committed(); now != before || lag != 10 {
		t.Fatalf("during the outage the cursor moved from %d to %d (lag %d)", before, now, lag)
	}
	fault.Remove()
	testutil.CheckFor(t, 15*time.Second, func() error {
		if _, lag := committed(); lag != 0 {
			return fmt.Errorf("lag %d after the outage", lag)
		}
		return nil
	})
	ids := map[string]bool{}
	for _, rec := range consume(t, c, "logs", 700) {
		ids[header(rec, HeaderEventID)] = true
	}
	if len(ids) != 700 {
		t.Fatalf("%d distinct event ids, want 700", len(ids))
	}
}
