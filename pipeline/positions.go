package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/logship/logship/broker"
)

// Positions lets an input keep its source position (a file's identity and
// offset, a journald cursor, a Kafka offset) in the same durable buffer
// record as the events it covers (Chunk.Source), and find it again at its
// next start, so that a process kill makes it read nothing twice: the
// position is durable exactly when the data is (Kafka Connect's
// exactly-once sources store their offsets with the data for the same
// reason). The Emitter the pipeline gives an input implements it.
//
// The input's own checkpoint file becomes a hint that lags: with every
// save it stores Floor (taken before the positions it saves), and at the
// next start it passes that to Sources, which returns every position stored
// after it. Every chunk whose ack had not reached the input when the
// checkpoint was saved is at or after the floor, so the newest position
// per source (its checkpoint, then the Sources in order) is exact.
type Positions interface {
	// Floor returns, per buffer partition, an offset at or below the
	// record of every chunk with a Source this input emitted whose ack
	// has not returned yet, and of every chunk it will emit.
	Floor() []uint64
	// Sources calls fn with the Source of every durable record this input
	// (by its component name) stored at or after from[p] in partition p,
	// in offset order per partition; partitions beyond len(from) are
	// scanned from their oldest record. An error of fn stops it.
	Sources(ctx context.Context, from []uint64, fn func(partition int, offset uint64, source []byte) error) error
}

var _ Positions = (*emitter)(nil)

// maxSourceBytes bounds Chunk.Source: the record's meta also holds the
// input's name.
const maxSourceBytes = 1024

// encodeSource builds a record's meta: uvarint name length | name | source.
func encodeSource(dst []byte, name string, src []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	dst = append(dst, name...)
	return append(dst, src...)
}

// decodeSource returns the source in meta if the record is name's.
func decodeSource(meta []byte, name string) ([]byte, bool) {
	n, k := binary.Uvarint(meta)
	if k <= 0 || n != uint64(len(name)) || len(meta)-k < len(name) || string(meta[k:k+len(name)]) != name {
		return nil, false
	}
	return meta[k+len(name):], true
}

// metaPool holds the buffers records' meta is built in (the buffer does
// not keep it).
var metaPool = sync.Pool{New: func() any { b := make([]byte, 0, 64); return &b }}

// sourceAck passes a chunk's ack to the input, then releases its floor:
// once the input has its ack, it has the position too.
type sourceAck struct {
	e     *emitter
	inner AckFunc
	p     int
	floor uint64
}

func (s *sourceAck) ack(err error) {
	s.inner(err)
	s.e.pending.remove(s.p, s.floor)
}

// pendingFloors tracks, per partition, the offsets that were next when
// each chunk with a Source still awaiting its ack was emitted.
type pendingFloors struct {
	mu sync.Mutex
	m  map[int]map[uint64]int // partition -> floor -> chunks
}

func (p *pendingFloors) add(partition int, floor uint64) {
	p.mu.Lock()
	if p.m == nil {
		p.m = map[int]map[uint64]int{}
	}
	f := p.m[partition]
	if f == nil {
		f = map[uint64]int{}
		p.m[partition] = f
	}
	f[floor]++
	p.mu.Unlock()
}

func (p *pendingFloors) remove(partition int, floor uint64) {
	p.mu.Lock()
	f := p.m[partition]
	if f[floor]--; f[floor] <= 0 {
		delete(f, floor)
	}
	p.mu.Unlock()
}

// Floor implements Positions.
func (e *emitter) Floor() []uint64 {
	buf := e.r.buf
	out := make([]uint64, buf.Partitions())
	e.pending.mu.Lock()
	defer e.pending.mu.Unlock()
	for p := range out {
		// A chunk not pending now is either acked (the input has its
		// position) or not appended yet (its records go at or after the
		// next offset).
		out[p] = buf.NextOffset(p)
		for f := range e.pending.m[p] {
			out[p] = min(out[p], f)
		}
	}
	return out
}

// Sources implements Positions.
func (e *emitter) Sources(ctx context.Context, from []uint64, fn func(partition int, offset uint64, source []byte) error) error {
	buf := e.r.buf
	for p := 0; p < buf.Partitions(); p++ {
		var start uint64
		if p < len(from) {
			start = from[p]
		}
		err := buf.Scan(ctx, p, start, func(r broker.Record) error {
			if r.Meta == nil {
				return nil
			}
			src, ok := decodeSource(r.Meta, e.name)
			if !ok {
				return nil
			}
			return fn(p, r.Offset, src)
		})
		if err != nil {
			return fmt.Errorf("positions of %s in partition %d: %w", e.name, p, err)
		}
	}
	return nil
}
