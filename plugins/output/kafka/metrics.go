package kafka

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logship/logship/pipeline"
)

// metrics are the kafka output's own metrics; the runner counts events,
// bytes and retries per component, and Settings.Metrics.Dropped the
// messages Kafka refused for good.
type metrics struct {
	latency prometheus.Observer
	errors  *prometheus.CounterVec // component, reason
	records *prometheus.CounterVec // component, topic
	bytes   *prometheus.CounterVec // component, topic
	name    string

	mu       sync.Mutex
	perTopic map[string]topicCounters
}

type topicCounters struct{ records, bytes prometheus.Counter }

const ns, sub = "logship", "kafka_out"

func newMetrics(set pipeline.Settings) *metrics {
	reg := set.Metrics.Registerer
	latency := pipeline.RegisterOnce(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "produce_latency_seconds",
		Help: "From producing a chunk's messages to Kafka's acknowledgement of the last of them.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 17)}, []string{"component"}))
	errs := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "produce_errors_total",
		Help: "Messages Kafka or the client did not take, by reason (Kafka's error name, delivery_timeout, canceled, client_closed, client)."}, []string{"component", "reason"}))
	records := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_total",
		Help: "Messages written to Kafka, per topic."}, []string{"component", "topic"}))
	bytes := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bytes_total",
		Help: "Bytes of record batches written to Kafka (after compression), per topic."}, []string{"component", "topic"}))
	return &metrics{latency: latency.WithLabelValues(set.Name), errors: errs, records: records, bytes: bytes, name: set.Name, perTopic: map[string]topicCounters{}}
}

func (m *metrics) produceError(reason string) { m.errors.WithLabelValues(m.name, reason).Inc() }

var _ kgo.HookProduceBatchWritten = (*metrics)(nil)

// OnProduceBatchWritten implements kgo.HookProduceBatchWritten: it counts
// every batch Kafka took.
func (m *metrics) OnProduceBatchWritten(_ kgo.BrokerMetadata, topic string, _ int32, bm kgo.ProduceBatchMetrics) {
	m.mu.Lock()
	c, ok := m.perTopic[topic]
	if !ok {
		c = topicCounters{m.records.WithLabelValues(m.name, topic), m.bytes.WithLabelValues(m.name, topic)}
		m.perTopic[topic] = c
	}
	m.mu.Unlock()
	c.records.Add(float64(bm.NumRecords))
	c.bytes.Add(float64(bm.CompressedBytes))
}
