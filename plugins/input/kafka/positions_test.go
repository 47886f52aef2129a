package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

func TestSourceRoundTrip(t *testing.T) {
	t.Parallel()
	for _, s := range []span{{0, 1, -1}, {5, 900, 3}, {1 << 40, 1<<40 + 7, 1 << 20}} {
		b := appendSource(nil, "logs.web", 17, s)
		k, got, err := parseSource(b)
		if err != nil || k != (tp{"logs.web", 17}) || got != s {
			t.Fatalf("%v: got %v %v %v", s, k, got, err)
		}
		for i := range b {
			if _, _, err := parseSource(b[:i]); err == nil {
				t.Fatalf("%v: truncated to %d bytes parsed", s, i)
			}
		}
	}
	if _, _, err := parseSource(append(appendSource(nil, "t", 0, span{1, 2, 0}), 0)); err == nil {
		t.Fatal("trailing byte parsed")
	}
}

func TestChain(t *testing.T) {
	t.Parallel()
	at := func(o int64) kgo.EpochOffset { return kgo.EpochOffset{Epoch: 0, Offset: o} }
	for _, tc := range []struct {
		name string
		from int64
		ss   []span
		want int64
	}{
		{"none", 10, nil, 10},
		{"continues", 10, []span{{10, 20, 0}, {20, 30, 0}}, 30},
		{"older spans", 10, []span{{0, 5, 0}, {5, 10, 0}, {10, 12, 0}}, 12},
		{"overlap", 10, []span{{8, 15, 0}, {12, 14, 0}, {15, 16, 0}}, 16},
		{"gap: a chunk never stored", 10, []span{{10, 20, 0}, {30, 40, 0}}, 20},
		{"all after a gap", 10, []span{{11, 20, 0}}, 10},
	} {
		if got := chain(at(tc.from), tc.ss); got.Offset != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got.Offset, tc.want)
		}
	}
}

// pipe is an input run by a pipeline.Runner over a real buffer.
type pipe struct {
	buf *broker.Broker
	r   *pipeline.Runner
	in  *Input
}

func startPipe(t *testing.T, bufDir, dataDir string, cfg *Config) *pipe {
	t.Helper()
	buf, err := broker.Open(bufDir, broker.WithPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	set := pipeline.Settings{Name: "kafka.in", Type: "kafka", DataDir: dataDir, Logger: log,
		Metrics: pipeline.NewMetrics(nil).Component(pipeline.KindInput, "kafka.in", "kafka")}
	in, err := New(set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := pipeline.NewRunner(buf, log, []pipeline.Component{{Name: set.Name, Type: "kafka", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: set.Metrics}}, nil, nil)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &pipe{buf: buf, r: r, in: in}
}

func (p *pipe) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.buf.Close(); err != nil {
		t.Fatal(err)
	}
}

// stored returns the ids of every event in the buffer.
func (p *pipe) stored(t *testing.T) []string {
	t.Helper()
	var out []string
	for part := range p.buf.Partitions() {
		err := p.buf.Scan(context.Background(), part, 0, func(r broker.Record) error {
			return mpack.ForEachEntry(r.Entries, func(_ mpack.EventTime, record []byte) error {
				var m map[string]any
				if err := msgpack.Unmarshal(record, &m); err != nil {
					return err
				}
				out = append(out, fmt.Sprint(m["id"]))
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestPositionsExactlyOnce: messages stored in the buffer but never
// committed (a kill before the commit) are not read again after the
// restart: their positions, stored with them, move the partitions past
// the committed offsets. The at-least-once emitter of TestCommitOnlyDurable
// reads such messages again.
func TestPositionsExactlyOnce(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	bufDir, dataDir := t.TempDir(), t.TempDir()
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 50
	cfg.CommitInterval = conftypes.Duration(time.Hour) // commits at stop only
	const n = 2000
	waitStored := func(p *pipe, want int) {
		testutil.CheckFor(t, 15*time.Second, func() error {
			if got := len(p.stored(t)); got < want {
				return fmt.Errorf("%d stored, want %d", got, want)
			}
			return nil
		})
	}

	// 1: n messages stored and committed (at stop).
	produce(t, c, "logs", n, jsonMsg("a"))
	p := startPipe(t, bufDir, dataDir, cfg)
	waitStored(p, n)
	p.stop(t)
	if got := sum(committed(t, c, "g", "logs")); got != n {
		t.Fatalf("committed %d after a clean stop, want %d", got, n)
	}

	// 2: n more stored, and the process "killed" before any commit.
	produce(t, c, "logs", n, func(i int) *kgo.Record { return jsonMsg("a")(n + i) })
	p = startPipe(t, bufDir, dataDir, cfg)
	p.in.skipCommit.Store(true)
	waitStored(p, 2*n)
	p.stop(t)
	if got := sum(committed(t, c, "g", "logs")); got != n {
		t.Fatalf("committed %d after the kill, want still %d", got, n)
	}

	// 3: the restart reads only what is new.
	produce(t, c, "logs", n, func(i int) *kgo.Record { return jsonMsg("a")(2*n + i) })
	p = startPipe(t, bufDir, dataDir, cfg)
	waitStored(p, 3*n)
	time.Sleep(300 * time.Millisecond)
	if err := exactlyOnce(p.stored(t), ids("a", 0, 3*n)); err != nil {
		t.Fatal(err)
	}
	if v := testutil.Value(p.in.m.skipped); v != n {
		t.Errorf("resumed_past_commit_records_total %v, want %d", v, n)
	}
	p.stop(t)
	if got := sum(committed(t, c, "g", "logs")); got != 3*n {
		t.Fatalf("committed %d, want %d", got, 3*n)
	}
}

// TestPositionsWithoutCommit: a kill before the group's first commit
// reads nothing twice either: with start_offset earliest, the chain of
// stored positions is anchored at the partitions' log start.
func TestPositionsWithoutCommit(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	bufDir, dataDir := t.TempDir(), t.TempDir()
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 50
	cfg.CommitInterval = conftypes.Duration(time.Hour)
	const n = 1500
	waitStored := func(p *pipe, want int) {
		testutil.CheckFor(t, 15*time.Second, func() error {
			if got := len(p.stored(t)); got < want {
				return fmt.Errorf("%d stored, want %d", got, want)
			}
			return nil
		})
	}
	produce(t, c, "logs", n, jsonMsg("a"))
	p := startPipe(t, bufDir, dataDir, cfg)
	p.in.skipCommit.Store(true)
	waitStored(p, n)
	p.stop(t)
	if got := sum(committed(t, c, "g", "logs")); got != 0 {
		t.Fatalf("committed %d, want nothing", got)
	}
	produce(t, c, "logs", n, func(i int) *kgo.Record { return jsonMsg("a")(n + i) })
	p = startPipe(t, bufDir, dataDir, cfg)
	waitStored(p, 2*n)
	time.Sleep(300 * time.Millisecond)
	if err := exactlyOnce(p.stored(t), ids("a", 0, 2*n)); err != nil {
		t.Fatal(err)
	}
	if v := testutil.Value(p.in.m.skipped); v != n {
		t.Errorf("resumed_past_commit_records_total %v, want %d", v, n)
	}
	p.stop(t)
}

// failEmitter refuses, for now, every chunk fail picks: the input retries
// them; it keeps the pipeline's positions.
type failEmitter struct {
	pipeline.Emitter
	pipeline.Positions
	fail func(c pipeline.Chunk) bool
}

func (e *failEmitter) Emit(ctx context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	if e.fail(c) {
		ack(errors.New("not stored (test)"))
		return nil
	}
	return e.Emitter.Emit(ctx, c, ack)
}

// failingInput is an Input whose emitter refuses some chunks.
type failingInput struct {
	*Input
	fail func(c pipeline.Chunk) bool
}

func (f failingInput) Start(ctx context.Context, emit pipeline.Emitter) error {
	return f.Input.Start(ctx, &failEmitter{Emitter: emit, Positions: emit.(pipeline.Positions), fail: f.fail})
}

// TestPositionsGap: a chunk the buffer never stored before a kill breaks
// the chain of positions of its partition: after the restart its messages
// are read again (with those stored after it), never skipped.
func TestPositionsGap(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	bufDir, dataDir := t.TempDir(), t.TempDir()
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 20
	cfg.CommitInterval = conftypes.Duration(time.Hour)
	const n = 1500
	produce(t, c, "logs", n, jsonMsg("a"))
	// 1: everything but the chunk holding a-000700 stored; then a kill.
	buf, err := broker.Open(bufDir, broker.WithPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	set := pipeline.Settings{Name: "kafka.in", Type: "kafka", DataDir: dataDir, Logger: log,
		Metrics: pipeline.NewMetrics(nil).Component(pipeline.KindInput, "kafka.in", "kafka")}
	in, err := New(set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	in.skipCommit.Store(true)
	fi := failingInput{Input: in, fail: func(c pipeline.Chunk) bool { return bytes.Contains(c.Entries, []byte("a-000700")) }}
	r := pipeline.NewRunner(buf, log, []pipeline.Component{{Name: set.Name, Type: "kafka", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: fi}, Metrics: set.Metrics}}, nil, nil)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := &pipe{buf: buf, r: r, in: in}
	testutil.CheckFor(t, 15*time.Second, func() error {
		if got := len(p.stored(t)); got < n-20 {
			return fmt.Errorf("%d stored", got)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	first := p.stored(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = r.Stop(ctx) // the refused chunk is never acknowledged
	cancel()
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	missing, _, _ := diff(first, ids("a", 0, n))
	if len(missing) == 0 || len(missing) > 20 {
		t.Fatalf("%d missing before the restart, want the refused chunk's", len(missing))
	}

	// 2: the restart reads the refused chunk again.
	p = startPipe(t, bufDir, dataDir, cfg)
	testutil.CheckFor(t, 15*time.Second, func() error {
		if missing, _, _ := diff(p.stored(t), ids("a", 0, n)); len(missing) > 0 {
			return fmt.Errorf("%d missing: %s", len(missing), head(missing))
		}
		return nil
	})
	_, dups, extra := diff(p.stored(t), ids("a", 0, n))
	if len(extra) > 0 {
		t.Fatalf("unexpected %s", head(extra))
	}
	t.Logf("refused chunk of %d messages read again, with %d stored after it in its partition", len(missing), len(dups))
	p.stop(t)
}
