package kafka

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
)

func TestProgressCovers(t *testing.T) {
	const inc = uint64(3) << 32
	p := progress{epoch: inc | 5, next: 100}
	cases := []struct {
		name   string
		epoch  uint64
		offset uint64
		want   bool
	}{
		{"same epoch, below", inc | 5, 99, true},
		{"same epoch, at next", inc | 5, 100, false},
		{"same epoch, above", inc | 5, 150, false},
		{"older epoch of the incarnation", inc | 4, 10, true},
		{"older epoch, offset past next", inc | 4, 100, false},
		{"newer epoch (offsets reused after a power cut)", inc | 6, 10, false},
		{"another incarnation (recreated buffer)", uint64(4)<<32 | 1, 10, false},
		{"older incarnation with a higher frame epoch", uint64(2)<<32 | 9, 10, false},
		{"epoch 0 (written before epochs)", 0, 10, true},
	}
	for _, c := range cases {
		b := pipeline.Batch{Partition: 2, Offset: c.offset, Epoch: c.epoch}
		if got := p.covers(b); got != c.want {
			t.Errorf("%s: covers = %v, want %v", c.name, got, c.want)
		}
	}
	if (progress{}).covers(pipeline.Batch{Offset: 0, Epoch: 0}) {
		t.Error("the zero progress covers a batch")
	}
}

func TestParseProgress(t *testing.T) {
	epoch := uint64(3)<<32 | 5
	p, err := parseProgress(42, progressMeta(epoch, 2), 2)
	if err != nil || p != (progress{epoch: epoch, next: 42}) {
		t.Fatalf("round trip: %+v, %v", p, err)
	}
	if p, err := parseProgress(-1, "", 2); err != nil || p != (progress{}) {
		t.Fatalf("nothing committed: %+v, %v", p, err)
	}
	if _, err := parseProgress(42, progressMeta(epoch, 3), 2); err == nil {
		t.Fatal("progress of another buffer partition accepted")
	}
	if _, err := parseProgress(42, "something else", 2); err == nil {
		t.Fatal("foreign metadata accepted")
	}
}

func TestExactlyOnceConfig(t *testing.T) {
	base := func() *Config {
		cfg := defaultConfig()
		cfg.Brokers, cfg.Topic, cfg.ExactlyOnce = []string{"127.0.0.1:9092"}, "logs", true
		return cfg
	}
	cases := map[string]func(*Config){
		`not "1"`: func(c *Config) { c.Acks = "1" },
		`exactly_once: needs acks: all (transactions use the idempotent producer), not "0"`: func(c *Config) { c.Acks = "0" },
		`progress_topic: is required`:       func(c *Config) { c.Topic = "logs.{tag}" },
		`progress_topic: is used only`:      func(c *Config) { c.ExactlyOnce, c.ProgressTopic = false, "progress" },
		`progress_topic: "a b" is not a va`: func(c *Config) { c.ProgressTopic = "a b" },
	}
	for want, edit := range cases {
		cfg := base()
		edit(cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error containing %q, got %v", want, err)
		}
	}
	for _, edit := range []func(*Config){
		func(*Config) {},
		func(c *Config) { c.Topic, c.ProgressTopic = "logs.{tag}", "progress" },
	} {
		cfg := base()
		edit(cfg)
		if err := cfg.Validate(); err != nil {
			t.Errorf("valid config: %v", err)
		}
	}
}

// startEO starts an exactly-once output named "eo" keeping its sender id
// in dataDir.
func startEO(t *testing.T, c *kfake.Cluster, dataDir string, edit func(*Config)) *harness {
	t.Helper()
	cfg := defaultConfig()
	cfg.Brokers, cfg.Topic, cfg.ExactlyOnce = c.ListenAddrs(), "logs", true
	cfg.Linger = conftypes.Duration(time.Millisecond)
	cfg.RetryMin, cfg.RetryMax = conftypes.Duration(20*time.Millisecond), conftypes.Duration(200*time.Millisecond)
	if edit != nil {
		edit(cfg)
	}
	reg := prometheus.NewRegistry()
	set := pipeline.Settings{Name: "eo", Type: "kafka", DataDir: dataDir, Logger: zaptest.NewLogger(t),
		Metrics: pipeline.NewMetrics(reg).Component(pipeline.KindOutput, "eo", "kafka")}
	o, err := New(set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Stop(context.Background()) })
	return &harness{out: o, reg: reg}
}

// consumeCommitted reads topic with read_committed until it has n
// messages, and a little longer to see extra ones.
func consumeCommitted(t *testing.T, addrs []string, topic string, n int, wait time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(wait)
	var extra time.Time
	for time.Now().Before(deadline) {
		if len(out) >= n {
			if extra.IsZero() {
				extra = time.Now().Add(300 * time.Millisecond)
			} else if time.Now().After(extra) {
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func eoBatch(t *testing.T, offset uint64, n int) pipeline.Batch {
	t.Helper()
	b := batch(t, "app", offset, events(n, time.Now(), func(i int) map[string]any { return map[string]any{"o": offset, "i": i} })...)
	b.Partition, b.Epoch = 2, 7
	return b
}

// TestExactlyOnceRestartSkipsCommitted: batches are committed with their
// progress; an output started again on the same data dir skips the
// batches read again from the buffer that a transaction committed (counted
// as duplicates) and produces the rest, and read_committed consumers see
// every event once.
func TestExactlyOnceRestartSkipsCommitted(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	dir := t.TempDir()
	h := startEO(t, c, dir, nil)
	for off := range uint64(5) {
		write(t, h.out, eoBatch(t, off, 10))
	}
	sender := h.out.SenderID()
	if err := h.out.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	adm := kadm.NewClient(mustClient(t, c))
	group := TransactionalID("eo", sender, 2)
	offs, err := adm.FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := offs.Lookup("logs", 0)
	if !ok || r.At != 5 || r.Metadata != progressMeta(7, 2) {
		t.Fatalf("committed progress of %s: %+v (found %v), want offset 5, metadata %q", group, r, ok, progressMeta(7, 2))
	}

	h2 := startEO(t, c, dir, nil)
	if h2.out.SenderID() != sender {
		t.Fatal("sender id not kept")
	}
	for off := uint64(3); off < 7; off++ { // 3 and 4 again, as after a kill
		write(t, h2.out, eoBatch(t, off, 10))
	}
	if d := counter(t, h2.reg, "logship_duplicates_suppressed_total", nil); d != 20 {
		t.Fatalf("duplicates_suppressed_total %v, want 20", d)
	}
	recs := consumeCommitted(t, c.ListenAddrs(), "logs", 70, 15*time.Second)
	ids := map[string]int{}
	for _, r := range recs {
		ids[header(r, HeaderEventID)]++
	}
	if len(recs) != 70 || len(ids) != 70 {
		t.Fatalf("%d messages, %d distinct event ids, want 70 and 70", len(recs), len(ids))
	}
}

// TestExactlyOnceFencesZombie: a producer with the output's transactional
// id that produced and was killed before it committed (its transaction
// open) is fenced when the output starts producing: read_committed
// consumers never see its messages, and the output's own are delivered.
func TestExactlyOnceFencesZombie(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	dir := t.TempDir()
	sender, err := loadSenderID(dir, "eo", zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	zombie, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID(TransactionalID("eo", sender, 2)),
		kgo.DefaultProduceTopic("logs"))
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	if err := zombie.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := zombie.ProduceSync(context.Background(), &kgo.Record{Value: fmt.Appendf(nil, "zombie %d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The zombie "dies" here: no EndTransaction.

	h := startEO(t, c, dir, nil)
	write(t, h.out, eoBatch(t, 0, 10))
	recs := consumeCommitted(t, c.ListenAddrs(), "logs", 10, 15*time.Second)
	for _, r := range recs {
		if strings.HasPrefix(string(r.Value), "zombie") {
			t.Fatalf("read_committed consumer saw %q of the fenced transaction", r.Value)
		}
	}
	if len(recs) != 10 {
		t.Fatalf("%d messages, want 10", len(recs))
	}
	if err := zombie.EndTransaction(context.Background(), kgo.TryCommit); err == nil {
		t.Fatal("the zombie committed after the output fenced it")
	}
}

func mustClient(t *testing.T, c *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestExactlyOnceCanceledLeavesBuffered: while Kafka refuses every
// produce, a batch's transaction is retried; when the runner gives up on
// it (its context ends) done reports a transient error at once: the batch
// stays in the buffer.
func TestExactlyOnceCanceledLeavesBuffered(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	h := startEO(t, c, t.TempDir(), func(cfg *Config) { cfg.DeliveryTimeout = conftypes.Duration(time.Minute) })
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	h.out.WriteAsync(ctx, eoBatch(t, 0, 10), func(err error) { errc <- err })
	if err := fault.Wait(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil || pipeline.IsPermanent(err) {
			t.Fatalf("after cancel: %v, want a transient error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("done not called after the batch's context ended")
	}
	fault.Remove()
	if recs := consumeCommitted(t, c.ListenAddrs(), "logs", 0, time.Second); len(recs) != 0 {
		t.Fatalf("read_committed consumer saw %d messages of an aborted transaction", len(recs))
	}
}
