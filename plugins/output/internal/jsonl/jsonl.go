// Package jsonl formats batches as JSON lines, one object per event: the
// record, plus the tag and the time under configurable keys. The stdout and
// file outputs share it.
package jsonl

import (
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
)

// Format holds the keys shared by the JSON-lines outputs.
type Format struct {
	// TagKey, when set, adds the event's tag under this key.
	TagKey string `yaml:"tag_key"`
	// TimeKey, when set, adds the event's time under this key as RFC 3339
	// with nanoseconds.
	TimeKey string `yaml:"time_key"`
}

const rfc3339Nano = "2006-01-02T15:04:05.000000000Z07:00"

// Append appends one JSON line per event of b to dst. A record that is not
// valid msgpack is an error: the caller treats it as permanent. Maps and
// arrays nested deeper than mpack.MaxJSONDepth are written as the string
// mpack.JSONTooDeep; cut is how many records had such a value (count
// them with CountCut).
func (f Format) Append(dst []byte, b pipeline.Batch) (out []byte, cut int, err error) {
	var extra [2]mpack.JSONField
	var tbuf [40]byte
	err = mpack.ForEachEntry(b.Entries, func(t mpack.EventTime, rec []byte) error {
		fields := extra[:0]
		if f.TagKey != "" {
			fields = append(fields, mpack.JSONField{Key: f.TagKey, Value: b.Tag})
		}
		if f.TimeKey != "" {
			ts := t.Time().In(time.UTC).AppendFormat(tbuf[:0], rfc3339Nano)
			fields = append(fields, mpack.JSONField{Key: f.TimeKey, Value: string(ts)})
		}
		var err error
		var n int
		dst, n, err = mpack.AppendRecordJSONCut(dst, rec, fields...)
		if n > 0 {
			cut++
		}
		dst = append(dst, '\n')
		return err
	})
	return dst, cut, err
}

// ReasonTooDeep is the errors_total reason under which CountCut counts
// records written with a value cut at mpack.MaxJSONDepth.
const ReasonTooDeep = "record_too_deep"

// CountCut counts cut records (see Append) on the output's errors_total
// and logs the first of them, then at most one line a minute.
func CountCut(set pipeline.Settings, last *time.Time, cut int) {
	if cut == 0 || set.Metrics == nil {
		return
	}
	for range cut {
		set.Metrics.Error(ReasonTooDeep)
	}
	if now := time.Now(); set.Logger != nil && now.Sub(*last) >= time.Minute {
		*last = now
		set.Logger.Warn("records nested deeper than the JSON limit: the deeper part is written as a placeholder string",
			zap.Int("records", cut), zap.Int("max_depth", mpack.MaxJSONDepth), zap.String("placeholder", mpack.JSONTooDeep))
	}
}
