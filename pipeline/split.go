package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
)

// A chunk larger than the buffer can store in one record (the frame must
// fit in a segment) is split at entry boundaries into pieces that fit, and
// its ack waits for every piece. Only a single event that cannot fit on its
// own is dropped: counted under reason "too_large" and logged. A tag that
// the buffer refuses (longer than it can store) drops the chunk the same
// way. The chunk is then acknowledged: the source must not resend what can
// never be stored (fluentd's in_forward likewise acks a chunk whose invalid
// events it dropped).

// emitTooLarge stores c in pieces of at most max bytes of tag+entries and
// calls ack once when all pieces are durable (or with the first error).
func (e *emitter) emitTooLarge(ctx context.Context, c Chunk, max int64, meta []byte, ack AckFunc, onStored func(broker.Pos)) error {
	limit := max - int64(len(c.Tag))
	if limit <= 0 {
		e.dropTooLarge(c.Tag, c.Count, int64(len(c.Tag)+len(c.Entries)), fmt.Errorf("tag of %d bytes", len(c.Tag)))
		ack(nil)
		return nil
	}
	j := &joinAck{ack: ack, pending: 1} // the 1 is released once every piece is issued
	var (
		start, pos int   // current piece: entries[start:pos]
		count      int   // entries in the current piece
		dropped    int   // events dropped for their size
		stored     int   // events handed to the buffer
		bytesOut   int64 // bytes handed to the buffer
	)
	flush := func(meta []byte) error {
		if count == 0 {
			return nil
		}
		piece := c.Entries[start:pos]
		j.add()
		err := e.r.buf.AppendAsyncMeta(ctx, c.Tag, meta, piece, count, func(pos broker.Pos, err error) {
			if err != nil {
				e.metrics.Error("buffer")
			} else if onStored != nil {
				onStored(pos)
			}
			j.done(err)
		})
		if err != nil {
			j.cancel()
			return err
		}
		stored += count
		bytesOut += int64(len(piece))
		count = 0
		return nil
	}
	entries := c.Entries
	for pos < len(entries) {
		n, err := mpack.SkipValue(entries[pos:])
		if err != nil {
			// Inputs hand over well-formed entries; a chunk that is not is
			// a bug upstream, and its rest can never be stored.
			n = len(entries) - pos
		}
		if int64(n) > limit {
			if err := flush(nil); err != nil {
				return err
			}
			dropped++
			e.dropTooLarge(c.Tag, 1, int64(n)+int64(len(c.Tag)), fmt.Errorf("one event of %d bytes", n))
			pos += n
			start = pos
			continue
		}
		if int64(pos-start+n) > limit {
			if err := flush(nil); err != nil {
				return err
			}
			start = pos
		}
		pos += n
		count++
	}
	if err := flush(meta); err != nil { // the source position goes with the last piece
		return err
	}
	e.metrics.RecordsOut.Add(float64(stored))
	e.metrics.BytesOut.Add(float64(bytesOut))
	e.log.Debug("chunk larger than a buffer record split into pieces",
		zap.String("tag", c.Tag), zap.Int("bytes", len(c.Entries)), zap.Int("events", c.Count),
		zap.Int("stored", stored), zap.Int("dropped", dropped))
	j.done(nil) // release the issuing hold
	return nil
}

func (e *emitter) dropTooLarge(tag string, events int, size int64, why error) {
	e.metrics.Dropped("too_large", events)
	e.r.rl.Warn("too-large:"+e.name, "dropped: larger than the buffer can store in one record (raise buffer.segment_bytes to keep such events)",
		zap.String("input", e.name), zap.String("tag", truncate(tag, 128)), zap.Int("events", events),
		zap.Int64("bytes", size), zap.Int64("max_record_bytes", e.r.buf.MaxChunkBytes()), zap.Error(why))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// joinAck calls ack once, after every piece of a split chunk is durable,
// with the first error any piece met. cancel abandons it: a piece could not
// be issued, Emit returns that error, and ack must not be called.
type joinAck struct {
	mu        sync.Mutex
	ack       AckFunc
	pending   int
	err       error
	cancelled bool
}

func (j *joinAck) add() {
	j.mu.Lock()
	j.pending++
	j.mu.Unlock()
}

func (j *joinAck) done(err error) {
	j.mu.Lock()
	if err != nil && j.err == nil {
		j.err = err
	}
	j.pending--
	fire := j.pending == 0 && !j.cancelled
	err = j.err
	j.mu.Unlock()
	if fire {
		j.ack(err)
	}
}

func (j *joinAck) cancel() {
	j.mu.Lock()
	j.cancelled = true
	j.mu.Unlock()
}

// isTooLarge reports whether the buffer refused a chunk for its size.
func isTooLarge(err error) bool { return errors.Is(err, broker.ErrTooLarge) }
