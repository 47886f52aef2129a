package kafka

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logship/logship/internal/jsonmp"
	"github.com/logship/logship/internal/mpack"
)

// decodeResult says how a message value became a record.
type decodeResult uint8

const (
	decodedOK  decodeResult = iota
	decodedRaw              // format raw
	badJSON                 // format json, value not one JSON object: kept raw
	badMsgpack              // format msgpack, value not one msgpack map: kept raw
)

// eventTime is the message's timestamp, or now when it has none (before
// 1970: Kafka's -1 for "no timestamp").
func eventTime(r *kgo.Record) mpack.EventTime {
	if r.Timestamp.UnixMilli() <= 0 {
		return mpack.Now()
	}
	return mpack.EventTimeOf(r.Timestamp)
}

// appendEntry appends the [time, record] entry of r to dst. It returns
// where the record starts in the result (for a tag template that reads
// record fields) and how the value was decoded. It never fails: a value
// that does not decode is kept as {key: VALUE}.
func (in *Input) appendEntry(dst []byte, r *kgo.Record) ([]byte, int, decodeResult) {
	dst = append(dst, 0x92)
	dst = eventTime(r).AppendMsgpack(dst)
	rec := len(dst)
	res := decodedRaw
	switch in.cfg.Format {
	case "json":
		var ok bool
		if dst, ok = jsonmp.AppendRecord(dst, r.Value, nil, 0); ok {
			return dst, rec, decodedOK
		}
		res = badJSON
	case "msgpack":
		if isMap(r.Value) {
			return append(dst, r.Value...), rec, decodedOK
		}
		res = badMsgpack
	}
	dst = mpack.AppendMapHeader(dst, 1)
	dst = mpack.AppendString(dst, in.cfg.Key)
	dst = mpack.AppendStringBytes(dst, r.Value)
	return dst, rec, res
}

// isMap reports whether v is exactly one well-formed msgpack map.
func isMap(v []byte) bool {
	if _, _, err := mpack.ReadMapHeader(v); err != nil {
		return false
	}
	n, err := mpack.SkipValue(v)
	return err == nil && n == len(v)
}
