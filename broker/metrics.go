package broker

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the broker's counters (always kept, for Stats) and exposes
// them, with the gauges computed at scrape time, to Prometheus.
type metrics struct {
	b *Broker

	appendRecords  atomic.Uint64
	appendBytes    atomic.Uint64
	droppedRecords atomic.Uint64
	droppedEvents  atomic.Uint64
	droppedBytes   atomic.Uint64
	corruptRecords atomic.Uint64
	tornBytes      atomic.Uint64
	fullWaits      atomic.Uint64
	diskFull       atomic.Uint64
	tailHits       atomic.Uint64
	segmentsReused atomic.Uint64

	fsync prometheus.Histogram
	reg   prometheus.Registerer

	partBytes, partSegments, partNext, maxBytes, cursorLag, cursorCommitted *prometheus.Desc
	counters                                                                []counterDesc
}

type counterDesc struct {
	d *prometheus.Desc
	v *atomic.Uint64
}

func newMetrics(b *Broker) *metrics {
	m := &metrics{b: b}
	m.fsync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "logship_buffer_fsync_duration_seconds",
		Help:    "Latency of fdatasync calls on buffer segments.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs .. 3.3s
	})
	part := []string{"partition"}
	cur := []string{"cursor", "partition"}
	m.partBytes = prometheus.NewDesc("logship_buffer_bytes", "Bytes of segment files per partition.", part, nil)
	m.partSegments = prometheus.NewDesc("logship_buffer_segments", "Segment files per partition.", part, nil)
	m.partNext = prometheus.NewDesc("logship_buffer_next_offset", "Offset the next record of the partition gets.", part, nil)
	m.maxBytes = prometheus.NewDesc("logship_buffer_max_bytes", "Configured size limit of the buffer (max_bytes).", nil, nil)
	m.cursorLag = prometheus.NewDesc("logship_buffer_cursor_lag_records", "Records between a cursor's committed position and the end of its partition.", cur, nil)
	m.cursorCommitted = prometheus.NewDesc("logship_buffer_cursor_committed_offset", "Next offset a cursor consumes after a restart.", cur, nil)
	c := func(name, help string, v *atomic.Uint64) {
		m.counters = append(m.counters, counterDesc{prometheus.NewDesc(name, help, nil, nil), v})
	}
	c("logship_buffer_appended_records_total", "Records (chunks) appended.", &m.appendRecords)
	c("logship_buffer_appended_bytes_total", "Bytes of frames appended.", &m.appendBytes)
	c("logship_buffer_dropped_records_total", "Records deleted unread by when_full: drop_oldest.", &m.droppedRecords)
	c("logship_buffer_dropped_events_total", "Events deleted unread by when_full: drop_oldest.", &m.droppedEvents)
	c("logship_buffer_dropped_bytes_total", "Bytes deleted unread by when_full: drop_oldest.", &m.droppedBytes)
	c("logship_buffer_corrupted_records_total", "Records found corrupted and skipped.", &m.corruptRecords)
	c("logship_buffer_torn_bytes_total", "Bytes of torn segment tails cut by recovery.", &m.tornBytes)
	c("logship_buffer_full_waits_total", "Appends that waited because the buffer was full.", &m.fullWaits)
	c("logship_buffer_disk_full_errors_total", "Writes that failed with ENOSPC or EDQUOT and were retried.", &m.diskFull)
	c("logship_buffer_segments_reused_total", "Segments written over a consumed segment file instead of a new file (WithSegmentReuse).", &m.segmentsReused)
	c("logship_buffer_tail_reads_total", "Records read from memory right behind the writer (WithTailCache) instead of from the segment files.", &m.tailHits)
	return m
}

func (m *metrics) observeFsync(d time.Duration) { m.fsync.Observe(d.Seconds()) }

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	if err := r.Register(m); err != nil {
		return err
	}
	m.reg = r
	return nil
}

func (m *metrics) unregister() {
	if m.reg != nil {
		m.reg.Unregister(m)
		m.reg = nil
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.fsync.Describe(ch)
	for _, d := range []*prometheus.Desc{m.partBytes, m.partSegments, m.partNext, m.maxBytes, m.cursorLag, m.cursorCommitted} {
		ch <- d
	}
	for _, c := range m.counters {
		ch <- c.d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.fsync.Collect(ch)
	st := m.b.Stats()
	ch <- prometheus.MustNewConstMetric(m.maxBytes, prometheus.GaugeValue, float64(st.MaxBytes))
	for _, p := range st.Partitions {
		l := strconv.Itoa(p.Partition)
		ch <- prometheus.MustNewConstMetric(m.partBytes, prometheus.GaugeValue, float64(p.Bytes), l)
		ch <- prometheus.MustNewConstMetric(m.partSegments, prometheus.GaugeValue, float64(p.Segments), l)
		ch <- prometheus.MustNewConstMetric(m.partNext, prometheus.GaugeValue, float64(p.NextOffset), l)
	}
	for _, c := range st.Cursors {
		l := strconv.Itoa(c.Partition)
		ch <- prometheus.MustNewConstMetric(m.cursorLag, prometheus.GaugeValue, float64(c.Lag), c.Name, l)
		ch <- prometheus.MustNewConstMetric(m.cursorCommitted, prometheus.GaugeValue, float64(c.Committed), c.Name, l)
	}
	for _, c := range m.counters {
		ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(c.v.Load()))
	}
}
