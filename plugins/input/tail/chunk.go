package tail

import "github.com/logship/logship/internal/mpack"

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
func (t *tailer) record(s int, content []byte, tm mpack.EventTime, split int, end int64) {
	if t.chunk == nil {
		t.chunk = t.in.chunks.Get().(*[]byte)
	}
	prevLen, prevEnd := len(*t.chunk), t.chunkEnd
	c := append(*t.chunk, 0x92)
	c = tm.AppendMsgpack(c)
	done := false
	if t.in.cfg.Format == FormatJSON && s == streamNone && split == splitNo {
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
	if prevLen > 0 && len(c) > int(t.in.cfg.Batch.MaxBytes) {
		// batch.max_bytes is a cap: the entries before this one go out
		// first, and this one starts the next chunk.
		t.emitChunk(c[:prevLen], t.count, t.records, prevEnd)
		if t.err != nil || t.failed.Load() {
			return
		}
		c = c[:copy(c, c[prevLen:])]
		*t.chunk = c
		t.count, t.records = 0, 0
	}
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
	if t.count >= t.in.cfg.Batch.MaxEvents || len(c) >= int(t.in.cfg.Batch.MaxBytes) {
		t.flush()
	}
}

// flush emits the chunk. The checkpoint moves to its end once it and every
// earlier chunk of this file are durable.
func (t *tailer) flush() {
	if t.count == 0 || t.err != nil || t.failed.Load() {
		if t.count == 0 && t.chunk != nil {
			t.in.chunks.Put(t.chunk)
			t.chunk = nil
		}
		return
	}
	t.emitChunk(*t.chunk, t.count, t.records, t.chunkEnd)
	if t.err != nil || t.failed.Load() {
		return
	}
	*t.chunk = (*t.chunk)[:0]
	t.count, t.records = 0, 0
	t.in.chunks.Put(t.chunk)
	t.chunk = nil
}
