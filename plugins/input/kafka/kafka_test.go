package kafka

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// TestConsumeTwoTopics: every message of two topics is emitted once, with
// its tag (the header, else the topic), its time (the message timestamp)
// and its record; the group's offsets end at the high watermarks.
func TestConsumeTwoTopics(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "web", "db"))
	const n = 3000
	base := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	produce(t, c, "web", n, func(i int) *kgo.Record {
		r := jsonMsg("web")(i)
		r.Timestamp = base.Add(time.Duration(i) * time.Millisecond)
		if i%2 == 0 {
			r.Headers = []kgo.RecordHeader{{Key: "tag", Value: []byte("app.web")}}
		}
		return r
	})
	produce(t, c, "db", n, func(i int) *kgo.Record {
		r := jsonMsg("db")(i)
		r.Timestamp = base.Add(time.Duration(i) * time.Millisecond)
		return r
	})
	e := newEmitter(t)
	cfg := testConfig(c, "g1", "web", "db")
	cfg.Batch.MaxEvents = 100
	m := startInput(t, cfg, e)
	waitCount(t, e, 2*n, 20*time.Second)

	got := e.records()
	if err := exactlyOnce(idsOf(got), append(ids("web", 0, n), ids("db", 0, n)...)); err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		topic, num, _ := strings.Cut(r.id(), "-")
		i, err := strconv.Atoi(num)
		if err != nil {
			t.Fatalf("id %q: %v", r.id(), err)
		}
		wantTag := topic
		if topic == "web" && i%2 == 0 {
			wantTag = "app.web"
		}
		if r.tag != wantTag {
			t.Fatalf("%s: tag %q, want %q", r.id(), r.tag, wantTag)
		}
		if want := mpack.EventTimeOf(base.Add(time.Duration(i) * time.Millisecond)); r.time != want {
			t.Fatalf("%s: time %v, want %v", r.id(), r.time, want)
		}
		if fmt.Sprint(r.m["n"]) != fmt.Sprint(i) {
			t.Fatalf("%s: record %v", r.id(), r.m)
		}
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		for _, topic := range []string{"web", "db"} {
			if got := sum(committed(t, c, "g1", topic)); got != n {
				return fmt.Errorf("%s: committed offsets sum to %d, want %d", topic, got, n)
			}
		}
		return nil
	})
	if v := testutil.Value(m.in.m.records); v != 2*n {
		t.Fatalf("records_total %v, want %d", v, 2*n)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		m.in.updateLag()
		if v := testutil.Value(m.in.m.lag); v != 0 {
			return fmt.Errorf("lag %v, want 0", v)
		}
		return nil
	})
}

// TestCommitOnlyDurable: offsets move only past chunks the buffer has
// acknowledged; after a restart in the same group, the messages never
// acknowledged are read again and the others are not.
func TestCommitOnlyDurable(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(1, "logs"))
	const n = 1000
	produce(t, c, "logs", n, jsonMsg("a"))
	e := newEmitter(t)
	e.hold = true
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 100
	m := startInput(t, cfg, e)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if got := e.emittedCount(); got < n {
			return fmt.Errorf("%d emitted", got)
		}
		return nil
	})
	// Nothing durable: nothing committed.
	time.Sleep(300 * time.Millisecond)
	if got := committed(t, c, "g", "logs"); sum(got) != 0 {
		t.Fatalf("committed %v before any ack", got)
	}
	// Acknowledge the first 3 chunks: the commit moves to 300.
	e.release(3)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := committed(t, c, "g", "logs")[0]; got != 300 {
			return fmt.Errorf("committed %d, want 300", got)
		}
		return nil
	})
	// Stop with 7 chunks never acknowledged: Stop gives up waiting, and
	// the commit stays at 300.
	if err := m.stop(t, 300*time.Millisecond); err == nil {
		t.Fatal("stop with unacknowledged chunks returned nil")
	}
	if got := committed(t, c, "g", "logs")[0]; got != 300 {
		t.Fatalf("committed %d after stop, want 300", got)
	}
	e.release(-1) // late acks of a stopped input change nothing

	e2 := newEmitter(t)
	startInput(t, cfg, e2)
	waitCount(t, e2, n-300, 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	if err := exactlyOnce(idsOf(e2.records()), ids("a", 300, n)); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := committed(t, c, "g", "logs")[0]; got != n {
			return fmt.Errorf("committed %d, want %d", got, n)
		}
		return nil
	})
}

// TestOutOfOrderAcks: chunks acknowledged out of order (different tags go
// to different buffer partitions) move the commit only over the longest
// acknowledged run.
func TestOutOfOrderAcks(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(1, "logs"))
	produce(t, c, "logs", 500, jsonMsg("a"))
	e := newEmitter(t)
	e.hold = true
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 100
	m := startInput(t, cfg, e)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if got := e.heldCount(); got < 5 {
			return fmt.Errorf("%d chunks held", got)
		}
		return nil
	})
	// Acknowledge chunks 1 to 4 but not 0: nothing can be committed.
	e.mu.Lock()
	h := e.held
	e.held = nil
	e.mu.Unlock()
	for _, f := range h[1:] {
		f()
	}
	time.Sleep(300 * time.Millisecond)
	if got := committed(t, c, "g", "logs")[0]; got != 0 {
		t.Fatalf("committed %d with chunk 0 not durable", got)
	}
	h[0]()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := committed(t, c, "g", "logs")[0]; got != 500 {
			return fmt.Errorf("committed %d, want 500", got)
		}
		return nil
	})
	_ = m
}

// TestRetryNotStored: a chunk the buffer did not store (a retryable
// error) is emitted again until it is; a chunk refused for good is
// dropped, counted and committed past.
func TestRetryNotStored(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(1, "logs"))
	const n = 500
	produce(t, c, "logs", n, jsonMsg("a"))
	e := newEmitter(t)
	permanent := -1
	e.fail = func(k int) error {
		switch k {
		case 1, 2, 3:
			return errors.New("disk full (test)")
		case 6:
			permanent = k
			return pipeline.Permanent(errors.New("refused (test)"))
		}
		return nil
	}
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 100
	m := startInput(t, cfg, e)
	// Chunk 6 is a retry of one of the failed ones or a later chunk: its
	// 100 events are dropped for good.
	waitCount(t, e, n-100, 10*time.Second)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := committed(t, c, "g", "logs")[0]; got != n {
			return fmt.Errorf("committed %d, want %d", got, n)
		}
		return nil
	})
	missing, dups, extra := diff(idsOf(e.records()), ids("a", 0, n))
	if len(missing) != 100 || len(dups) != 0 || len(extra) != 0 {
		t.Fatalf("%d missing, %d duplicated, %d unexpected; want the 100 of the refused chunk missing", len(missing), len(dups), len(extra))
	}
	if permanent < 0 {
		t.Fatal("no chunk refused")
	}
	if v := gathered(t, m.reg, "logship_dropped_records_total"); v != 100 {
		t.Fatalf("dropped_records_total %v, want 100", v)
	}
}

// TestDecode: json and msgpack values become records; a value that does
// not decode is kept raw under key and counted, never dropped; raw keeps
// every value; tag templates read the topic and record fields.
func TestDecode(t *testing.T) {
	t.Parallel()
	good, _ := msgpack.Marshal(map[string]any{"id": "mp-1", "svc": "api"})
	notMap, _ := msgpack.Marshal([]any{1, 2})
	cases := []struct {
		name, format, tag string
		values            [][]byte
		want              []map[string]any
		tags              []string
		bad               map[string]float64
	}{
		{
			name: "json", format: "json", tag: "kafka.{topic}",
			values: [][]byte{[]byte(`{"id":"j-1","a":{"b":[1,2.5,"x",null,true]}}`), []byte(`not json`), []byte(`{"id":"j-2"} trailing`), []byte(`[1,2]`), {}},
			want: []map[string]any{
				{"id": "j-1", "a": map[string]any{"b": []any{int8(1), 2.5, "x", nil, true}}},
				{"log": "not json"}, {"log": `{"id":"j-2"} trailing`}, {"log": "[1,2]"}, {"log": ""},
			},
			tags: []string{"kafka.t-json", "kafka.t-json", "kafka.t-json", "kafka.t-json", "kafka.t-json"},
			bad:  map[string]float64{"bad_json": 4},
		},
		{
			name: "msgpack", format: "msgpack", tag: "{record.svc|none}",
			values: [][]byte{good, notMap, append(append([]byte{}, good...), 0xc0), {0x81, 0xa1}, []byte("text")},
			want: []map[string]any{
				{"id": "mp-1", "svc": "api"},
				{"log": string(notMap)}, {"log": string(good) + "\xc0"}, {"log": "\x81\xa1"}, {"log": "text"},
			},
			tags: []string{"api", "none", "none", "none", "none"},
			bad:  map[string]float64{"bad_msgpack": 4},
		},
		{
			name: "raw", format: "raw", tag: "{topic[-1]}",
			values: [][]byte{[]byte(`{"a":1}`), []byte("line")},
			want:   []map[string]any{{"log": `{"a":1}`}, {"log": "line"}},
			tags:   []string{"t-raw", "t-raw"},
		},
	}
	c := cluster(t, kfake.SeedTopics(1, "t-json", "t-msgpack", "t-raw"))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := "t-" + tc.name
			produce(t, c, topic, len(tc.values), func(i int) *kgo.Record { return &kgo.Record{Value: tc.values[i]} })
			e := newEmitter(t)
			cfg := testConfig(c, "g-"+tc.name, topic)
			cfg.Format = tc.format
			cfg.Tag = tc.tag
			m := startInput(t, cfg, e)
			waitCount(t, e, len(tc.values), 10*time.Second)
			got := e.records()
			for i, r := range got {
				if !reflect.DeepEqual(r.m, tc.want[i]) {
					t.Errorf("value %d: record %#v, want %#v", i, r.m, tc.want[i])
				}
				if r.tag != tc.tags[i] {
					t.Errorf("value %d: tag %q, want %q", i, r.tag, tc.tags[i])
				}
			}
			for reason, n := range tc.bad {
				if v := gatheredLabel(t, m.reg, "logship_kafka_in_undecoded_records_total", "reason", reason); v != n {
					t.Errorf("undecoded_records_total{reason=%q} %v, want %v", reason, v, n)
				}
			}
		})
	}
}

// TestBackpressure: while the buffer does not take chunks (Emit blocks)
// the input polls no more, and while it does not acknowledge them the
// bytes it keeps stay under max_pending_bytes plus one poll's chunk.
func TestBackpressure(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(1, "logs"))
	const n = 20000
	produce(t, c, "logs", n, jsonMsg("a"))
	e := newEmitter(t)
	e.hold = true
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 100
	cfg.Batch.MaxBytes = 4 << 10
	cfg.MaxPendingBytes = 64 << 10
	cfg.FetchMaxBytes = 16 << 10
	startInput(t, cfg, e)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if got := e.emittedCount(); got == 0 {
			return errors.New("nothing emitted")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	held := e.emittedCount()
	e.mu.Lock()
	maxHeld := e.maxHeld
	e.mu.Unlock()
	if held >= n {
		t.Fatalf("all %d emitted without one ack", held)
	}
	// The chunk that crosses the bound is the last one emitted.
	if limit := int(cfg.MaxPendingBytes + cfg.Batch.MaxBytes); maxHeld > limit {
		t.Fatalf("%d bytes held unacknowledged, limit %d", maxHeld, limit)
	}
	t.Logf("held %d events, %d bytes, before acknowledgements", held, maxHeld)
	// Acknowledge as they come: everything arrives.
	e.mu.Lock()
	e.hold = false
	e.mu.Unlock()
	e.release(-1)
	waitCount(t, e, n, 20*time.Second)
	if err := exactlyOnce(idsOf(e.records()), ids("a", 0, n)); err != nil {
		t.Fatal(err)
	}
}

// TestTopicRegex: topic_regex consumes the matching topics only.
func TestTopicRegex(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(2, "re.a", "re.b", "other"))
	for _, topic := range []string{"re.a", "re.b", "other"} {
		produce(t, c, topic, 100, jsonMsg(topic))
	}
	e := newEmitter(t)
	cfg := testConfig(c, "g", "re.a")
	cfg.Topics = nil
	cfg.TopicRegex = `^re\.`
	startInput(t, cfg, e)
	waitCount(t, e, 200, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if err := exactlyOnce(idsOf(e.records()), append(ids("re.a", 0, 100), ids("re.b", 0, 100)...)); err != nil {
		t.Fatal(err)
	}
}

// TestStopWithBrokersGone: Stop returns within its context when the
// brokers are gone.
func TestStopWithBrokersGone(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "logs"),
		kfake.BrokerConfigs(map[string]string{"group.min.session.timeout.ms": "100"}))
	if err != nil {
		t.Fatal(err)
	}
	produce(t, c, "logs", 100, jsonMsg("a"))
	e := newEmitter(t)
	m := startInput(t, testConfig(c, "g", "logs"), e)
	waitCount(t, e, 100, 10*time.Second)
	c.Close()
	start := time.Now()
	_ = m.stop(t, 2*time.Second)
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("stop took %s", d)
	}
	t.Logf("stop took %s", time.Since(start).Round(time.Millisecond))
}
