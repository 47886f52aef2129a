package tail

import (
	"math"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
)

// split marks the pieces of a message longer than max_line_bytes.
const (
	splitNo   = iota
	splitMore // a piece; the message continues in the next record
	splitLast // the last piece
)

const splitKey = "split"

var (
	streamKeyEnc = mpack.AppendString(nil, "stream")
	streamValEnc = [numStreams][]byte{nil, mpack.AppendString(nil, "stdout"), mpack.AppendString(nil, "stderr")}
	splitKeyEnc  = mpack.AppendString(nil, splitKey)
)

// record appends one [time, record] entry to the chunk. end is the file
// offset after the message; the chunk's checkpoint becomes the lesser of
// it and the start of any message still being assembled.
//
// The chunk is built in memory of the buffer's pool (broker.GetBuffer) and
// handed over with it (pipeline.Chunk.Own): the buffer keeps it for the
// outputs reading right behind its writer, which then take the entries
// from memory instead of reading them back. So the entry's size is known
// (exactly, or a bound for json) before it is appended: a chunk that it
// would take past batch.max_bytes goes out first, and the memory is never
// outgrown (an append that does, a json line beyond the bound, makes the
// chunk's memory its own: the pipeline copies it).
func (t *tailer) record(s int, content []byte, tm mpack.EventTime, split int, end int64) {
	in := t.in
	json := in.json && s == streamNone && split == splitNo
	need := t.entrySize(s, len(content), split, json)
	maxBytes := in.maxBytes
	if t.count > 0 && len(*t.chunk)+need > maxBytes {
		// batch.max_bytes is a cap: the entries before this one go out
		// first, and this one starts the next chunk.
		t.flush()
		if t.err != nil || t.failed.Load() {
			return
		}
	}
	if t.chunk == nil || cap(*t.chunk)-len(*t.chunk) < need {
		t.newChunk(max(need, maxBytes))
	}
	c := append(*t.chunk, 0x92)
	c = tm.AppendMsgpack(c)
	done := false
	if json {
		c, done = appendJSONRecord(c, content, t.extra, t.extraN)
		if !done {
			t.in.met.unparsed(content)
		}
	}
	if !done {
		n := 1 + t.extraN
		if s != streamNone {
			n++
		}
		if split != splitNo {
			n++
		}
		c = mpack.AppendMapHeader(c, n)
		c = append(c, t.in.keyEnc...)
		c = mpack.AppendStringBytes(c, content)
		if s != streamNone {
			c = append(c, streamKeyEnc...)
			c = append(c, streamValEnc[s]...)
		}
		if split != splitNo {
			c = append(c, splitKeyEnc...)
			if split == splitMore {
				c = append(c, 0xc3)
			} else {
				c = append(c, 0xc2)
			}
		}
		c = append(c, t.extra...)
	}
	*t.chunk = c
	t.count++
	t.records++
	if t.open > 0 {
		for g := range numStreams {
			if t.merge[g].active {
				end = min(end, t.merge[g].start)
			}
			if t.ml[g].active {
				end = min(end, t.ml[g].start)
			}
		}
	}
	t.chunkEnd = end
	if t.count >= in.maxEvents || len(c) >= maxBytes {
		t.flush()
	}
}

// entrySize is the size of the entry record appends for a message of n
// bytes: exact, or for json (which may expand: a number becomes 9 bytes,
// an empty array 5) a bound.
func (t *tailer) entrySize(s, n, split int, json bool) int {
	size := 1 + 10 + 1 + len(t.in.keyEnc) + strHeaderSize(n) + n + len(t.extra) // [time, {key: content, extra}]
	if s != streamNone {
		size += len(streamKeyEnc) + len(streamValEnc[s])
	}
	if split != splitNo {
		size += len(splitKeyEnc) + 1
	}
	if json {
		size = max(size, 1+10+3*n+16+len(t.extra))
	}
	return size
}

// strHeaderSize is the size of the header mpack.AppendStringBytes writes
// for n bytes.
func strHeaderSize(n int) int {
	switch {
	case n < 32:
		return 1
	case n <= math.MaxUint8:
		return 2
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

// newChunk gives the chunk being filled, which is empty, memory for at
// least n bytes of entries.
func (t *tailer) newChunk(n int) {
	if t.chunk != nil {
		t.dropChunk()
	}
	t.chunk = broker.GetBuffer(n)
	*t.chunk = (*t.chunk)[:0]
	t.chunkCap = cap(*t.chunk)
}

// flush emits the chunk. The checkpoint moves to its end once it and every
// earlier chunk of this file are durable.
func (t *tailer) flush() {
	if t.count == 0 || t.err != nil || t.failed.Load() {
		if t.count == 0 && t.chunk != nil {
			t.dropChunk()
		}
		return
	}
	t.emitChunk(t.count, t.records, t.chunkEnd)
	if t.chunk == nil {
		t.count, t.records = 0, 0 // taken, whatever happens next
	}
	if t.err != nil || t.failed.Load() {
		return
	}
	t.count, t.records = 0, 0
	if t.chunk != nil {
		// Not handed over (the pipeline copied it, or dropped it for
		// good): it is still the tailer's.
		t.dropChunk()
	}
}

// dropChunk gives the chunk's memory back to the pool.
func (t *tailer) dropChunk() {
	if cap(*t.chunk) == t.chunkCap {
		broker.PutBuffer(t.chunk)
	}
	t.chunk = nil
}
