package tail

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
)

// Streams: records of none and json files have no stream; cri and docker
// records say stdout or stderr. Partial messages are merged per stream.
const (
	streamNone = iota
	streamStdout
	streamStderr
	numStreams
)

// split marks the pieces of a message longer than max_line_bytes.
const (
	splitNo   = iota
	splitMore // a piece; the message continues in the next record
	splitLast // the last piece
)

const splitKey = "split"

var (
	streamKeyEnc = pipeline.AppendString(nil, "stream")
	streamValEnc = [numStreams][]byte{nil, pipeline.AppendString(nil, "stdout"), pipeline.AppendString(nil, "stderr")}
	splitKeyEnc  = pipeline.AppendString(nil, splitKey)
)

// tailer follows one file (one device and inode) on its own goroutine.
type tailer struct {
	in   *Input
	f    *os.File
	key  fileKey
	path string // the name it was found under: tag, path_key, metrics
	real string // the resolved name, for inotify events
	tag  string
	wake chan struct{}
	m    fileMetrics

	// Owned by the tailer's goroutine.
	readOff    int64   // next offset to read; buf[lo:hi] (or carry) ends here
	readTail   tailSum // of the bytes just before readOff, as they were read
	buf        []byte
	lo, hi     int
	carry      []byte    // unconsumed bytes (a partial line) between reads
	carrySince time.Time // when the partial line was first seen
	splitting  bool      // pieces of an over-long line were emitted
	lastSize   int64
	lastEOF    time.Time
	readTime   pipeline.EventTime
	chunk      *[]byte
	count      int
	chunkEnd   int64 // checkpoint offset once the chunk is durable
	records    int
	merge      [numStreams]group // cri/docker partial messages
	ml         [numStreams]group // multiline groups
	open       int               // active groups
	scratch    []byte
	extra      []byte // pre-encoded extra pairs (path_key)
	extraN     int
	err        error // set when the input stops mid-emit
	readErr    bool  // the last read failed (not at the end of the file)
	backoff    time.Duration
	timer      *time.Timer
	failedFlag atomic.Bool

	mu          sync.Mutex
	fp          fingerprint
	gen         uint64
	pending     []*pendingChunk
	committed   int64
	commitTail  tailSum // of the bytes before committed
	failed      bool
	outstanding int
	gone        bool
	deleted     bool
	goneAt      time.Time
	copyOf      *tailer // set at creation; cleared by the tailer's goroutine
	parkUntil   time.Time
	copySize    int64 // a possible copy's size when found: what it holds of the original
	retired     bool
}

// group is a message being assembled from several lines.
type group struct {
	active bool
	start  int64 // file offset of its first line
	end    int64 // file offset after its last line
	time   pipeline.EventTime
	buf    []byte
	pieces bool // pieces of it were emitted already (it is being split)
	last   time.Time
}

func newTailer(in *Input, f *os.File, k fileKey, m openMode, fp fingerprint, size int64) *tailer {
	t := &tailer{
		in:         in,
		f:          f,
		key:        k,
		path:       m.path,
		real:       absReal(f.Name()),
		tag:        m.tag,
		wake:       make(chan struct{}, 1),
		readOff:    m.start,
		fp:         fp,
		committed:  m.start,
		readTail:   m.tail,
		commitTail: m.tail,
		copyOf:     m.copyOf,
		gone:       m.gone,
	}
	if m.gone {
		t.goneAt = time.Now()
	}
	if m.copyOf != nil {
		t.parkUntil = time.Now().Add(max(3*in.cfg.RefreshInterval.D(), time.Second))
		t.copySize = size
	}
	if in.pathKeyEnc != nil {
		t.extra = pipeline.AppendString(append([]byte(nil), in.pathKeyEnc...), t.path)
		t.extraN = 1
	}
	t.timer = time.NewTimer(time.Hour)
	t.timer.Stop()
	return t
}

func (t *tailer) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// run reads the file until the input stops or the file is retired.
func (t *tailer) run() {
	defer t.in.wg.Done()
	defer t.timer.Stop()
	ctx := t.in.ctx
	for ctx.Err() == nil {
		now := time.Now()
		if t.copyOf != nil && !t.resolveCopy(now) {
			t.waitFor(max(time.Until(t.parkUntil), 0))
			continue
		}
		if t.failedFlag.Load() {
			t.rewind()
			t.sleep(t.backoff)
			continue
		}
		fi, err := t.f.Stat()
		if err != nil {
			t.in.set.Metrics.Error("stat")
			t.in.warnOnce("stat:"+t.path, "cannot stat open file", zap.String("path", t.path), zap.Error(err))
			t.waitFor(-1)
			continue
		}
		size := fi.Size()
		if linksOf(fi) == 0 {
			t.mu.Lock()
			if !t.deleted {
				t.deleted = true
				if !t.gone {
					t.gone, t.goneAt = true, now
				}
				t.in.met.rotation(t.in.set.Name, "deleted")
			}
			t.mu.Unlock()
		}
		if t.checkTruncated(size) {
			continue
		}
		t.lastSize = size
		t.m.lag.Set(float64(size - t.readOff))
		t.mu.Lock()
		gone, goneAt := t.gone, t.goneAt
		t.mu.Unlock()
		if size > t.readOff {
			if wait := t.lastEOF.Add(t.in.cfg.Batch.FlushInterval.D()).Sub(now); wait > 0 && !gone {
				t.sleep(wait)
			}
			t.readToEOF()
			if t.readErr {
				// An I/O error: try again later rather than spin.
				t.readErr = false
				t.waitFor(t.in.cfg.RefreshInterval.D())
			}
			continue
		}
		// At the end of the file.
		t.lastEOF = now
		t.flushDue(now, false)
		t.flush()
		if t.err != nil {
			return
		}
		if !t.failedFlag.Load() {
			t.backoff = 0
		}
		if gone && now.Sub(goneAt) >= t.in.cfg.RotateWait.D() {
			if t.retire() {
				return
			}
			continue
		}
		if t.idleClose(fi, now) {
			return
		}
		t.waitFor(t.nextDeadline(now))
	}
}

func (t *tailer) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t.timer.Reset(d)
	select {
	case <-t.timer.C:
	case <-t.in.ctx.Done():
	}
	t.timer.Stop()
}

// waitFor waits for a wake-up, d (d < 0: no deadline) or the stop.
func (t *tailer) waitFor(d time.Duration) {
	var tc <-chan time.Time
	if d >= 0 {
		t.timer.Reset(max(d, time.Millisecond))
		tc = t.timer.C
	}
	select {
	case <-t.wake:
	case <-tc:
	case <-t.in.ctx.Done():
	}
	t.timer.Stop()
}

// nextDeadline is when something is due without new data: a partial line
// or message to flush, a multiline group to close, the end of
// rotate_wait. -1 means nothing is.
func (t *tailer) nextDeadline(now time.Time) time.Duration {
	d := time.Duration(-1)
	at := func(when time.Time) {
		if w := when.Sub(now); d < 0 || w < d {
			d = max(w, 0)
		}
	}
	if pto := t.in.cfg.PartialFlushTimeout.D(); pto > 0 {
		if len(t.carry) > 0 {
			at(t.carrySince.Add(pto))
		}
		for s := range t.merge {
			if t.merge[s].active {
				at(t.merge[s].last.Add(pto))
			}
		}
	}
	for s := range t.ml {
		if t.ml[s].active {
			at(t.ml[s].last.Add(t.in.cfg.Multiline.FlushTimeout.D()))
		}
	}
	t.mu.Lock()
	if t.gone {
		at(t.goneAt.Add(t.in.cfg.RotateWait.D()))
	}
	t.mu.Unlock()
	return d
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
	for t.err == nil && !t.failedFlag.Load() && budget > 0 {
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
	for t.err == nil && !t.failedFlag.Load() {
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

// line handles one complete line spanning [start, end) in the file.
func (t *tailer) line(b []byte, start, end int64) {
	switch t.in.cfg.Format {
	case FormatCRI:
		tm, stream, partial, content, ok := parseCRI(b)
		if !ok {
			t.in.met.invalid.Inc()
			t.message(streamNone, b, t.readTime, start, end, splitNo)
			return
		}
		t.part(stream, content, tm, partial, start, end)
	case FormatDocker:
		d, ok := parseDocker(b)
		if !ok {
			t.in.met.unparsed(b)
			t.message(streamNone, b, t.readTime, start, end, splitNo)
			return
		}
		content := d.log
		if d.logEsc {
			t.scratch, ok = appendUnescaped(t.scratch[:0], d.log)
			if !ok {
				t.in.met.invalid.Inc()
				t.message(streamNone, b, t.readTime, start, end, splitNo)
				return
			}
			content = t.scratch
		}
		partial := true
		if n := len(content); n > 0 && content[n-1] == '\n' {
			content, partial = content[:n-1], false
		}
		stream := streamStdout
		if string(d.stream) == "stderr" {
			stream = streamStderr
		}
		tm, ok := parseRFC3339(d.time)
		if !ok {
			tm = t.readTime
		}
		t.part(stream, content, tm, partial, start, end)
		t.scratch = trim(t.scratch)
	default:
		t.message(streamNone, b, t.readTime, start, end, splitNo)
	}
}

// parseCRI reads "TIME STREAM P|F CONTENT" (containerd, CRI-O).
func parseCRI(b []byte) (tm pipeline.EventTime, stream int, partial bool, content []byte, ok bool) {
	sp := bytes.IndexByte(b, ' ')
	if sp < 0 {
		return
	}
	tm, ok = parseRFC3339(b[:sp])
	if !ok {
		return
	}
	rest := b[sp+1:]
	switch {
	case bytes.HasPrefix(rest, []byte("stdout ")):
		stream = streamStdout
	case bytes.HasPrefix(rest, []byte("stderr ")):
		stream = streamStderr
	default:
		return tm, 0, false, nil, false
	}
	rest = rest[7:]
	tag := rest
	if sp := bytes.IndexByte(rest, ' '); sp >= 0 {
		tag, content = rest[:sp], rest[sp+1:]
	} else {
		content = rest[len(rest):]
	}
	if len(tag) == 0 || tag[0] != 'P' && tag[0] != 'F' || len(tag) > 1 && tag[1] != ':' {
		return tm, 0, false, nil, false
	}
	return tm, stream, tag[0] == 'P', content, true
}

// part adds one part of a cri/docker message: partial parts are merged
// until the final part of the same stream.
func (t *tailer) part(s int, content []byte, tm pipeline.EventTime, partial bool, start, end int64) {
	g := &t.merge[s]
	if !g.active {
		if !partial {
			t.message(s, content, tm, start, end, splitNo)
			return
		}
		g.active, g.start, g.time, g.buf, g.pieces = true, start, tm, g.buf[:0], false
		t.open++
	}
	g.last = time.Now()
	g.end = end
	maxLine := t.in.maxLine
	for len(g.buf)+len(content) > maxLine {
		room := maxLine - len(g.buf)
		n := room
		if room > 0 {
			n = cutPoint(content, room)
		}
		g.buf = append(g.buf, content[:n]...)
		content = content[n:]
		// The piece goes out; the rest of the message continues in the
		// current line, so the checkpoint may not pass its start.
		g.start = start
		t.message(s, g.buf, g.time, start, end, splitMore)
		g.buf, g.pieces = g.buf[:0], true
	}
	g.buf = append(g.buf, content...)
	if !partial {
		t.finishMerge(s)
	}
}

func (t *tailer) finishMerge(s int) {
	g := &t.merge[s]
	if !g.active {
		return
	}
	g.active = false
	t.open--
	split := splitNo
	if g.pieces {
		split = splitLast
	}
	t.message(s, g.buf, g.time, g.start, g.end, split)
	g.buf = trim(g.buf)
}

// trim lets go of a buffer that grew for one large message, so that idle
// files do not keep it.
func trim(b []byte) []byte {
	if cap(b) > 16<<10 {
		return nil
	}
	return b[:0]
}

// message handles one whole message: multiline joining, then the record.
func (t *tailer) message(s int, content []byte, tm pipeline.EventTime, start, end int64, split int) {
	re := t.in.startRe
	if re == nil {
		t.record(s, content, tm, split, end)
		return
	}
	g := &t.ml[s]
	if split != splitNo {
		t.flushML(s)
		t.record(s, content, tm, split, end)
		return
	}
	if re.Match(content) {
		t.flushML(s)
		g.active, g.start, g.end, g.time, g.last = true, start, end, tm, time.Now()
		g.buf = append(g.buf[:0], content...)
		t.open++
		return
	}
	if !g.active {
		t.record(s, content, tm, splitNo, end)
		return
	}
	if len(g.buf)+1+len(content) > t.in.maxLine {
		// Too long: what is there goes out, the line starts a new group.
		t.flushML(s)
		g.active, g.start, g.end, g.time, g.last = true, start, end, tm, time.Now()
		g.buf = append(g.buf[:0], content...)
		t.open++
		return
	}
	g.buf = append(g.buf, '\n')
	g.buf = append(g.buf, content...)
	g.end, g.last = end, time.Now()
}

func (t *tailer) flushML(s int) {
	g := &t.ml[s]
	if !g.active {
		return
	}
	g.active = false
	t.open--
	t.record(s, g.buf, g.time, splitNo, g.end)
	g.buf = trim(g.buf)
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
		if t.err != nil || t.failedFlag.Load() {
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
	if t.count == 0 || t.err != nil || t.failedFlag.Load() {
		if t.count == 0 && t.chunk != nil {
			t.in.chunks.Put(t.chunk)
			t.chunk = nil
		}
		return
	}
	t.emitChunk(*t.chunk, t.count, t.records, t.chunkEnd)
	if t.err != nil || t.failedFlag.Load() {
		return
	}
	*t.chunk = (*t.chunk)[:0]
	t.count, t.records = 0, 0
	t.in.chunks.Put(t.chunk)
	t.chunk = nil
}

// retire finishes a file that is gone: whatever waits is emitted, every
// chunk must be acknowledged, then the file is closed and its checkpoint
// forgotten. It reports false while acks are outstanding.
func (t *tailer) retire() bool {
	t.flushDue(time.Now(), true)
	t.flush()
	if t.err != nil {
		return true
	}
	t.mu.Lock()
	out, failed := t.outstanding, t.failed
	t.mu.Unlock()
	if failed {
		return false
	}
	if out > 0 {
		t.waitFor(-1)
		return false
	}
	t.mu.Lock()
	t.retired = true
	t.mu.Unlock()
	t.in.untrack(t)
	t.in.store.del(t.key)
	t.f.Close()
	t.in.log.Debug("closed file", zap.String("path", t.path), zap.Int64("offset", t.readOff))
	return true
}

// idleClose closes a file idle for ignore_older (fully read and
// acknowledged); its checkpoint stays, and the scan opens it again once it
// is written to.
func (t *tailer) idleClose(fi os.FileInfo, now time.Time) bool {
	older := t.in.cfg.IgnoreOlder.D()
	if older <= 0 || now.Sub(fi.ModTime()) < older || len(t.carry) > 0 || t.open > 0 {
		return false
	}
	t.mu.Lock()
	busy := t.outstanding > 0 || t.committed < t.readOff || t.gone || t.copyOf != nil
	if !busy {
		t.retired = true
	}
	t.mu.Unlock()
	if busy {
		return false
	}
	t.in.untrack(t)
	t.f.Close()
	return true
}
