package tail

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/pipeline"
)

// pendingChunk is an emitted chunk waiting for its acknowledgement.
type pendingChunk struct {
	end    int64
	tail   tailSum // of the bytes before end
	fp     fingerprint
	gen    uint64
	origin uint64
	count  int
	done   bool
}

// emitChunk hands the chunk being filled, count entries, records of them
// new (not pieces of a message counted before), to the pipeline; end is
// the checkpoint once they are durable. Its memory goes with it (Own):
// t.chunk is nil on return if the pipeline took it, else still the
// tailer's (to reuse, or reset if t.err or the failed flag is set: the
// stop, or a chunk to read again).
func (t *tailer) emitChunk(count, records int, end int64) {
	p := &pendingChunk{end: end, count: count, tail: t.tailAt(end), origin: t.origin}
	t.mu.Lock()
	p.gen, p.fp = t.gen, t.fp
	t.pending = append(t.pending, p)
	t.outstanding++
	t.mu.Unlock()
	t.in.inflightAdd()
	c := pipeline.Chunk{Tag: t.tag, Entries: *t.chunk, Count: count}
	if cap(*t.chunk) == t.chunkCap {
		c.Own = t.chunk // else an append outgrew it: not the pool's memory
	}
	if t.in.pos != nil && !t.srcOff {
		// The checkpoint this chunk makes, stored with it (source.go);
		// the pipeline copies it before Emit returns.
		t.srcBuf = appendSource(t.srcBuf[:0], &source{
			seq: t.in.seq.Add(1), origin: t.origin, originOff: t.originOff, key: t.key, fp: p.fp,
			start: t.srcStart, end: end, tail: p.tail, count: count, path: t.path,
		})
		c.Source = t.srcBuf
	}
	err := t.in.emit.Emit(t.in.ctx, c, func(err error) { t.acked(p, err) })
	if err == nil {
		t.chunk = nil // the pipeline's now (or garbage, if not pooled)
	}
	if err != nil && permanent(err) && t.in.ctx.Err() == nil {
		// Never storable: dropped on purpose, counted, and passed like a
		// stored chunk so that the file is not read again forever. The
		// next chunk's source starts where this one did: its lines are
		// accounted for.
		t.acked(p, err)
		err = nil
	} else if err == nil {
		t.srcStart = end
	}
	if err != nil {
		// The chunk was not taken and no ack comes.
		t.mu.Lock()
		for i := len(t.pending) - 1; i >= 0; i-- {
			if t.pending[i] == p {
				t.pending = append(t.pending[:i], t.pending[i+1:]...)
				break
			}
		}
		t.outstanding--
		if t.in.ctx.Err() == nil {
			// Not stopping: read it again later, like a chunk not stored.
			t.failed.Store(true)
		}
		t.mu.Unlock()
		t.in.inflightDone()
		if t.in.ctx.Err() != nil {
			t.err = err
			return
		}
		t.in.set.Metrics.Error("emit")
		t.in.warnOnce("emit:"+t.path, "emit failed; reading the lines again later", zap.String("path", t.path), zap.Error(err))
		return
	}
	t.m.lines.Add(float64(records))
}

// tailAt hashes the bytes of the file before end, from the read buffer
// when it holds them, else with a small read.
func (t *tailer) tailAt(end int64) tailSum {
	if t.buf != nil && end <= t.readOff {
		if start := t.readOff - int64(t.hi); end-min(end, tailBytes) >= start {
			return tailSumOf(t.buf[:end-start])
		}
	}
	ts, _ := readTail(t.f, end)
	return ts
}

// permanent reports whether an Emit or ack error says the chunk can never
// be stored, so that reading it again would loop forever.
func permanent(err error) bool {
	return pipeline.IsPermanent(err) || errors.Is(err, broker.ErrTooLarge)
}

// acked runs on the buffer's goroutine: it must not block. A permanent
// error drops the chunk's events on purpose (counted, logged) and moves
// the checkpoint past them like a success; any other error makes the file
// be read again from its checkpoint.
func (t *tailer) acked(p *pendingChunk, err error) {
	drop := err != nil && permanent(err)
	t.mu.Lock()
	current := p.gen == t.gen
	if current {
		if err != nil && !drop {
			t.failed.Store(true)
		} else {
			p.done = true
			var last *pendingChunk
			for len(t.pending) > 0 && t.pending[0].done {
				last = t.pending[0]
				t.pending = t.pending[1:]
			}
			if last != nil && last.end > t.committed {
				t.committed, t.commitTail = last.end, last.tail
				t.in.store.set(t.key, t.path, last.fp, last.end, last.tail, last.origin)
			}
		}
	}
	t.outstanding--
	poke := t.outstanding == 0 || err != nil
	t.mu.Unlock()
	switch {
	case drop && current:
		t.in.set.Metrics.Dropped(dropReason, p.count)
		t.in.set.Metrics.Error("chunk_not_storable")
		t.in.rl.Warn("drop:"+t.path, "chunk can never be stored; its events are dropped and the file goes on past them",
			zap.String("path", t.path), zap.Int("events", p.count), zap.Int64("checkpoint", p.end), zap.Error(err))
	case err != nil && !drop:
		t.in.set.Metrics.Error("chunk_not_stored")
	}
	t.in.inflightDone()
	if poke {
		t.poke()
	}
}

// dropReason labels dropped_records_total for events of a chunk the
// pipeline refused for good.
const dropReason = "permanent_error"

// disownLocked starts a new content generation: the chunks in flight are
// disowned (their acks are ignored) and the file is no longer marked
// failed. t.mu is held.
func (t *tailer) disownLocked() {
	t.gen++
	t.pending = nil
	t.failed.Store(false)
}

// rewind goes back to the last committed offset after a chunk was not
// stored; chunks still in flight are disowned (their acks are ignored).
func (t *tailer) rewind() {
	t.mu.Lock()
	t.disownLocked()
	off, tail := t.committed, t.commitTail
	t.mu.Unlock()
	t.reset()
	t.readOff, t.readTail = off, tail
	// The chain goes on from what is durable: sources of the disowned
	// chunks start past it and are ignored at recovery if they are all
	// that is left of them.
	t.srcStart = off
	t.in.met.rewinds.Inc()
	t.backoff = min(max(2*t.backoff, 50*time.Millisecond), 5*time.Second)
}

// inflightAdd counts a chunk about to be emitted; waitAcks waits for it.
func (in *Input) inflightAdd() {
	in.ackMu.Lock()
	in.inflight++
	in.ackMu.Unlock()
}

// inflightDone counts a chunk acknowledged (or not taken after all).
func (in *Input) inflightDone() {
	in.ackMu.Lock()
	in.inflight--
	if in.inflight == 0 && in.drained != nil {
		close(in.drained)
		in.drained = nil
	}
	in.ackMu.Unlock()
}

// waitAcks waits, at Stop, until every chunk emitted was acknowledged or
// ctx is done.
func (in *Input) waitAcks(ctx context.Context) error {
	in.ackMu.Lock()
	if in.inflight == 0 {
		in.ackMu.Unlock()
		return nil
	}
	if in.drained == nil {
		in.drained = make(chan struct{})
	}
	ch := in.drained
	n := in.inflight
	in.ackMu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tail: %d chunks not acknowledged at stop; their lines are read again after a restart: %w", n, ctx.Err())
	}
}
