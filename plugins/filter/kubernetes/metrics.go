package kubernetes

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logship/logship/pipeline"
)

// newVecs makes the filter's metric vectors; newMetrics registers them
// once per registry (pipeline.RegisterOnce returns those of an earlier
// instance after a reload).
func newVecs() (requestsVec, missesVec, recordsVec *prometheus.CounterVec, podsVec *prometheus.GaugeVec) {
	requestsVec = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "kubernetes", Name: "requests_total",
		Help: "Requests to the kubelet or the API server (pod lists and watches) by result: ok, error, unauthorized (401, 403), timeout."}, []string{"component", "source", "result"})
	missesVec = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "kubernetes", Name: "cache_misses_total",
		Help: "Pods a chunk named that the cache did not hold (counted once per chunk and pod)."}, []string{"component"})
	recordsVec = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "kubernetes", Name: "records_total",
		Help: "Records by the metadata they got: full (the pod's, from the cache), file_name_only (the source did not know the pod, or did not answer), none (no container log file named), present (the record had the key already), not_a_map (passed unchanged)."}, []string{"component", "metadata"})
	podsVec = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "logship", Subsystem: "kubernetes", Name: "pods_cached",
		Help: "Pods in the metadata cache (those no longer listed included, for a while)."}, []string{"component"})
	return
}

// metrics are the filter's own series, registered once per process (a
// reload creates the filter again).
type metrics struct {
	component, source string
	reqs              *prometheus.CounterVec
	misses            prometheus.Counter
	full, fileOnly    prometheus.Counter
	none, present     prometheus.Counter
	notMap            prometheus.Counter
	pods              prometheus.Gauge
}

func newMetrics(set pipeline.Settings, source string) *metrics {
	var reg prometheus.Registerer
	if set.Metrics != nil {
		reg = set.Metrics.Registerer
	}
	requestsVec, missesVec, recordsVec, podsVec := newVecs()
	rec := pipeline.RegisterOnce(reg, recordsVec)
	return &metrics{
		component: set.Name, source: source,
		reqs:     pipeline.RegisterOnce(reg, requestsVec),
		misses:   pipeline.RegisterOnce(reg, missesVec).WithLabelValues(set.Name),
		full:     rec.WithLabelValues(set.Name, "full"),
		fileOnly: rec.WithLabelValues(set.Name, "file_name_only"),
		none:     rec.WithLabelValues(set.Name, "none"),
		present:  rec.WithLabelValues(set.Name, "present"),
		notMap:   rec.WithLabelValues(set.Name, "not_a_map"),
		pods:     pipeline.RegisterOnce(reg, podsVec).WithLabelValues(set.Name),
	}
}

func (m *metrics) requests(result string) prometheus.Counter {
	return m.reqs.WithLabelValues(m.component, m.source, result)
}
