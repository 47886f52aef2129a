package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster starts an in-process Kafka of three brokers on 127.0.0.1:0.
func cluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3),
		kfake.BrokerConfigs(map[string]string{"group.min.session.timeout.ms": "100"})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// rec is one emitted event, decoded.
type rec struct {
	tag   string
	time  mpack.EventTime
	m     map[string]any
	chunk int
}

func (r rec) id() string {
	switch v := r.m["id"].(type) {
	case string:
		return v
	case nil:
		s, _ := r.m["log"].(string)
		return s
	default:
		return fmt.Sprint(v)
	}
}

// testEmitter records chunks and acknowledges them: at once, after a
// delay, when released, or with an error chosen by fail.
type testEmitter struct {
	t       testing.TB
	mu      sync.Mutex
	emitted []rec // every event handed over
	durable []rec // events of chunks acknowledged with nil
	nChunks int
	fail    func(n int) error // the ack of chunk n (nil: stored)
	hold    bool
	held    []func()
	heldB   int // bytes of held chunks
	maxHeld int // the most bytes held at once
	block   chan struct{}
	delay   time.Duration
	wg      sync.WaitGroup
}

func newEmitter(t testing.TB) *testEmitter { return &testEmitter{t: t} }

func decodeChunk(t testing.TB, c pipeline.Chunk) []rec {
	var out []rec
	err := mpack.ForEachEntry(c.Entries, func(tm mpack.EventTime, record []byte) error {
		var m map[string]any
		if err := msgpack.Unmarshal(record, &m); err != nil {
			return err
		}
		out = append(out, rec{tag: c.Tag, time: tm, m: m})
		return nil
	})
	if err != nil {
		t.Errorf("chunk does not decode: %v", err)
	}
	if len(out) != c.Count {
		t.Errorf("chunk says %d events, holds %d", c.Count, len(out))
	}
	return out
}

func (e *testEmitter) Emit(ctx context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	e.mu.Lock()
	block := e.block
	e.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	recs := decodeChunk(e.t, c)
	e.mu.Lock()
	n := e.nChunks
	e.nChunks++
	for i := range recs {
		recs[i].chunk = n
	}
	e.emitted = append(e.emitted, recs...)
	var err error
	if e.fail != nil {
		err = e.fail(n)
	}
	size := len(c.Entries)
	finish := func() {
		if err == nil {
			e.mu.Lock()
			e.durable = append(e.durable, recs...)
			e.mu.Unlock()
		}
		ack(err)
	}
	switch {
	case e.hold:
		e.held = append(e.held, func() { e.mu.Lock(); e.heldB -= size; e.mu.Unlock(); finish() })
		e.heldB += size
		e.maxHeld = max(e.maxHeld, e.heldB)
		e.mu.Unlock()
	case e.delay > 0:
		e.mu.Unlock()
		e.wg.Add(1)
		time.AfterFunc(e.delay, func() { defer e.wg.Done(); finish() })
	default:
		e.mu.Unlock()
		finish()
	}
	return nil
}

// release acknowledges the first n held chunks (all when n < 0).
func (e *testEmitter) release(n int) {
	e.mu.Lock()
	if n < 0 || n > len(e.held) {
		n = len(e.held)
	}
	fs := e.held[:n:n]
	e.held = append([]func(){}, e.held[n:]...)
	e.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

func (e *testEmitter) heldCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.held)
}

func (e *testEmitter) records() []rec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]rec(nil), e.durable...)
}

func (e *testEmitter) emittedCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.emitted)
}

func (e *testEmitter) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.durable)
}

// member is one running input.
type member struct {
	in  *Input
	reg *prometheus.Registry
}

func testConfig(c *kfake.Cluster, group string, topics ...string) *Config {
	cfg := defaultConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.Group = group
	cfg.Topics = topics
	cfg.CommitInterval = conftypes.Duration(100 * time.Millisecond)
	cfg.HeartbeatInterval = conftypes.Duration(100 * time.Millisecond)
	cfg.SessionTimeout = conftypes.Duration(3 * time.Second)
	cfg.RevokeTimeout = conftypes.Duration(2 * time.Second)
	cfg.RebalanceTimeout = conftypes.Duration(5 * time.Second)
	return cfg
}

// startInput starts an input named name on cfg emitting into e; it is
// stopped when the test ends unless stopped before.
func startInput(t testing.TB, cfg *Config, e pipeline.Emitter) *member {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	set := pipeline.Settings{Name: "kafka.in", Type: "kafka", Role: "aggregator", DataDir: t.TempDir(),
		Metrics: pipeline.NewMetrics(reg).Component(pipeline.KindInput, "kafka.in", "kafka")}
	set.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	in, err := New(set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	m := &member{in: in, reg: reg}
	t.Cleanup(func() { m.stop(t, 5*time.Second) })
	return m
}

func (m *member) stop(t testing.TB, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return m.in.Stop(ctx)
}

// produce writes n messages to topic with ids prefix-i; value gives each
// message's value and headers.
func produce(t testing.TB, c *kfake.Cluster, topic string, n int, msg func(i int) *kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		r := msg(i)
		r.Topic = topic
		wg.Add(1)
		cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

func jsonMsg(prefix string) func(i int) *kgo.Record {
	return func(i int) *kgo.Record {
		return &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: fmt.Appendf(nil, `{"id":"%s-%06d","n":%d}`, prefix, i, i)}
	}
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%06d", prefix, i))
	}
	return out
}

func idsOf(recs []rec) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.id()
	}
	return out
}

// exactlyOnce checks that got holds every string of want once and
// nothing else.
func exactlyOnce(got, want []string) error {
	missing, dups, extra := diff(got, want)
	if len(missing)+len(dups)+len(extra) > 0 {
		return fmt.Errorf("%d missing %s, %d duplicated %s, %d unexpected %s (got %d)", len(missing), head(missing), len(dups), head(dups), len(extra), head(extra), len(got))
	}
	return nil
}

// diff returns what of want got lacks, what it holds more than once and
// what it holds that want does not.
func diff(got, want []string) (missing, dups, extra []string) {
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for _, w := range want {
		switch seen[w] {
		case 0:
			missing = append(missing, w)
		case 1:
		default:
			for range seen[w] - 1 {
				dups = append(dups, w)
			}
		}
		delete(seen, w)
	}
	for s := range seen {
		extra = append(extra, s)
	}
	sort.Strings(extra)
	return missing, dups, extra
}

func head(s []string) string {
	if len(s) > 5 {
		return fmt.Sprint(s[:5], "...")
	}
	return fmt.Sprint(s)
}

// committed returns the group's committed offsets of topic, per partition.
func committed(t testing.TB, c *kfake.Cluster, group, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	os, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	os.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			out[o.Partition] = o.At
		}
	})
	return out
}

func sum(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func waitCount(t testing.TB, e *testEmitter, n int, d time.Duration) {
	t.Helper()
	testutil.CheckFor(t, d, func() error {
		if got := e.count(); got < n {
			return fmt.Errorf("%d events durable, want %d", got, n)
		}
		return nil
	})
}

// gathered sums the samples of the metric called name in reg.
func gathered(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return v
}

// gatheredLabel is gathered for the samples whose label is value.
func gatheredLabel(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return v
}

// countEmitter counts events and acknowledges at once.
type countEmitter struct{ n atomic.Int64 }

func (e *countEmitter) Emit(_ context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	e.n.Add(int64(c.Count))
	ack(nil)
	return nil
}
