package broker

import (
	"context"
	"fmt"
	"math"
)

// Pos is where a record was stored.
type Pos struct {
	Partition int
	Offset    uint64
}

// Record is one chunk read back from the log.
type Record struct {
	Partition int
	Offset    uint64
	// Epoch names the buffer incarnation and the open in which the record
	// was written (see "Epochs" in doc.go): a record at a reused offset
	// has a different epoch, so (Epoch, Partition, Offset) never names two
	// different contents.
	Epoch   uint64
	Tag     string
	Count   int    // number of events in Entries
	Entries []byte // msgpack [time, record] arrays concatenated; owned by the caller (see Release)
	// Meta is what the appender stored beside the entries (AppendAsyncMeta),
	// or nil: an input's source position, kept in the same durable record
	// as the data it covers.
	Meta []byte

	buf *[]byte // the pooled memory of Entries and Meta (Release), or nil
}

// MaxChunkBytes returns the largest tag+entries size Append accepts: a
// frame must fit in one segment.
func (b *Broker) MaxChunkBytes() int64 { return b.segMax - segHeaderSize - frameHeaderSize }

// admit validates a chunk, reserves its space and queues it for the
// writer. done != nil makes it an AppendAsync request.
func (b *Broker) admit(ctx context.Context, tag string, meta, entries []byte, count int, own *[]byte, done func(Pos, error)) (*appendReq, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if len(tag) > maxTagLen {
		return nil, fmt.Errorf("%w: tag of %d bytes (max %d)", ErrTooLarge, len(tag), maxTagLen)
	}
	if count < 0 || count > math.MaxUint32 {
		return nil, fmt.Errorf("broker: bad event count %d", count)
	}
	if len(meta) > MaxMetaBytes {
		return nil, fmt.Errorf("%w: meta of %d bytes (max %d)", ErrTooLarge, len(meta), MaxMetaBytes)
	}
	extra := 0
	if meta != nil {
		extra = 2 + len(meta)
	}
	if n := int64(len(tag) + extra + len(entries)); n > b.MaxChunkBytes() {
		return nil, fmt.Errorf("%w: %d bytes (max %d with this segment size)", ErrTooLarge, n, b.MaxChunkBytes())
	}
	frame := int64(frameHeaderSize + len(tag) + extra + len(entries))
	if err := b.reserve(ctx, frame); err != nil {
		return nil, err
	}
	p := b.parts[partitionFor(tag, b.nWrite)]
	r := reqPool.Get().(*appendReq)
	r.ctx, r.tag, r.meta, r.entries, r.count, r.frame = ctx, tag, meta, entries, uint32(count), frame
	r.done, r.async, r.own = done, done != nil, own
	if !p.enqueue(r) {
		b.unreserve(frame)
		r.reset()
		reqPool.Put(r)
		return nil, ErrClosed
	}
	return r, nil
}

func (r *appendReq) reset() {
	r.ctx, r.tag, r.meta, r.entries, r.done, r.async, r.own = nil, "", nil, nil, nil, false, nil
}

// Append stores one chunk in partition PartitionFor(tag) and returns once it
// is durable per the sync mode: then, and only then, the chunk may be
// acknowledged to its sender. Safe for many goroutines; appends to one
// partition are stored in call order of their admission. Under Block it
// waits while the buffer (or the filesystem) is full, until space frees or
// ctx is done. entries is only read, and not retained after Append returns.
//
// An error means the chunk must not be acknowledged. ErrTooLarge is
// permanent; ErrClosed, ctx errors and I/O errors are retryable. A chunk
// whose Append was cancelled after it was written may still be stored (and
// delivered): at least once, never lost.
func (b *Broker) Append(ctx context.Context, tag string, entries []byte, count int) (Pos, error) {
	r, err := b.admit(ctx, tag, nil, entries, count, nil, nil)
	if err != nil {
		return Pos{}, err
	}
	select {
	case res := <-r.ch:
		r.reset()
		reqPool.Put(r)
		return res.pos, res.err
	case <-ctx.Done():
		// The writer or the syncer will still send on r.ch (capacity 1):
		// r is abandoned, not reused.
		return Pos{}, ctx.Err()
	}
}

// AppendAsync is Append that returns as soon as the chunk is written (or
// failed). If it returns nil, done is called exactly once: with err == nil
// when the chunk is durable per the sync mode (it may then be
// acknowledged), or with an error when it can never be. If it returns an
// error, done is never called and nothing was stored. done may run before
// AppendAsync returns; it runs on the partition's sync goroutine (under
// SyncNone: on the goroutine that wrote the chunk, the caller's own when
// no other append was being written, with the partition's write lock
// held) and must not block for long, nor call Append, AppendAsync or Close
// (see Locks in doc.go).
// AppendAsync still blocks for backpressure. entries is not retained after
// AppendAsync returns.
func (b *Broker) AppendAsync(ctx context.Context, tag string, entries []byte, count int, done func(Pos, error)) error {
	return b.AppendAsyncMeta(ctx, tag, nil, entries, count, done)
}

// AppendAsyncMeta is AppendAsync that stores meta (at most MaxMetaBytes;
// nil for none) in the same record: readers get it as Record.Meta. An input
// keeps its source position there, so that the position is durable exactly
// when the data it covers is (see Scan). meta is not retained.
func (b *Broker) AppendAsyncMeta(ctx context.Context, tag string, meta, entries []byte, count int, done func(Pos, error)) error {
	return b.AppendAsyncOwned(ctx, tag, meta, entries, count, nil, done)
}

// AppendAsyncOwned is AppendAsyncMeta for entries that lie in memory of the
// broker's pool (GetBuffer), own, which the appender hands over with them:
// once it returns nil, own belongs to the broker (the appender must not use
// it, nor entries, any more), which keeps it for the cursors reading right
// behind the writer instead of their reading the record back from the
// segment (WithTailCache), and gives it back to the pool once read. If it
// returns an error, own is still the appender's. own may be nil.
func (b *Broker) AppendAsyncOwned(ctx context.Context, tag string, meta, entries []byte, count int, own *[]byte, done func(Pos, error)) error {
	if done == nil {
		return fmt.Errorf("broker: AppendAsync needs a done func")
	}
	r, err := b.admit(ctx, tag, meta, entries, count, own, done)
	if err != nil {
		return err
	}
	res := <-r.ch // the writer answers promptly (it checks ctx itself), or r was written inline
	r.reset()
	reqPool.Put(r)
	return res.err
}
