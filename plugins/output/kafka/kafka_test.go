package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// TestMain runs the crash test's child when asked to, and otherwise fails
// the package if a test leaves a goroutine running.
func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}

// cluster starts an in-process Kafka of three brokers on 127.0.0.1:0.
func cluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type harness struct {
	out *Output
	reg *prometheus.Registry
}

// start makes and starts an output on c with the test's changes to the
// defaults.
func start(t testing.TB, c *kfake.Cluster, edit func(*Config)) *harness {
	t.Helper()
	h, err := tryStart(t, c, edit)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func tryStart(t testing.TB, c *kfake.Cluster, edit func(*Config)) (*harness, error) {
	t.Helper()
	cfg := defaultConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.Topic = "logs"
	cfg.Linger = conftypes.Duration(time.Millisecond)
	if edit != nil {
		edit(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	set := pipeline.Settings{Name: "kafka.0", Type: "kafka", DataDir: t.TempDir(), Metrics: pipeline.NewMetrics(reg).Component(pipeline.KindOutput, "kafka.0", "kafka")}
	if tt, ok := t.(*testing.T); ok {
		set.Logger = zaptest.NewLogger(tt)
	}
	o, err := New(set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = o.Stop(context.Background()) })
	return &harness{out: o, reg: reg}, nil
}

// event is one test event.
type event struct {
	t   time.Time
	rec map[string]any
}

func batch(t testing.TB, tag string, offset uint64, evs ...event) pipeline.Batch {
	t.Helper()
	var entries []byte
	for _, e := range evs {
		rec, err := msgpack.Marshal(e.rec)
		if err != nil {
			t.Fatal(err)
		}
		entries = mpack.AppendEntry(entries, mpack.EventTimeOf(e.t), rec)
	}
	return pipeline.Batch{Chunk: pipeline.Chunk{Tag: tag, Entries: entries, Count: len(evs)}, Partition: 1, Offset: offset, Epoch: 7}
}

func events(n int, base time.Time, fn func(i int) map[string]any) []event {
	evs := make([]event, n)
	for i := range evs {
		evs[i] = event{t: base.Add(time.Duration(i) * time.Millisecond), rec: fn(i)}
	}
	return evs
}

func write(t testing.TB, o *Output, b pipeline.Batch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := o.Write(ctx, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// consume reads topic from the start until it has n messages (and a
// little longer, to see extra ones).
func consume(t testing.TB, c *kfake.Cluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(15 * time.Second)
	extra := time.Time{}
	for time.Now().Before(deadline) {
		if len(out) >= n {
			if extra.IsZero() {
				extra = time.Now().Add(200 * time.Millisecond)
			} else if time.Now().After(extra) {
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	if len(out) != n {
		t.Fatalf("topic %s: %d messages, want %d", topic, len(out), n)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

// TestTopicsHeadersTimestamps: a templated topic sends two tags to two
// topics; every message carries its record as JSON, the tag and event_id
// headers and the event time.
func TestTopicsHeadersTimestamps(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs.web", "logs.db"))
	h := start(t, c, func(cfg *Config) { cfg.Topic = "logs.{tag[1]}"; cfg.TagKey = "tag" })
	base := time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)
	counts := map[string]int{"web": 300, "db": 120}
	for name, n := range counts {
		for off := uint64(0); off < 3; off++ {
			write(t, h.out, batch(t, "app."+name, off, events(n/3, base, func(i int) map[string]any {
				return map[string]any{"msg": fmt.Sprintf("%s-%d-%d", name, off, i), "n": i}
			})...))
		}
	}
	for name, n := range counts {
		recs := consume(t, c, "logs."+name, n)
		seen := map[string]bool{}
		for _, r := range recs {
			if got := header(r, HeaderTag); got != "app."+name {
				t.Fatalf("tag header %q", got)
			}
			var v map[string]any
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Fatalf("value %q: %v", r.Value, err)
			}
			msg, _ := v["msg"].(string)
			var off uint64
			var i int
			if _, err := fmt.Sscanf(strings.TrimPrefix(msg, name+"-"), "%d-%d", &off, &i); err != nil || v["tag"] != "app."+name || v["n"] != float64(i) {
				t.Fatalf("value %s", r.Value)
			}
			if want := base.Add(time.Duration(i) * time.Millisecond); !r.Timestamp.Equal(want.Truncate(time.Millisecond)) {
				t.Fatalf("timestamp %v, want %v", r.Timestamp, want)
			}
			id := header(r, HeaderEventID)
			if want := EventID(h.out.SenderID(), 7, 1, off, uint32(i)); id != want || len(id) != EventIDLen {
				t.Fatalf("event_id %q, want %q", id, want)
			}
			if seen[id] {
				t.Fatalf("event_id %s twice", id)
			}
			seen[id] = true
		}
	}
	if got := counter(t, h.reg, "logship_kafka_out_records_total", map[string]string{"topic": "logs.web"}); got != 300 {
		t.Errorf("records_total{topic=logs.web} = %v, want 300", got)
	}
}

// murmur2 is Kafka's hash (org.apache.kafka.common.utils.Utils.murmur2),
// written again here from the Java source so that the test does not trust
// the client's copy.
func murmur2(data []byte) int32 {
	const seed, m, r = uint32(0x9747b28c), uint32(0x5bd1e995), 24
	length := len(data)
	h := seed ^ uint32(length)
	for i := 0; i+4 <= length; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := length &^ 3
	switch length % 4 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// javaPartition is DefaultPartitioner / BuiltInPartitioner.partitionForKey:
// toPositive(murmur2(key)) % numPartitions.
func javaPartition(key []byte, n int32) int32 { return (murmur2(key) & 0x7fffffff) % n }

// TestKeyedPartitioningMatchesJava checks the test's murmur2 against the
// values in Kafka's own UtilsTest, then that keyed messages land where the
// Java client puts them, and that unkeyed ones reach every partition.
func TestKeyedPartitioningMatchesJava(t *testing.T) {
	t.Parallel()
	vectors := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for k, want := range vectors {
		if got := murmur2([]byte(k)); got != want {
			t.Fatalf("murmur2(%q) = %d, want %d (Kafka's UtilsTest)", k, got, want)
		}
	}
	const parts = 7
	c := cluster(t, kfake.SeedTopics(parts, "keyed", "unkeyed"))
	h := start(t, c, func(cfg *Config) { cfg.Topic = "keyed"; cfg.Key = "user.id" })
	var keys []string
	for k := range vectors {
		keys = append(keys, k)
	}
	for i := range 200 {
		keys = append(keys, fmt.Sprintf("user-%d", i))
	}
	write(t, h.out, batch(t, "app", 0, events(len(keys), time.Now(), func(i int) map[string]any {
		return map[string]any{"user": map[string]any{"id": keys[i]}, "i": i}
	})...))
	write(t, h.out, batch(t, "app", 1, events(10, time.Now(), func(i int) map[string]any { return map[string]any{"user": map[string]any{"id": 12345}} })...))
	for _, r := range consume(t, c, "keyed", len(keys)+10) {
		if want := javaPartition(r.Key, parts); r.Partition != want {
			t.Fatalf("key %q on partition %d, the Java client picks %d", r.Key, r.Partition, want)
		}
		if len(r.Key) == 0 {
			t.Fatal("message without its key")
		}
	}

	u := start(t, c, func(cfg *Config) { cfg.Topic = "unkeyed"; cfg.Key = "missing" })
	const chunks, per = 60, 50
	for off := range uint64(chunks) {
		write(t, u.out, batch(t, "app", off, events(per, time.Now(), func(i int) map[string]any { return map[string]any{"i": i} })...))
	}
	byPart := map[int32]int{}
	for _, r := range consume(t, c, "unkeyed", chunks*per) {
		if r.Key != nil {
			t.Fatalf("unexpected key %q", r.Key)
		}
		byPart[r.Partition]++
	}
	if len(byPart) != parts {
		t.Errorf("unkeyed messages reached %d of %d partitions: %v", len(byPart), parts, byPart)
	}
}

// TestCompressionCodecs: every codec round-trips, and msgpack values are
// the records as stored.
func TestCompressionCodecs(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "none", "gzip", "snappy", "lz4", "zstd"))
	for codec := range codecs {
		t.Run(codec, func(t *testing.T) {
			t.Parallel()
			h := start(t, c, func(cfg *Config) { cfg.Topic = codec; cfg.Compression = codec; cfg.Format = "msgpack" })
			evs := events(500, time.Now(), func(i int) map[string]any {
				return map[string]any{"log": strings.Repeat("compressible line ", 5) + fmt.Sprint(i), "i": i}
			})
			write(t, h.out, batch(t, "app", 0, evs...))
			recs := consume(t, c, codec, len(evs))
			got := map[int]bool{}
			for _, r := range recs {
				var v struct {
					Log string `msgpack:"log"`
					I   int    `msgpack:"i"`
				}
				if err := msgpack.Unmarshal(r.Value, &v); err != nil {
					t.Fatal(err)
				}
				if !strings.HasSuffix(v.Log, fmt.Sprint(v.I)) {
					t.Fatalf("value %+v", v)
				}
				got[v.I] = true
			}
			if len(got) != len(evs) {
				t.Fatalf("%d distinct messages", len(got))
			}
		})
	}
}

// TestOutageThenRecovery: produce fails for a while (kfake's fault
// controls); the chunk is not reported done meanwhile, so the runner's
// cursor does not move, and once Kafka takes messages again every event
// arrives, none lost and none twice.
func TestOutageThenRecovery(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	h := start(t, c, func(cfg *Config) {
		cfg.DeliveryTimeout = conftypes.Duration(300 * time.Millisecond)
		cfg.RetryMin = conftypes.Duration(50 * time.Millisecond)
		cfg.RetryMax = conftypes.Duration(200 * time.Millisecond)
	})
	write(t, h.out, batch(t, "app", 0, events(100, time.Now(), func(i int) map[string]any { return map[string]any{"i": i} })...))

	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	var done atomic.Bool
	errc := make(chan error, 1)
	const n = 1000
	h.out.WriteAsync(context.Background(), batch(t, "app", 1, events(n, time.Now(), func(i int) map[string]any { return map[string]any{"i": i, "phase": "outage"} })...),
		func(err error) { done.Store(true); errc <- err })
	if err := fault.Wait(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	// Past delivery_timeout the output takes the messages back and
	// retries them itself; the chunk is still not done. (kgo gives a
	// message back only once its request returned: on a loaded machine,
	// seconds after delivery_timeout.)
	testutil.CheckFor(t, 45*time.Second, func() error {
		if got := counter(t, h.reg, "logship_retries_total", nil); got == 0 {
			return errors.New("no retry counted during the outage")
		}
		return nil
	})
	if done.Load() {
		t.Fatalf("chunk reported done during the outage: %v", <-errc)
	}
	fault.Remove()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("chunk not delivered after the outage")
	}
	recs := consume(t, c, "logs", 100+n)
	ids := map[string]bool{}
	for _, r := range recs {
		ids[header(r, HeaderEventID)] = true
	}
	if len(ids) != 100+n {
		t.Fatalf("%d distinct event ids in %d messages", len(ids), len(recs))
	}
	if got := counter(t, h.reg, "logship_kafka_out_produce_errors_total", map[string]string{"reason": "delivery_timeout"}); got == 0 {
		t.Error("produce errors not counted")
	}
}

// TestTooLargeDropped: a message larger than the topic's max.message.bytes
// (refused by the broker, in a batch with others) and one larger than
// batch_bytes (refused by the client) are dropped and counted; the rest of
// the chunk is delivered.
func TestTooLargeDropped(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	small := "2500"
	if _, err := adm.CreateTopic(context.Background(), 3, 1, map[string]*string{"max.message.bytes": &small}, "logs"); err != nil {
		t.Fatal(err)
	}
	h := start(t, c, func(cfg *Config) {
		cfg.BatchBytes = 8192
		cfg.Compression = "none"
		cfg.Linger = conftypes.Duration(20 * time.Millisecond) // small and large in one batch
	})
	evs := events(52, time.Now(), func(i int) map[string]any { return map[string]any{"i": i} })
	evs[10].rec["log"] = strings.Repeat("x", 4000)  // > max.message.bytes: the broker refuses
	evs[30].rec["log"] = strings.Repeat("y", 10000) // > batch_bytes: the client refuses
	write(t, h.out, batch(t, "app", 0, evs...))
	recs := consume(t, c, "logs", 50)
	for _, r := range recs {
		if len(r.Value) > 1000 {
			t.Fatalf("a too-large message was delivered (%d bytes)", len(r.Value))
		}
	}
	if got := counter(t, h.reg, "logship_dropped_records_total", map[string]string{"reason": "too_large"}); got != 2 {
		t.Errorf("dropped_records_total{reason=too_large} = %v, want 2", got)
	}
}

// TestInvalidTopicDropped: an event whose templated topic is not a valid
// name is dropped and counted, the others delivered.
func TestInvalidTopicDropped(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(1, "svc-api"))
	h := start(t, c, func(cfg *Config) { cfg.Topic = "svc-{record.service}" })
	write(t, h.out, batch(t, "app", 0,
		event{time.Now(), map[string]any{"service": "api"}},
		event{time.Now(), map[string]any{"service": "bad name!"}},
		event{time.Now(), map[string]any{"service": "api"}}))
	consume(t, c, "svc-api", 2)
	if got := counter(t, h.reg, "logship_dropped_records_total", map[string]string{"reason": "invalid_topic"}); got != 1 {
		t.Errorf("dropped_records_total{reason=invalid_topic} = %v, want 1", got)
	}
}

// TestMissingTopic: a fixed topic that does not exist is an error at
// start; with create_topic it is created.
func TestMissingTopic(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	_, err := tryStart(t, c, func(cfg *Config) { cfg.Topic = "absent" })
	if !errors.Is(err, ErrTopicMissing) || !strings.Contains(err.Error(), `"absent"`) {
		t.Fatalf("Start: %v, want ErrTopicMissing naming the topic", err)
	}

	h := start(t, c, func(cfg *Config) {
		cfg.Topic = "created"
		cfg.CreateTopic = CreateTopic{Partitions: 4, ReplicationFactor: 1}
	})
	adm := kadm.NewClient(h.out.cl)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		td, err := adm.ListTopics(context.Background(), "created")
		if err == nil && td["created"].Err == nil && len(td["created"].Partitions) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("created topic: %v %+v", err, td["created"])
		}
	}
	write(t, h.out, batch(t, "app", 0, events(5, time.Now(), func(i int) map[string]any { return map[string]any{"i": i} })...))
	consume(t, c, "created", 5)
}

// TestTemplatedTopicCreated: with create_topic, a templated topic Kafka
// does not know is created when first produced to.
func TestTemplatedTopicCreated(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	h := start(t, c, func(cfg *Config) {
		cfg.Topic = "t.{tag}"
		cfg.CreateTopic = CreateTopic{Partitions: 2, ReplicationFactor: 1}
		cfg.DeliveryTimeout = conftypes.Duration(time.Second)
		cfg.RetryMin = conftypes.Duration(20 * time.Millisecond)
	})
	write(t, h.out, batch(t, "new", 0, events(5, time.Now(), func(i int) map[string]any { return map[string]any{"i": i} })...))
	consume(t, c, "t.new", 5)
}

// TestStopLeavesChunkBuffered: a chunk Kafka never took is reported with a
// non-permanent error when the output stops: it stays in the buffer.
func TestStopLeavesChunkBuffered(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "logs"))
	h := start(t, c, nil)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	errc := make(chan error, 1)
	h.out.WriteAsync(context.Background(), batch(t, "app", 0, events(10, time.Now(), func(i int) map[string]any { return map[string]any{"i": i} })...),
		func(err error) { errc <- err })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_ = h.out.Stop(ctx)
	select {
	case err := <-errc:
		if err == nil || pipeline.IsPermanent(err) {
			t.Fatalf("after stop: %v, want a transient error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("done not called after Stop")
	}
}

func TestConfigErrors(t *testing.T) {
	cases := map[string]func(*Config){
		"topic: template syntax":              func(c *Config) { c.Topic = "logs.{tag" },
		"topic: \"bad topic\" is not a valid": func(c *Config) { c.Topic = "bad topic" },
		"acks: \"2\"":                         func(c *Config) { c.Acks = "2" },
		"compression: \"brotli\"":             func(c *Config) { c.Compression = "brotli" },
		"format: \"avro\"":                    func(c *Config) { c.Format = "avro" },
		"brokers: at least one":               func(c *Config) { c.Brokers = nil },
		"sasl.mechanism: \"GSSAPI\"":          func(c *Config) { c.SASL.Mechanism = "GSSAPI" },
		"key: ":                               func(c *Config) { c.Key = "a..b" },
		"create_topic.replication_factor":     func(c *Config) { c.CreateTopic.ReplicationFactor = 0 },
	}
	for want, edit := range cases {
		cfg := defaultConfig()
		cfg.Brokers = []string{"127.0.0.1:9092"}
		cfg.Topic = "logs"
		edit(cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error containing %q, got %v", want, err)
		}
	}
	cfg := defaultConfig()
	cfg.Brokers = []string{"127.0.0.1:9092"}
	cfg.Topic = "logs.{record.service|unknown}"
	if err := cfg.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// TestSASL: SCRAM-SHA-512 and PLAIN against a kfake that requires SASL.
func TestSASL(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "admin", "secret"), kfake.Superuser("PLAIN", "plain", "pw"),
		kfake.SeedTopics(1, "logs"))
	for _, mech := range []SASL{{"SCRAM-SHA-512", "admin", "secret"}, {"PLAIN", "plain", "pw"}} {
		h := start(t, c, func(cfg *Config) { cfg.SASL = mech })
		write(t, h.out, batch(t, "app", 0, event{time.Now(), map[string]any{"m": mech.Mechanism}}))
	}
}

// TestAcksLevels: acks 1 and 0 (no idempotent producer) deliver too.
func TestAcksLevels(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "acks1", "acks0"))
	for _, acks := range []string{"1", "0"} {
		h := start(t, c, func(cfg *Config) { cfg.Topic = "acks" + acks; cfg.Acks = acks })
		write(t, h.out, batch(t, "app", 0, events(200, time.Now(), func(i int) map[string]any { return map[string]any{"i": i} })...))
		consume(t, c, "acks"+acks, 200)
	}
}
