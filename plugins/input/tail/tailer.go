package tail

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
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

	// Owned by the tailer's goroutine, no lock. The reader (reader.go):
	readOff    int64   // next offset to read; buf[lo:hi] (or carry) ends here
	readTail   tailSum // of the bytes just before readOff, as they were read
	buf        []byte  // a pooled read buffer, held only inside readToEOF
	lo, hi     int
	carry      []byte    // unconsumed bytes (a partial line) between reads
	carrySince time.Time // when the partial line was first seen
	splitting  bool      // pieces of an over-long line were emitted
	lastSize   int64
	lastEOF    time.Time
	readTime   mpack.EventTime
	readErr    bool // the last read failed (not at the end of the file)
	// The chunk being filled (chunk.go, ack.go):
	chunk    *[]byte // from broker.GetBuffer; handed over with the chunk
	chunkCap int     // its size as got: an append that outgrew it moved it
	count    int
	chunkEnd int64 // checkpoint offset once the chunk is durable
	records  int
	extra    []byte // pre-encoded extra pairs (path_key)
	extraN   int
	err      error // set when the input stops mid-emit
	// The chain the chunks' source positions belong to (source.go):
	// its number and offset, where the next chunk starts, and the buffer
	// the source is encoded in. srcOff: this chain stores none (its
	// origin could not be saved).
	origin    uint64
	originOff int64
	srcStart  int64
	srcOff    bool
	srcBuf    []byte
	// Messages being assembled (format.go, multiline.go):
	merge   [numStreams]group // cri/docker partial messages
	ml      [numStreams]group // multiline groups
	open    int               // active groups
	scratch []byte
	// The loop (tailer.go):
	backoff time.Duration
	timer   *time.Timer
	// failed: a chunk was not stored (or not taken) and the file is to be
	// read again from its checkpoint. Set and cleared under mu, together
	// with gen; read without it on the hot path.
	failed atomic.Bool

	// mu guards the fields below: the tailer's goroutine shares them with
	// the ack callback (acked, on the buffer's goroutine) and with the
	// manager and the other tailers (scan, noteTruncation,
	// liveWithFingerprint, resolveCopy). Lock order: Input.mu, then
	// tailer.mu, then store.mu (see doc.go); never two tailers' mu at once,
	// and never held across Emit, a file read or a call that takes Input.mu.
	mu sync.Mutex
	// fp is written only by the tailer's goroutine (under mu), which
	// therefore reads it without mu.
	fp          fingerprint
	gen         uint64 // content generation: acks of older ones are ignored
	pending     []*pendingChunk
	committed   int64
	commitTail  tailSum // of the bytes before committed
	outstanding int
	gone        bool
	deleted     bool
	goneAt      time.Time
	copyOf      *tailer // set at creation; cleared by the tailer's goroutine
	parkUntil   time.Time
	copySize    int64 // a possible copy's size when found: what it holds of the original
	retired     bool
}

// newTailer builds the tailer of f, found with content fp and size bytes;
// m says where it starts. open starts its goroutine.
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
		origin:     in.seq.Add(1),
		originOff:  m.start,
		srcStart:   m.start,
	}
	if m.gone {
		t.goneAt = time.Now()
	}
	if m.copyOf != nil {
		t.parkUntil = time.Now().Add(max(3*in.cfg.RefreshInterval.D(), time.Second))
		t.copySize = size
	}
	if in.pathKeyEnc != nil {
		t.extra = mpack.AppendString(append([]byte(nil), in.pathKeyEnc...), t.path)
		t.extraN = 1
	}
	t.timer = time.NewTimer(time.Hour)
	t.timer.Stop()
	return t
}

// poke wakes the tailer's goroutine; it never blocks.
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
		if t.failed.Load() {
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
		t.checkDeleted(fi, now)
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
		if !t.failed.Load() {
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

// sleep waits d or the stop; wake-ups do not end it.
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
	out, failed := t.outstanding, t.failed.Load()
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
