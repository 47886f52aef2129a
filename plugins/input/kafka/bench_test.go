package kafka

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/pipeline"
)

// BenchmarkDecode: one message into an entry and its tag, per format.
func BenchmarkDecode(b *testing.B) {
	jsonVal := []byte(`{"time":"2025-01-02T03:04:05.678Z","level":"info","service":"checkout","msg":"order placed","order_id":123456,"amount":42.5,"tags":["a","b"]}`)
	mpVal, _ := msgpack.Marshal(map[string]any{"time": "2025-01-02T03:04:05.678Z", "level": "info", "service": "checkout", "msg": "order placed", "order_id": 123456, "amount": 42.5, "tags": []string{"a", "b"}})
	for _, tc := range []struct {
		format, tag string
		val         []byte
		hdr         bool
	}{
		{"json", "{topic}", jsonVal, true},
		{"json", "kafka.{record.service}", jsonVal, false},
		{"msgpack", "{topic}", mpVal, true},
		{"raw", "{topic}", jsonVal, false},
	} {
		b.Run(fmt.Sprintf("%s/%s/header=%v", tc.format, tc.tag, tc.hdr), func(b *testing.B) {
			cfg := defaultConfig()
			cfg.Brokers, cfg.Topics, cfg.Group = []string{"127.0.0.1:9092"}, []string{"logs"}, "g"
			cfg.Format, cfg.Tag = tc.format, tc.tag
			in, err := New(pipeline.Settings{Name: "k"}, cfg)
			if err != nil {
				b.Fatal(err)
			}
			r := &kgo.Record{Topic: "logs", Value: tc.val, Timestamp: time.Now()}
			if tc.hdr {
				r.Headers = []kgo.RecordHeader{{Key: "event_id", Value: []byte("0123456789abcdef")}, {Key: "tag", Value: []byte("app.checkout")}}
			}
			var dst, tag []byte
			b.SetBytes(int64(len(tc.val)))
			b.ReportAllocs()
			for b.Loop() {
				var rec int
				dst, rec, _ = in.appendEntry(dst[:0], r)
				tag = in.appendTag(tag[:0], r, dst[rec:])
			}
		})
	}
}

// BenchmarkConsume: messages from kfake (three brokers, six partitions)
// into a test emitter that acknowledges at once, events per second.
func BenchmarkConsume(b *testing.B) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "logs"),
		kfake.BrokerConfigs(map[string]string{"group.min.session.timeout.ms": "100"}))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	n := max(b.N, 1000)
	produce(b, c, "logs", n, jsonMsg("a"))
	e := &countEmitter{}
	cfg := testConfig(c, "bench", "logs")
	b.ResetTimer()
	start := time.Now()
	m := startInput(b, cfg, e)
	for e.n.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
	_ = m.stop(b, 5*time.Second)
}
