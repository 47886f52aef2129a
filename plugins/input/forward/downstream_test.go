package forward

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
	fwdout "github.com/logship/logship/plugins/output/forward"
)

// agentPipeline runs an agent until the test ends: a forward input with
// the given ack level, its buffer, and a forward output to aggAddr. It
// returns the input clients send to.
func agentPipeline(tb testing.TB, aggAddr string, level pipeline.AckLevel, sync broker.SyncMode) *Input {
	tb.Helper()
	dir := tb.TempDir()
	buf, err := broker.Open(filepath.Join(dir, "buffer"), broker.WithPartitions(2), broker.WithSync(sync))
	if err != nil {
		tb.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:0"
	inSet := pipeline.Settings{Name: "fwd", Type: "forward", DataDir: dir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "fwd")}
	in, err := New(inSet, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ocfg := fwdout.Factory().NewConfig().(*fwdout.Config)
	ocfg.Servers, ocfg.SelfHostname = []string{aggAddr}, "agent"
	ocfg.RetryMin, ocfg.RetryMax = conftypes.Duration(10*time.Millisecond), conftypes.Duration(100*time.Millisecond)
	if err := ocfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	outSet := pipeline.Settings{Name: "up", Type: "forward", DataDir: dir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindOutput, "up")}
	out, err := fwdout.New(outSet, ocfg)
	if err != nil {
		tb.Fatal(err)
	}
	r := pipeline.NewRunner(buf, zap.NewNop(),
		[]pipeline.Component{{Name: "fwd", Type: "forward", Kind: pipeline.KindInput, Ack: level, Instance: pipeline.Instance{Input: in}, Metrics: inSet.Metrics}}, nil,
		[]pipeline.Component{{Name: "up", Type: "forward", Kind: pipeline.KindOutput, Matcher: pipeline.MustCompileMatch("**"), Instance: pipeline.Instance{Output: out}, Metrics: outSet.Metrics}})
	if err := r.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = r.Stop(ctx)
		_ = buf.Close()
	})
	return in
}

// TestDownstreamAckAfterAggregator: a client of an agent whose forward
// input has ack: downstream gets its ack only once the aggregator the agent
// forwards to has acknowledged the chunk (stored it durably); with
// ack: local it gets it as soon as the agent's own buffer has it.
func TestDownstreamAckAfterAggregator(t *testing.T) {
	for _, level := range []pipeline.AckLevel{pipeline.AckLocal, pipeline.AckDownstream} {
		t.Run(string(level), func(t *testing.T) {
			agg := &testEmitter{hold: true} // the aggregator withholds its acks
			aggIn := startInput(t, nil, agg)
			agent := agentPipeline(t, aggIn.Addr().String(), level, broker.SyncAlways)
			c := dial(t, agent)
			if _, err := c.Write(mp(t, []any{"app.x", 1700000000, map[string]any{"k": "v"}, map[string]any{"chunk": "Y2h1bmstMQ=="}})); err != nil {
				t.Fatal(err)
			}
			testutil.CheckFor(t, 5*time.Second, func() error {
				if agg.count() != 1 {
					return fmt.Errorf("the aggregator has %d events", agg.count())
				}
				return nil
			})
			id, err := readAck(t, c, 300*time.Millisecond)
			switch level {
			case pipeline.AckLocal:
				if err != nil || id != "Y2h1bmstMQ==" {
					t.Fatalf("ack: local: ack %q, %v before the aggregator acknowledged", id, err)
				}
				agg.release()
				return
			case pipeline.AckDownstream:
				if err == nil {
					t.Fatal("ack: downstream: the client was acknowledged before the aggregator acknowledged")
				}
			}
			agg.release()
			id, err = readAck(t, c, 5*time.Second)
			if err != nil || id != "Y2h1bmstMQ==" {
				t.Fatalf("ack %q, %v after the aggregator acknowledged", id, err)
			}
		})
	}
}

// aggregatorPipeline runs an aggregator until the test ends: a forward
// input (dedup on) into a durable buffer under sync: always, no outputs.
func aggregatorPipeline(tb testing.TB) *Input {
	tb.Helper()
	dir := tb.TempDir()
	buf, err := broker.Open(filepath.Join(dir, "buffer"), broker.WithPartitions(2), broker.WithSync(broker.SyncAlways))
	if err != nil {
		tb.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:0"
	set := pipeline.Settings{Name: "agg", Type: "forward", DataDir: dir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "agg")}
	in, err := New(set, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	r := pipeline.NewRunner(buf, zap.NewNop(),
		[]pipeline.Component{{Name: "agg", Type: "forward", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: set.Metrics}}, nil, nil)
	if err := r.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = r.Stop(ctx)
		_ = buf.Close()
	})
	return in
}

// BenchmarkAckLevel is the latency a synchronous client sees (one chunk,
// wait for its ack, next) from an agent with each ack level, the agent
// forwarding to a real aggregator; both fdatasync each chunk (sync:
// always), so downstream costs one more fdatasync plus the hop.
//
//	go test -run '^$' -bench BenchmarkAckLevel -benchtime 2s ./plugins/input/forward/
func BenchmarkAckLevel(b *testing.B) {
	for _, level := range []pipeline.AckLevel{pipeline.AckLocal, pipeline.AckDownstream} {
		b.Run(string(level), func(b *testing.B) {
			agg := aggregatorPipeline(b)
			agent := agentPipeline(b, agg.Addr().String(), level, broker.SyncAlways)
			c, err := net.Dial("tcp", agent.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ResetTimer()
			for i := range b.N {
				id := fmt.Sprintf("c%d", i)
				msg, err := msgpackMarshal([]any{"app.x", 1700000000, map[string]any{"i": i}, map[string]any{"chunk": id}})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if got, err := readAckTB(c, 10*time.Second); err != nil || got != id {
					b.Fatalf("ack %q, %v", got, err)
				}
			}
		})
	}
}

func msgpackMarshal(v any) ([]byte, error) { return msgpack.Marshal(v) }

// readAckTB is readAck for benchmarks.
func readAckTB(c net.Conn, d time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var m map[string]string
	if err := msgpack.NewDecoder(c).Decode(&m); err != nil {
		return "", err
	}
	return m["ack"], nil
}
