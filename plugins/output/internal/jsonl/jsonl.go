// Package jsonl formats batches as JSON lines, one object per event: the
// record, plus the tag and the time under configurable keys. The stdout and
// file outputs share it.
package jsonl

import (
	"time"

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
// valid msgpack is an error: the caller treats it as permanent.
func (f Format) Append(dst []byte, b pipeline.Batch) ([]byte, error) {
	var extra [2]pipeline.JSONField
	var tbuf [40]byte
	err := pipeline.ForEachEntry(b.Entries, func(t pipeline.EventTime, rec []byte) error {
		fields := extra[:0]
		if f.TagKey != "" {
			fields = append(fields, pipeline.JSONField{Key: f.TagKey, Value: b.Tag})
		}
		if f.TimeKey != "" {
			ts := t.Time().In(time.UTC).AppendFormat(tbuf[:0], rfc3339Nano)
			fields = append(fields, pipeline.JSONField{Key: f.TimeKey, Value: string(ts)})
		}
		var err error
		dst, err = pipeline.AppendRecordJSON(dst, rec, fields...)
		dst = append(dst, '\n')
		return err
	})
	return dst, err
}
