package tail

import (
	"bytes"
	"errors"
	"io"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
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
			t.readTime = mpack.Now()
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

// flushDue emits what waited too long: a partial last line, a partial
// cri/docker message, a multiline group. all emits them regardless (the
// file is being closed).
func (t *tailer) flushDue(now time.Time, all bool) {
	pto := t.in.cfg.PartialFlushTimeout.D()
	if len(t.carry) > 0 && (all || pto > 0 && now.Sub(t.carrySince) >= pto) {
		t.readTime = mpack.Now()
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
