package tail

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logship/logship/pipeline"
)

var (
	fileBytesVec = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "file_read_bytes_total", Help: "Bytes read from a file."}, []string{"component", "path"})
	fileLinesVec = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "file_records_total", Help: "Records emitted from a file (lines, or merged and multiline messages)."}, []string{"component", "path"})
	fileLagVec   = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "logship", Subsystem: "tail", Name: "file_lag_bytes", Help: "Bytes between the read position and the end of a file, when last looked at."}, []string{"component", "path"})
	lostVec      = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "lost_bytes_total", Help: "The loss ledger: bytes never read because their file vanished before it was opened (vanished) or was truncated before they were read and no copy of them was found (truncated)."}, []string{"component", "path", "reason"})
	openVec      = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "logship", Subsystem: "tail", Name: "files_open", Help: "Files being followed."}, []string{"component"})
	rotationVec  = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "rotations_total", Help: "Rotations seen: gone (no longer under a matched name), deleted, truncated, renamed (found renamed after a restart), copy (a copytruncate copy found and resumed), rewritten (truncated and written again past the checkpoint while stopped, same first bytes)."}, []string{"component", "kind"})
	rewindVec    = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "rewinds_total", Help: "Times a file was read again from its checkpoint because a chunk was not stored."}, []string{"component"})
	corruptVec   = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "checkpoint_corrupt_total", Help: "Checkpoint files found corrupt (unreadable, not a file, damaged or cut short) at start and moved aside; files without a trusted checkpoint were read from their start."}, []string{"component"})
	recBytesVec  = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "positions_recovered_bytes_total", Help: "Bytes not read again after a restart because the position stored with their chunk in the buffer was newer than checkpoints.json."}, []string{"component"})
	recLinesVec  = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "positions_recovered_lines_total", Help: "Events of chunks wholly past checkpoints.json found in the buffer at start: not read (and stored) again."}, []string{"component"})
	unparsedVec  = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "tail", Name: "unparsed_lines_total", Help: "Lines of a json, cri or docker file kept as they are under the key because they did not parse: invalid, or too_deep (JSON nested more than 128 levels)."}, []string{"component", "reason"})
)

// metrics are the tail input's own collectors, registered once per
// process (a reload creates the input again).
type metrics struct {
	component string
	bytes     *prometheus.CounterVec
	lines     *prometheus.CounterVec
	lag       *prometheus.GaugeVec
	lostB     *prometheus.CounterVec
	open      prometheus.Gauge
	rot       *prometheus.CounterVec
	rewinds   prometheus.Counter
	corrupt   prometheus.Counter
	invalid   prometheus.Counter // lines that did not parse
	tooDeep   prometheus.Counter // JSON lines nested too deeply
	// What the positions stored in the buffer saved at start.
	recoveredBytes, recoveredLines prometheus.Counter
}

func newMetrics(set pipeline.Settings) *metrics {
	reg := set.Metrics.Registerer
	return &metrics{
		component: set.Name,
		bytes:     pipeline.RegisterOnce(reg, fileBytesVec),
		lines:     pipeline.RegisterOnce(reg, fileLinesVec),
		lag:       pipeline.RegisterOnce(reg, fileLagVec),
		lostB:     pipeline.RegisterOnce(reg, lostVec),
		open:      pipeline.RegisterOnce(reg, openVec).WithLabelValues(set.Name),
		rot:       pipeline.RegisterOnce(reg, rotationVec),
		rewinds:   pipeline.RegisterOnce(reg, rewindVec).WithLabelValues(set.Name),
		corrupt:   pipeline.RegisterOnce(reg, corruptVec).WithLabelValues(set.Name),
		invalid:   pipeline.RegisterOnce(reg, unparsedVec).WithLabelValues(set.Name, "invalid"),
		tooDeep:   pipeline.RegisterOnce(reg, unparsedVec).WithLabelValues(set.Name, "too_deep"),

		recoveredBytes: pipeline.RegisterOnce(reg, recBytesVec).WithLabelValues(set.Name),
		recoveredLines: pipeline.RegisterOnce(reg, recLinesVec).WithLabelValues(set.Name),
	}
}

// fileMetrics are one file's series. Tailers of one path (a rotated file
// and its successor) share them; refs counts them so that the series go
// when the last one closes.
type fileMetrics struct {
	bytes, lines prometheus.Counter
	lag          prometheus.Gauge
}

// addFile is called with Input.mu held (it guards refs).
func (m *metrics) addFile(t *tailer, refs map[string]int) {
	refs[t.path]++
	t.m = fileMetrics{
		bytes: m.bytes.WithLabelValues(m.component, t.path),
		lines: m.lines.WithLabelValues(m.component, t.path),
		lag:   m.lag.WithLabelValues(m.component, t.path),
	}
	m.open.Inc()
}

// dropFile is called with Input.mu held (it guards refs).
func (m *metrics) dropFile(path string, refs map[string]int) {
	m.open.Dec()
	refs[path]--
	if refs[path] > 0 {
		return
	}
	delete(refs, path)
	m.bytes.DeleteLabelValues(m.component, path)
	m.lines.DeleteLabelValues(m.component, path)
	m.lag.DeleteLabelValues(m.component, path)
}

// lost adds n bytes of path to the loss ledger.
func (m *metrics) lost(path, reason string, n int64) {
	if n > 0 {
		m.lostB.WithLabelValues(m.component, path, reason).Add(float64(n))
	}
}

// rotation counts a rotation of kind (gone, deleted, truncated, renamed,
// copy, rewritten).
func (m *metrics) rotation(kind string) {
	m.rot.WithLabelValues(m.component, kind).Inc()
}

// unparsed counts a line kept as it is because it did not parse.
func (m *metrics) unparsed(line []byte) {
	if tooDeep(line) {
		m.tooDeep.Inc()
		return
	}
	m.invalid.Inc()
}
