package pipeline

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the per-component metric vectors of one process. It is
// created once per process and outlives reloads, so a reloaded pipeline
// keeps counting where the old one stopped.
type Metrics struct {
	recordsIn  *prometheus.CounterVec
	bytesIn    *prometheus.CounterVec
	recordsOut *prometheus.CounterVec
	bytesOut   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	retries    *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	ackLatency *prometheus.HistogramVec
	Reg        prometheus.Registerer
}

// NewMetrics registers the pipeline's metrics on reg (nil: a private
// registry, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	labels := []string{"kind", "component", "type"}
	cv := func(name, help string, extra ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Name: name, Help: help}, append(append([]string{}, labels...), extra...))
		reg.MustRegister(v)
		return v
	}
	ackLatency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "logship", Name: "downstream_ack_seconds",
		Help:    "Time from emit to the source's ack of a chunk of an input with ack: downstream (every matching output delivered it).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 17), // 1ms .. 65s
	}, labels)
	reg.MustRegister(ackLatency)
	return &Metrics{
		Reg:        reg,
		ackLatency: ackLatency,
		recordsIn:  cv("records_in_total", "Events a component received."),
		bytesIn:    cv("bytes_in_total", "Bytes of msgpack entries a component received."),
		recordsOut: cv("records_out_total", "Events a component passed on or delivered."),
		bytesOut:   cv("bytes_out_total", "Bytes of msgpack entries a component passed on or delivered."),
		errors:     cv("errors_total", "Errors per component and reason.", "reason"),
		retries:    cv("retries_total", "Delivery attempts retried by an output."),
		dropped:    cv("dropped_records_total", "Events given up on (permanent errors, filters).", "reason"),
		duplicates: cv("duplicates_suppressed_total", "Events a component did not store or deliver again because it already had (a resent chunk, a batch read again after a restart, lines read again)."),
	}
}

// Component returns the counters of one named component.
func (m *Metrics) Component(kind Kind, name, typ string) *ComponentMetrics {
	l := prometheus.Labels{"kind": string(kind), "component": name, "type": typ}
	return &ComponentMetrics{
		RecordsIn:  m.recordsIn.With(l),
		BytesIn:    m.bytesIn.With(l),
		RecordsOut: m.recordsOut.With(l),
		BytesOut:   m.bytesOut.With(l),
		Retries:    m.retries.With(l),
		Duplicates: m.duplicates.With(l),
		ackLatency: m.ackLatency,
		labels:     l,
		errors:     m.errors.MustCurryWith(l),
		dropped:    m.dropped.MustCurryWith(l),
		Registerer: m.Reg,
	}
}

// ComponentMetrics are the standard counters of one component.
type ComponentMetrics struct {
	RecordsIn, BytesIn, RecordsOut, BytesOut, Retries prometheus.Counter
	// Duplicates counts events suppressed as already stored or delivered
	// (effectively-once delivery: docs/operations.md).
	Duplicates      prometheus.Counter
	ackLatency      *prometheus.HistogramVec
	labels          prometheus.Labels
	errors, dropped *prometheus.CounterVec
	// Registerer is where a plugin registers metrics of its own; register
	// through RegisterOnce, since a reload creates the plugin again.
	Registerer prometheus.Registerer
}

// DownstreamAck returns the histogram of an input with ack: downstream:
// the time from emit to the source's ack (logship_downstream_ack_seconds).
// It is created on first use, so that other components export no empty
// histogram.
func (c *ComponentMetrics) DownstreamAck() prometheus.Observer {
	if c == nil || c.ackLatency == nil {
		return nil
	}
	return c.ackLatency.With(c.labels)
}

// Error counts one error of the given reason ("malformed_frame", ...).
func (c *ComponentMetrics) Error(reason string) {
	c.errors.WithLabelValues(reason).Inc()
}

// Dropped counts n events given up on for the given reason.
func (c *ComponentMetrics) Dropped(reason string, n int) {
	c.dropped.WithLabelValues(reason).Add(float64(n))
}

// RegisterOnce registers c on reg, or returns the collector registered
// before under the same description (after a reload).
func RegisterOnce[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// NopMetrics returns counters registered nowhere, for tests.
func NopMetrics(kind Kind, name string) *ComponentMetrics {
	return NewMetrics(nil).Component(kind, name, "test")
}
