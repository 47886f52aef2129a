package forward

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logship/logship/pipeline"
)

// metrics are the forward output's own metrics; the runner counts events,
// bytes and errors, and retries are counted on Settings.Metrics.Retries.
type metrics struct {
	acks     prometheus.Counter
	latency  prometheus.Observer
	inflight prometheus.Gauge
	servers  prometheus.Gauge

	connects *prometheus.CounterVec // component, server
	up       *prometheus.GaugeVec   // component, server
	failures *prometheus.CounterVec // component, server, reason
	name     string
	std      *pipeline.ComponentMetrics
}

const ns, sub = "logship", "forward_out"

func newMetrics(set pipeline.Settings) *metrics {
	reg := set.Metrics.Registerer
	byComponent := []string{"component"}
	byServer := []string{"component", "server"}
	acks := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "acks_total",
		Help: "Chunks a receiver acknowledged."}, byComponent))
	latency := pipeline.RegisterOnce(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "ack_latency_seconds",
		Help: "From writing a chunk to its ack.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 17)}, byComponent))
	inflight := pipeline.RegisterOnce(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "inflight_chunks",
		Help: "Chunks being sent or waiting for their ack."}, byComponent))
	servers := pipeline.RegisterOnce(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "resolved_servers",
		Help: "Server addresses the output sends to: what its servers resolve to."}, byComponent))
	connects := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "connects_total",
		Help: "Connections established to a server (handshake included); more than one means reconnects."}, byServer))
	up := pipeline.RegisterOnce(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "server_up",
		Help: "1 while a server is healthy, 0 while it is in its retry backoff."}, byServer))
	failures := pipeline.RegisterOnce(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "failures_total",
		Help: "Connection failures per server and reason (connect, tls, auth, handshake, write, read, ack_timeout, resolve)."}, []string{"component", "server", "reason"}))
	return &metrics{
		acks:     acks.WithLabelValues(set.Name),
		latency:  latency.WithLabelValues(set.Name),
		inflight: inflight.WithLabelValues(set.Name),
		servers:  servers.WithLabelValues(set.Name),
		connects: connects, up: up, failures: failures,
		name: set.Name,
		std:  set.Metrics,
	}
}

// forget drops the series of a server address that left.
func (m *metrics) forget(addr string) {
	m.connects.DeleteLabelValues(m.name, addr)
	m.up.DeleteLabelValues(m.name, addr)
	m.failures.DeletePartialMatch(prometheus.Labels{"component": m.name, "server": addr})
}

// failure counts one failure of server addr.
func (m *metrics) failure(addr, reason string) {
	m.failures.WithLabelValues(m.name, addr, reason).Inc()
	m.std.Error(reason)
}
