package kafka

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/logship/logship/pipeline"
)

// metrics are the kafka input's own metrics; the runner counts the events
// and bytes of the chunks it emits.
type metrics struct {
	records   *prometheus.CounterVec // component, topic
	bytes     *prometheus.CounterVec // component, topic
	lag       *prometheus.GaugeVec   // component, topic
	commitErr prometheus.Counter
	revoked   prometheus.Counter
	givenUp   prometheus.Counter
	undec     *prometheus.CounterVec // component, reason
	skipped   prometheus.Counter
	name      string

	mu       sync.Mutex
	perTopic map[string]topicCounters
}

type topicCounters struct{ records, bytes prometheus.Counter }

const ns, sub = "logship", "kafka_in"

func newMetrics(set pipeline.Settings) *metrics {
	reg := set.Metrics.Registerer
	records := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_total",
		Help: "Messages consumed, per topic."}, []string{"component", "topic"}))
	bytes := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bytes_total",
		Help: "Bytes of message values consumed, per topic."}, []string{"component", "topic"}))
	lag := pipeline.RegisterOnce(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "lag_records",
		Help: "Messages in the partitions this member owns that are not durable in the buffer yet: each partition's high watermark at its last fetch minus the offset after its longest run of durable messages, summed per topic."}, []string{"component", "topic"}))
	commitErr := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "commit_errors_total",
		Help: "Offset commits that failed (they are retried with the next commit; a member that lost its partitions reads nothing twice but what the new owner reads again)."}, []string{"component"}))
	revoked := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partitions_revoked_total",
		Help: "Partitions this member gave up in rebalances (or lost)."}, []string{"component"}))
	givenUp := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "revoked_pending_chunks_total",
		Help: "Chunks of a revoked partition still on their way into the buffer when revoke_timeout ran out: their messages are read again by the partition's new owner."}, []string{"component"}))
	undec := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "undecoded_records_total",
		Help: "Message values that did not decode as the format says (bad_json, bad_msgpack) and were kept as they are under the key field."}, []string{"component", "reason"}))
	skipped := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "resumed_past_commit_records_total",
		Help: "Messages not read again at a partition's assignment because their positions, stored with the data in the buffer, were past the committed offset (after a kill)."}, []string{"component"}))
	return &metrics{
		skipped: skipped.WithLabelValues(set.Name), undec: undec, records: records, bytes: bytes, lag: lag, name: set.Name,
		commitErr: commitErr.WithLabelValues(set.Name),
		revoked:   revoked.WithLabelValues(set.Name),
		givenUp:   givenUp.WithLabelValues(set.Name),
		perTopic:  map[string]topicCounters{},
	}
}

// consumed counts n messages of b value bytes from topic.
func (m *metrics) consumed(topic string, n, b int) {
	m.mu.Lock()
	c, ok := m.perTopic[topic]
	if !ok {
		c = topicCounters{m.records.WithLabelValues(m.name, topic), m.bytes.WithLabelValues(m.name, topic)}
		m.perTopic[topic] = c
	}
	m.mu.Unlock()
	c.records.Add(float64(n))
	c.bytes.Add(float64(b))
}

func (m *metrics) setLag(topic string, lag int64) {
	m.lag.WithLabelValues(m.name, topic).Set(float64(lag))
}

func (m *metrics) undecoded(reason string, n int) {
	m.undec.WithLabelValues(m.name, reason).Add(float64(n))
}
