package tail

import (
	"bytes"
	"errors"
	"io"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
)

// readToEOF reads blocks until the end of the file (or a fairness budget),
// turning lines into records and emitting full chunks.
func (t *tailer) readToEOF() {
	select {
	case t.in.slots <- struct{}{}:
	case <-t.in.ctx.Done():
		return
	}
	bp := t.in.bufs.Get().(*[]byte)
	t.buf = *bp
	t.lo, t.hi = 0, copy(t.buf, t.carry)
	t.carry = t.carry[:0]
	budget := 8 * len(t.buf)
	for t.err == nil && !t.failed.Load() && budget > 0 {
		if t.lo > 0 && len(t.buf)-t.hi < len(t.buf)/2 {
			// Move the unfinished line down so that the next read is a
			// large one. scanLines leaves at most max_line_bytes
			// unconsumed, and the buffer is larger than that.
			t.hi = copy(t.buf, t.buf[t.lo:t.hi])
			t.lo = 0
		}
		n, err := t.f.ReadAt(t.buf[t.hi:], t.readOff)
		if n > 0 && !t.sameContent() {
			// Truncated (and maybe written again) under us: this block
			// may be new content at an old offset. Drop it; the loop
			// finds the truncation.
			break
		}
		if n > 0 {
			t.readOff += int64(n)
			t.hi += n
			t.readTail = tailSumOf(t.buf[:t.hi])
			budget -= n
			t.readTime = pipeline.Now()
			t.m.bytes.Add(float64(n))
			t.scanLines()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.in.set.Metrics.Error("read")
				t.in.warnOnce("read:"+t.path, "read failed", zap.String("path", t.path), zap.Error(err))
				t.readErr = true
			}
			break
		}
	}
	t.carry = append(t.carry[:0], t.buf[t.lo:t.hi]...)
	switch {
	case len(t.carry) == 0:
		t.carry = trim(t.carry)
		t.carrySince = time.Time{}
	case t.carrySince.IsZero():
		t.carrySince = time.Now()
	}
	t.lo, t.hi = 0, 0
	*bp = t.buf
	t.buf = nil
	t.in.bufs.Put(bp)
	<-t.in.slots
	t.flush()
}

// scanLines consumes the complete lines in buf[lo:hi]. A line longer than
// max_line_bytes is cut into pieces as soon as a piece is available.
func (t *tailer) scanLines() {
	maxLine := t.in.maxLine
	for t.err == nil && !t.failed.Load() {
		data := t.buf[t.lo:t.hi]
		start := t.readOff - int64(len(data))
		i := bytes.IndexByte(data, '\n')
		if i < 0 && len(data) <= maxLine {
			return
		}
		if i < 0 || i > maxLine {
			n := cutPoint(data, maxLine)
			t.lo += n
			t.splitting = true
			t.message(streamNone, data[:n], t.readTime, start, start+int64(n), splitMore)
			continue
		}
		t.lo += i + 1
		if t.splitting {
			t.splitting = false
			t.message(streamNone, data[:i], t.readTime, start, start+int64(i)+1, splitLast)
			continue
		}
		t.line(data[:i], start, start+int64(i)+1)
	}
}

// cutPoint is where to cut b to at most n bytes without splitting a UTF-8
// sequence.
func cutPoint(b []byte, n int) int {
	for k := n; k > n-utf8.UTFMax && k > 0; k-- {
		if utf8.RuneStart(b[k]) {
			return k
		}
	}
	return n
}

// record appends one [time, record] entry to the chunk. end is the file
// offset after the message; the chunk's checkpoint becomes the lesser of
// it and the start of any message still being assembled.
func (t *tailer) record(s int, content []byte, tm pipeline.EventTime, split int, end int64) {
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
		c = pipeline.AppendMapHeader(c, n)
		c = append(c, t.in.keyEnc...)
		c = pipeline.AppendStringBytes(c, content)
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

// flushDue emits what waited too long: a partial last line, a partial
// cri/docker message, a multiline group. all emits them regardless (the
// file is being closed).
func (t *tailer) flushDue(now time.Time, all bool) {
	pto := t.in.cfg.PartialFlushTimeout.D()
	if len(t.carry) > 0 && (all || pto > 0 && now.Sub(t.carrySince) >= pto) {
		t.readTime = pipeline.Now()
		start := t.readOff - int64(len(t.carry))
		line := t.carry
		if t.splitting {
			t.splitting = false
			t.message(streamNone, line, t.readTime, start, t.readOff, splitLast)
		} else {
			t.line(line, start, t.readOff)
		}
		t.carry = t.carry[:0]
		t.carrySince = time.Time{}
	}
	for s := range numStreams {
		if g := &t.merge[s]; g.active && (all || pto > 0 && now.Sub(g.last) >= pto) {
			t.finishMerge(s)
		}
	}
	mto := t.in.cfg.Multiline.FlushTimeout.D()
	for s := range numStreams {
		if g := &t.ml[s]; g.active && (all || now.Sub(g.last) >= mto) {
			t.flushML(s)
		}
	}
}

// reset drops everything read but not emitted.
func (t *tailer) reset() {
	t.lo, t.hi = 0, 0
	t.carry = t.carry[:0]
	t.carrySince = time.Time{}
	t.splitting = false
	for s := range numStreams {
		t.merge[s].active = false
		t.ml[s].active = false
	}
	t.open = 0
	if t.chunk != nil {
		*t.chunk = (*t.chunk)[:0]
	}
	t.count = 0
	t.records = 0
}

// trim lets go of a buffer that grew for one large message, so that idle
// files do not keep it.
func trim(b []byte) []byte {
	if cap(b) > 16<<10 {
		return nil
	}
	return b[:0]
}
