package kafka

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/template"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/output/internal/jsonl"
)

// Header names every message carries.
const (
	HeaderTag     = "tag"
	HeaderEventID = "event_id"
)

// EventIDLen is the length of an event_id header value: the lowercase hex
// of sender(6) | epoch(8) | partition(2) | offset(8) | index(4).
const EventIDLen = 2 * (6 + 8 + 2 + 8 + 4)

// EventID returns the event_id of the index-th event of the chunk at
// (epoch, partition, offset) of the buffer of sender.
func EventID(sender [6]byte, epoch uint64, partition uint16, offset uint64, index uint32) string {
	return string(appendEventID(nil, chunkPrefix(sender, epoch, partition, offset), index))
}

func chunkPrefix(sender [6]byte, epoch uint64, partition uint16, offset uint64) [24]byte {
	var b [24]byte
	copy(b[:], sender[:])
	binary.BigEndian.PutUint64(b[6:], epoch)
	binary.BigEndian.PutUint16(b[14:], partition)
	binary.BigEndian.PutUint64(b[16:], offset)
	return b
}

func appendEventID(dst []byte, prefix [24]byte, index uint32) []byte {
	var b [28]byte
	copy(b[:], prefix[:])
	binary.BigEndian.PutUint32(b[24:], index)
	return hex.AppendEncode(dst, b[:])
}

// span is where one message's bytes sit in job.buf while a chunk is
// encoded (buf may move as it grows).
type span struct {
	topic         string
	ts            time.Time
	keyAt, keyEnd int // keyAt < 0: no key
	valAt, valEnd int // valAt < 0: val holds the value (msgpack: the record itself)
	val           []byte
	idAt          int
}

// job is one chunk being produced: its messages, and what Kafka answered.
// Jobs are pooled; a job's bytes stay untouched until every promise of it
// has returned.
type job struct {
	o         *Output
	promiseFn func(*kgo.Record, error)

	ctx  context.Context
	done func(error)
	// rctx bounds one round of produce calls to delivery_timeout.
	rctx    context.Context
	rcancel context.CancelFunc
	b       pipeline.Batch
	start   time.Time

	recs    []kgo.Record
	hdrs    []kgo.RecordHeader
	spans   []span
	buf     []byte
	scratch []byte

	pending atomic.Int64

	mu       sync.Mutex
	failed   []*kgo.Record // transient errors: produced again after a backoff
	tooLarge []*kgo.Record // MESSAGE_TOO_LARGE: tried alone (produceAlone)
	lastErr  error

	attempt int
	backoff time.Duration
}

// build encodes b into messages. An error means the entries are not valid
// msgpack: the chunk can never be delivered.
func (j *job) build(ctx context.Context, b pipeline.Batch, done func(error)) error {
	o := j.o
	j.ctx, j.done, j.b = ctx, done, b
	j.attempt, j.backoff = 0, o.cfg.RetryMin.D()
	if b.Partition < 0 || b.Partition > math.MaxUint16 {
		return fmt.Errorf("partition %d does not fit an event id", b.Partition)
	}
	prefix := chunkPrefix(o.sender, b.Epoch, uint16(b.Partition), b.Offset)
	j.buf = append(j.buf[:0], b.Tag...)
	tagEnd := len(j.buf)
	j.spans = j.spans[:0]

	topic, topicOK := o.fixed, true
	if topic == "" && !o.topic.UsesRecord() {
		topic = o.topic.Render(b.Tag, nil)
		topicOK = validTopic(topic)
	}
	var fields [2]mpack.JSONField
	var tbuf [40]byte
	index := uint32(0)
	cut := 0
	err := mpack.ForEachEntry(b.Entries, func(t mpack.EventTime, rec []byte) error {
		defer func() { index++ }()
		if o.topic.UsesRecord() {
			j.scratch = o.topic.Append(j.scratch[:0], b.Tag, rec)
			if string(j.scratch) != topic {
				topic = string(j.scratch)
				topicOK = validTopic(topic)
			}
		}
		if !topicOK {
			o.drop("invalid_topic", b, fmt.Errorf("topic template %q rendered %q, which is not a valid topic name", o.cfg.Topic, topic))
			return nil
		}
		s := span{topic: topic, ts: t.Time(), keyAt: -1, valAt: -1}
		if o.key != nil {
			if v, ok := template.Lookup(rec, o.key); ok {
				at := len(j.buf)
				if j.buf, ok = template.AppendScalar(j.buf, v); ok {
					s.keyAt, s.keyEnd = at, len(j.buf)
				}
			}
		}
		if o.cfg.Format == "msgpack" {
			s.val = rec
		} else {
			f := fields[:0]
			if o.cfg.TagKey != "" {
				f = append(f, mpack.JSONField{Key: o.cfg.TagKey, Value: b.Tag})
			}
			if o.cfg.TimeKey != "" {
				f = append(f, mpack.JSONField{Key: o.cfg.TimeKey, Value: string(t.Time().AppendFormat(tbuf[:0], rfc3339Nano))})
			}
			at := len(j.buf)
			var n int
			var err error
			j.buf, n, err = mpack.AppendRecordJSONCut(j.buf, rec, f...)
			if err != nil {
				j.buf = j.buf[:at]
				o.drop("unencodable", b, fmt.Errorf("record cannot be written as JSON: %w", err))
				return nil
			}
			if n > 0 {
				cut++
			}
			s.valAt, s.valEnd = at, len(j.buf)
		}
		s.idAt = len(j.buf)
		j.buf = appendEventID(j.buf, prefix, index)
		j.spans = append(j.spans, s)
		return nil
	})
	if err != nil {
		return err
	}
	if cut > 0 {
		for range cut {
			o.set.Metrics.Error(jsonl.ReasonTooDeep)
		}
		o.rl.Warn(jsonl.ReasonTooDeep, "records nested deeper than the JSON limit: the deeper part is written as a placeholder string",
			zap.Int("records", cut), zap.Int("max_depth", mpack.MaxJSONDepth))
	}

	n := len(j.spans)
	j.recs = grow(j.recs, n)
	j.hdrs = grow(j.hdrs, 2*n)
	tag := j.buf[:tagEnd:tagEnd]
	for i := range j.spans {
		s := &j.spans[i]
		h := j.hdrs[2*i : 2*i+2 : 2*i+2]
		h[0] = kgo.RecordHeader{Key: HeaderTag, Value: tag}
		h[1] = kgo.RecordHeader{Key: HeaderEventID, Value: j.buf[s.idAt : s.idAt+EventIDLen]}
		r := kgo.Record{Topic: s.topic, Timestamp: s.ts, Headers: h, Value: s.val}
		if s.valAt >= 0 {
			r.Value = j.buf[s.valAt:s.valEnd]
		}
		if s.keyAt >= 0 {
			r.Key = j.buf[s.keyAt:s.keyEnd]
		}
		j.recs[i] = r
		s.val = nil
	}
	return nil
}

const rfc3339Nano = "2006-01-02T15:04:05.000000000Z07:00"

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// round starts a round of n produce calls.
func (j *job) round(n int) {
	j.rctx, j.rcancel = context.WithTimeout(j.ctx, j.o.cfg.DeliveryTimeout.D())
	j.pending.Store(int64(n))
}

// promise is every message's kgo promise.
func (j *job) promise(r *kgo.Record, err error) {
	if err != nil {
		reason := errReason(err)
		if errors.Is(err, context.DeadlineExceeded) && j.ctx.Err() == nil {
			reason = "delivery_timeout"
		}
		j.o.m.produceError(reason)
		j.mu.Lock()
		switch reason, drop := dropReason(err); {
		case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
			j.tooLarge = append(j.tooLarge, r)
		case drop:
			j.mu.Unlock()
			j.o.drop(reason, j.b, fmt.Errorf("topic %q: %w", r.Topic, err))
			j.mu.Lock()
		default:
			j.failed = append(j.failed, r)
			j.lastErr = err
		}
		j.mu.Unlock()
	}
	if j.pending.Add(-1) == 0 {
		j.finish()
	}
}

// finish runs once every message of a round has its answer.
func (j *job) finish() {
	j.rcancel()
	j.mu.Lock()
	again := len(j.failed) > 0 || len(j.tooLarge) > 0
	j.mu.Unlock()
	if !again {
		j.o.m.latency.Observe(time.Since(j.start).Seconds())
		j.end(nil)
		return
	}
	j.o.goRetry(j)
}

// end reports the chunk's fate and gives the job back to the pool.
func (j *job) end(err error) {
	done := j.done
	j.release()
	done(err)
}

func (j *job) release() {
	j.done, j.ctx, j.rctx, j.rcancel, j.b = nil, nil, nil, nil, pipeline.Batch{}
	j.failed, j.tooLarge, j.lastErr = j.failed[:0], j.tooLarge[:0], nil
	clear(j.recs)
	clear(j.hdrs)
	if cap(j.buf) > 4<<20 { // one huge chunk does not pin its buffer for good
		j.buf, j.recs, j.hdrs, j.spans = nil, nil, nil, nil
	}
	j.o.jobs.Put(j)
}

// retry tries the too-large messages alone, then produces the failed ones
// again after a backoff; it runs on a goroutine of its own.
func (j *job) retry() {
	o := j.o
	j.mu.Lock()
	tooLarge := j.tooLarge
	j.tooLarge = nil
	j.mu.Unlock()
	for _, r := range tooLarge {
		err := o.produceAlone(j.ctx, r)
		if err == nil {
			continue
		}
		if reason, drop := dropReason(err); drop {
			o.drop(reason, j.b, fmt.Errorf("topic %q, %d bytes: %w", r.Topic, len(r.Key)+len(r.Value), err))
			continue
		}
		j.mu.Lock()
		j.failed = append(j.failed, r)
		j.lastErr = err
		j.mu.Unlock()
	}
	j.mu.Lock()
	failed, lastErr := j.failed, j.lastErr
	j.failed = nil
	j.mu.Unlock()
	if len(failed) == 0 {
		j.o.m.latency.Observe(time.Since(j.start).Seconds())
		j.end(nil)
		return
	}
	j.attempt++
	o.set.Metrics.Retries.Inc()
	wait := j.backoff/2 + rand.N(j.backoff/2+1)
	j.backoff = min(2*j.backoff, o.cfg.RetryMax.D())
	o.rl.Warn("retry", "Kafka did not take every message of a chunk; producing them again (they wait in the buffer meanwhile)",
		zap.Int("messages", len(failed)), zap.Int("attempt", j.attempt), zap.Duration("in", wait),
		zap.Int("partition", j.b.Partition), zap.Uint64("offset", j.b.Offset), zap.Error(lastErr))
	select {
	case <-time.After(wait):
	case <-j.ctx.Done():
		j.end(j.ctx.Err())
		return
	case <-o.ctx.Done():
		j.end(ErrStopped)
		return
	}
	if o.cfg.CreateTopic.Partitions > 0 && o.fixed == "" {
		// The client does not say why it gave up; a templated topic
		// that does not exist yet is one reason, and creating it is
		// cheap when it does (TOPIC_ALREADY_EXISTS, remembered).
		seen := map[string]bool{}
		for _, r := range failed {
			if !seen[r.Topic] {
				seen[r.Topic] = true
				o.ensureTopic(j.ctx, r.Topic)
			}
		}
	}
	j.round(len(failed))
	for _, r := range failed {
		r.Context = nil // kgo keeps the context of the last Produce call here
		o.cl.Produce(j.rctx, r, j.promiseFn)
	}
}

// drop counts and logs (rate-limited) one message Kafka refuses for good.
func (o *Output) drop(reason string, b pipeline.Batch, err error) {
	o.set.Metrics.Dropped(reason, 1)
	o.rl.Warn("drop_"+reason, "message dropped: Kafka can never take it", zap.String("reason", reason),
		zap.String("tag", b.Tag), zap.Int("partition", b.Partition), zap.Uint64("offset", b.Offset), zap.Error(err))
}
