package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// earlySyncBytes makes SyncInterval sync before the tick once this much is
// unsynced, which bounds the acknowledgements waiting.
const earlySyncBytes = 16 << 20

type partition struct {
	b        *Broker
	id       int
	dir      string
	writable bool

	// set by Open: the highest frame epoch of the last segment, and why
	// the partition may reuse offsets of records that existed (a new epoch
	// must begin), "" if it does not
	maxEpoch uint32
	restart  string
	// the last segment was not a file; lostTailAt is its base offset
	lostTail   bool
	lostTailAt uint64

	// health: the error of the last failed write or fdatasync, until an
	// append succeeds (Broker.Healthy); hseq counts the errors set
	// hmu: a leaf, last in the lock order ("Locks" in doc.go).
	hmu  sync.Mutex
	herr error
	hseq uint64

	// mu: after wmu, cmu, b.dropMu and c.nextMu, before c.mu and s.fmu
	// (lock order: "Locks" in doc.go).
	mu      sync.Mutex
	segs    []*segment
	next    uint64    // records below next are completely written
	waiters []*Cursor // readers waiting for records (their wake channels)
	// What readers may see under SyncAlways and SyncInterval: records
	// below durNext, which an fdatasync covered. durSeg is the segment
	// that was active when that fdatasync was taken and durSize its size
	// then; segments before it are synced whole. Under SyncNone readers
	// see up to next.
	durNext uint64
	durSeg  *segment
	durSize int64
	cursors map[string]*Cursor
	// sealed segments not yet fdatasync'd (each holds a reference handed
	// from the writer to the syncer), and whether a segment was created
	// since the directory was last fsync'd
	unsyncedSegs []*segment
	dirDirty     bool
	// the tail cache (tailcache.go): records just appended, in offset
	// order, and the bytes they hold
	tail      []tailEntry
	tailBytes int64
	// the consumed segment file kept to be written over as the next
	// segment (WithSegmentReuse), "" if none: its path, the offset after
	// its last record (every record it holds is below it) and its size,
	// which the buffer's size accounting counts
	spareFile string
	spareNext uint64
	spareSize int64

	// qmu: a leaf (lock order: "Locks" in doc.go), taken under wmu; Close holds
	// every partition's at once, in partition order.
	qmu   sync.Mutex
	queue []*appendReq
	qkick chan struct{}

	// wmu is held by whoever writes: the writer goroutine, or an appender
	// that found the writer idle and the queue empty and writes its own
	// chunk (see enqueue). Close takes it for good once the writer ended.
	// First in the lock order ("Locks" in doc.go); Close takes every partition's,
	// in partition order.
	wmu sync.Mutex
	one [1]*appendReq // an appender's own batch

	// owned by the holder of wmu (and Open/Close around it); active is
	// also read under mu.
	active *segment
	wf     segFile
	spare  []*appendReq
	hdrs   []byte
	iovs   [][]byte
	tails  []tailEntry // the records just written that the tail cache keeps

	// smu: a leaf (lock order: "Locks" in doc.go), taken under wmu.
	smu      sync.Mutex
	acks     []ack
	unsynced int64
	synced   uint64
	// fsyncMu: one of syncNow's syncs and syncBeforeRoll's at a time, so
	// that a writeback error, reported once per open file, reaches the
	// acknowledgements it concerns (held across fdatasync; after wmu,
	// before mu: "Locks" in doc.go)
	fsyncMu sync.Mutex
	syncErr error // a failed fdatasync of the writer's (syncBeforeRoll), for the next sync to report
	skick   chan struct{}
	sAcks   []ack // syncer's delivery buffer

	// cmu: after wmu, before mu and c.mu (lock order: "Locks" in doc.go); held
	// across cursor file I/O.
	cmu sync.Mutex // serialises cursor file writes
}

// appendReq is one chunk on its way from Append to the writer goroutine.
type appendReq struct {
	ctx     context.Context
	tag     string
	meta    []byte // nil: no meta section
	entries []byte
	count   uint32
	frame   int64
	done    func(Pos, error) // AppendAsync
	async   bool
	own     *[]byte           // the pooled memory of entries, handed over (AppendAsyncOwned)
	ch      chan appendResult // capacity 1
}

type appendResult struct {
	pos Pos
	err error
}

type ack struct {
	off   uint64
	bytes int64
	pos   Pos
	ch    chan appendResult
	done  func(Pos, error)
}

var reqPool = sync.Pool{New: func() any { return &appendReq{ch: make(chan appendResult, 1)} }}

func (b *Broker) openPartition(id int) (*partition, error) {
	p := &partition{
		b:        b,
		id:       id,
		dir:      filepath.Join(b.dir, partDirName(id)),
		writable: id < b.nWrite,
		cursors:  map[string]*Cursor{},
		qkick:    make(chan struct{}, 1),
		skick:    make(chan struct{}, 1),
	}
	// a partition or cursors directory that is not a directory is set
	// aside: the partition starts again rather than refuse to open
	for _, d := range []string{p.dir, filepath.Join(p.dir, cursorsDir)} {
		if st, err := os.Lstat(d); err == nil && !st.IsDir() {
			setAside(d, b.log)
		}
	}
	if err := os.MkdirAll(filepath.Join(p.dir, cursorsDir), 0o755); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	var bases, badBases []uint64
	var spares []string
	for _, e := range ents {
		name := e.Name()
		base, ok := parseSegName(name)
		if _, isSpare := parseSpareName(name); isSpare {
			spares = append(spares, name)
			continue
		}
		switch {
		case ok && e.Type().IsRegular():
			bases = append(bases, base)
		case ok:
			// not a file (a directory, a socket, ...): its records are
			// lost; readers count the gap it leaves
			b.log.Warn("segment path is not a regular file; its records are lost",
				zap.Int("partition", id), zap.String("segment", filepath.Join(p.dir, name)), zap.String("type", e.Type().String()))
			setAside(filepath.Join(p.dir, name), b.log)
			badBases = append(badBases, base)
		case strings.HasSuffix(name, tmpSuffix):
			_ = os.Remove(filepath.Join(p.dir, name)) // an interrupted repair
		}
	}
	slices.Sort(bases)
	slices.Sort(badBases)
	if n := len(badBases); n > 0 && (len(bases) == 0 || badBases[n-1] > bases[len(bases)-1]) {
		p.loseTail(badBases[n-1], "the last segment was not a file")
	}
	// The last segment is recovered; one that cannot be (an I/O error) is
	// set aside like one that is not a file, and the one before it takes
	// its place.
	var tail *segment
	for len(bases) > 0 {
		base := bases[len(bases)-1]
		bases = bases[:len(bases)-1]
		s := &segment{p: p, base: base, path: filepath.Join(p.dir, segName(base)), records: -1, events: -1}
		err := p.recoverTail(s)
		if err == nil {
			tail = s
			break
		}
		if errors.Is(err, errUnknownVersion) || isTransient(err) {
			return nil, err
		}
		b.log.Error("cannot recover the last segment; set aside, its records are lost",
			zap.Int("partition", id), zap.String("segment", s.path), zap.Error(err))
		setAside(s.path, b.log)
		p.loseTail(base, "the last segment could not be read")
	}
	if tail == nil {
		base := uint64(0)
		if p.lostTail {
			base = p.lostTailAt
		} else {
			p.restart = "no segment file: offsets start again"
		}
		path := filepath.Join(p.dir, segName(base))
		if _, err := os.Lstat(path); err == nil {
			// could not be set aside: start just after it
			base++
			path = filepath.Join(p.dir, segName(base))
		}
		if err := createSegmentFile(path, id, base); err != nil {
			return nil, fmt.Errorf("broker: partition %d: %w", id, err)
		}
		if err := syncDir(p.dir); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		tail = &segment{p: p, base: base, path: path, records: -1, events: -1}
		if err := p.recoverTail(tail); err != nil {
			return nil, err
		}
	}
	// Sealed segments are not read; one that cannot even be opened is a
	// gap readers count.
	for _, base := range bases {
		s := &segment{p: p, base: base, path: filepath.Join(p.dir, segName(base)), records: -1, events: -1}
		if err := p.openSealed(s, tail.base); err != nil {
			if errors.Is(err, errUnknownVersion) || isTransient(err) {
				return nil, err
			}
			b.log.Error("cannot open a segment; its records are lost (readers count them)",
				zap.Int("partition", id), zap.String("segment", s.path), zap.Error(err))
			continue
		}
		if n := len(p.segs); n > 0 {
			p.segs[n-1].next = s.base
		}
		p.segs = append(p.segs, s)
	}
	if n := len(p.segs); n > 0 {
		p.segs[n-1].next = tail.base
	}
	p.segs = append(p.segs, tail)
	last := p.segs[len(p.segs)-1]
	p.next = last.next
	p.synced = p.next
	p.durNext, p.durSeg, p.durSize = p.next, last, last.size
	p.active = last
	if !p.writable {
		p.wf = nil
		last.release()
	}
	p.adoptSpares(spares)
	maxCommitted, err := p.loadCursors()
	if err != nil {
		return nil, err
	}
	if p.lostTail && maxCommitted > p.next {
		// what a cursor had consumed is known to have existed
		lost := maxCommitted - p.next
		b.m.corruptRecords.Add(lost)
		b.log.Warn("records of the lost last segment", zap.Int("partition", id),
			zap.Uint64("first_offset", p.next), zap.Uint64("at_least", lost))
	}
	return p, nil
}

func createSegmentFile(path string, partition int, base uint64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	var hdr [segHeaderSize]byte
	putSegHeader(hdr[:], partition, base)
	_, err = f.Write(hdr[:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// openSealed sets up a segment that is not the last one without reading
// its frames: readers check them.
func (p *partition) openSealed(s *segment, next uint64) error {
	f, err := p.b.opts.openFile(s.path, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	defer func() { _ = f.Close() }()
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	sealTime := time.Now()
	if st, err := os.Stat(s.path); err == nil {
		sealTime = st.ModTime()
	}
	var hb [segHeaderSize]byte
	n, _ := f.ReadAt(hb[:], 0)
	h, herr := parseSegHeader(hb[:n])
	switch {
	case errors.Is(herr, errUnknownVersion):
		return fmt.Errorf("broker: %s: %w", s.path, herr)
	case herr != nil || h.base != s.base:
		p.b.log.Warn("segment header corrupted; using the base offset of the file name",
			zap.Int("partition", p.id), zap.String("segment", s.path))
	}
	s.size = size
	s.next = next
	s.sealed = true
	s.sealTime = sealTime
	return nil
}

// recoverTail scans the last segment, cuts a torn tail and records bad
// spans. It leaves the segment open read-write with the writer's reference.
func (p *partition) recoverTail(s *segment) error {
	f, err := p.b.opts.openFile(s.path, os.O_RDWR)
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	size, err := f.Size()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("broker: %w", err)
	}
	res, err := scanSegment(f, size, s.base, nil)
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("broker: scan %s: %w", s.path, err)
	}
	if res.headerErr != nil {
		_ = f.Close()
		return fmt.Errorf("broker: %s: %w", s.path, res.headerErr)
	}
	log := p.b.log.With(zap.Int("partition", p.id), zap.String("segment", s.path))
	fix := func(what string, fn func() error) error {
		if err := fn(); err != nil {
			_ = f.Close()
			return fmt.Errorf("broker: %s %s: %w", what, s.path, err)
		}
		return nil
	}
	if res.shortHead || res.staleHeader {
		if res.staleHeader {
			// A spare renamed to this segment whose new header never
			// reached the disk: nothing of the segment was acknowledged
			// (its first fdatasync covers the header). Records of it
			// that did reach the disk are dropped with the file's
			// earlier bytes, so that none of them can come back past
			// shorter appends at a later Open.
			log.Info("reused segment file without its new header; starting it again, empty", zap.Int64("bytes", size))
		} else {
			log.Warn("segment shorter than its header; rewriting the header", zap.Int64("bytes", size))
		}
		var hdr [segHeaderSize]byte
		putSegHeader(hdr[:], p.id, s.base)
		if err := fix("rewrite header of", func() error {
			if err := f.Truncate(0); err != nil {
				return err
			}
			_, err := f.WriteVAt([][]byte{hdr[:]}, 0)
			return err
		}); err != nil {
			return err
		}
		res.validEnd = segHeaderSize
		res.next = s.base
		res.records, res.events, res.index, res.maxEpoch = 0, 0, nil, 0
		res.bad, res.reused = nil, false
		size = segHeaderSize
	} else if res.headerBad {
		log.Warn("segment header corrupted; using the base offset of the file name")
	}
	for _, bs := range res.bad {
		if bs.torn && res.reused {
			// Past the records: the file's earlier use, written over by
			// the next appends. A torn record of this segment (its
			// header names an offset the segment expects) is counted.
			torn := int64(0)
			var hb [frameHeaderSize]byte
			if n, _ := f.ReadAt(hb[:], bs.start); n == frameHeaderSize {
				if h, ok := parseFrameHeader(hb[:]); ok && h.offset >= bs.firstLost {
					torn = min(h.size(), bs.end-bs.start)
				}
			}
			if torn > 0 {
				log.Warn("torn record at the end of a reused segment", zap.Int64("at", bs.start), zap.Int64("bytes", torn))
				p.b.m.tornBytes.Add(uint64(torn))
			}
			log.Debug("reused segment: appends resume after the last valid record",
				zap.Int64("at", bs.start), zap.Int64("bytes", bs.end-bs.start))
			continue
		}
		if bs.torn {
			log.Warn("cutting torn tail of segment", zap.Int64("at", bs.start), zap.Int64("bytes", bs.end-bs.start))
			p.b.m.tornBytes.Add(uint64(bs.end - bs.start))
			if err := fix("truncate", func() error { return f.Truncate(bs.start) }); err != nil {
				return err
			}
			continue
		}
		log.Warn("skipping corrupted records", zap.Int64("at", bs.start), zap.Int64("bytes", bs.end-bs.start),
			zap.Uint64("first_offset", bs.firstLost), zap.Uint64("records", bs.lost))
		p.b.m.corruptRecords.Add(bs.lost)
		s.bad = append(s.bad, bs)
	}
	if err := fix("sync", f.Datasync); err != nil {
		return err
	}
	s.size = res.validEnd
	s.next = res.next
	s.version = res.version
	s.reused = res.reused
	if s.reused {
		s.credit = max(size-res.validEnd, 0) // the earlier bytes left in place
	}
	if res.shortHead || res.staleHeader || res.version == 0 {
		s.version = segVersion // header rewritten above, or unreadable
	}
	p.maxEpoch = res.maxEpoch
	s.records = res.records
	s.events = int64(res.events)
	s.index = res.index
	s.adopt(f)
	p.wf = f
	return nil
}

// loseTail records that the last segment, at base, was lost: appends
// continue after the segments before it, in a new epoch.
func (p *partition) loseTail(base uint64, why string) {
	p.lostTail = true
	p.lostTailAt = max(p.lostTailAt, base)
	p.restart = why + ": its offsets are reused"
}

// loadCursors reads the cursor files and returns the highest committed
// offset they held (before clamping).
func (p *partition) loadCursors() (uint64, error) {
	dir := filepath.Join(p.dir, cursorsDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		// cursor files are hints: every cursor restarts at the oldest
		// retained record
		p.b.log.Warn("cannot list the cursor files; the cursors restart at the oldest retained record",
			zap.Int("partition", p.id), zap.Error(err))
		return 0, nil
	}
	var maxCommitted uint64
	first := p.segs[0].base
	for _, e := range ents {
		fname := e.Name()
		if strings.HasSuffix(fname, tmpSuffix) {
			_ = os.Remove(filepath.Join(dir, fname))
			continue
		}
		if !strings.HasSuffix(fname, curSuffix) {
			continue
		}
		name, ok := unescapeCursorName(strings.TrimSuffix(fname, curSuffix))
		if !ok || name == "" {
			continue
		}
		log := p.b.log.With(zap.String("cursor", name), zap.Int("partition", p.id))
		path := filepath.Join(dir, fname)
		data, err := os.ReadFile(path)
		var committed uint64
		if err == nil {
			committed, _, err = decodeCursor(data)
		}
		if err != nil {
			// cursor files are hints: re-deliver rather than lose
			log.Warn("ignoring unreadable cursor file; the cursor restarts at the oldest retained record", zap.Error(err))
			if st, serr := os.Lstat(path); serr == nil && !st.Mode().IsRegular() {
				setAside(path, p.b.log) // so that the cursor can be persisted again
			}
			continue
		}
		maxCommitted = max(maxCommitted, committed)
		c := p.newCursor(name, committed)
		switch {
		case committed > p.next:
			log.Warn("cursor points past the end of the log; clamped to the end",
				zap.Uint64("committed", committed), zap.Uint64("end", p.next))
			p.restart = "a cursor points past the end of the log: records were lost and their offsets are reused"
			c.committed, c.dirty = p.next, true
		case committed < first:
			log.Warn("cursor points into a deleted segment; clamped to the oldest retained record",
				zap.Uint64("committed", committed), zap.Uint64("oldest", first), zap.Uint64("lost_records", first-committed))
			c.committed, c.dirty = first, true
		}
		c.readOff = c.committed
		p.cursors[name] = c
	}
	return maxCommitted, nil
}

func (p *partition) bytesLocked() int64 {
	var n int64
	for _, s := range p.segs {
		n += s.size + s.credit
	}
	return n
}

func (p *partition) closeFiles() {
	p.mu.Lock()
	segs := slices.Clone(p.segs)
	p.dropTailLocked(len(p.tail))
	p.mu.Unlock()
	for _, s := range segs {
		s.fmu.Lock()
		if s.f != nil {
			_ = s.f.Close()
			s.f = nil
		}
		s.refs = 0
		s.fmu.Unlock()
	}
	p.wf = nil
}

// --- writer ---

// enqueue hands r to the writer goroutine, or, when no one is writing and
// nothing is queued before it, writes it on the caller's goroutine: a lone
// appender (a synchronous sender) then neither wakes the writer nor waits
// to be woken by it. Order is kept: r is written inline only while wmu is
// held and the queue is empty, and the writer takes the queue under wmu.
func (p *partition) enqueue(r *appendReq) bool {
	if p.wmu.TryLock() {
		p.qmu.Lock()
		if p.b.closed.Load() {
			p.qmu.Unlock()
			p.wmu.Unlock()
			return false
		}
		if len(p.queue) == 0 {
			p.qmu.Unlock()
			p.one[0] = r
			p.writeBatch(p.one[:])
			p.one[0] = nil
			p.wmu.Unlock()
			return true
		}
		p.queue = append(p.queue, r)
		p.qmu.Unlock()
		p.wmu.Unlock()
	} else {
		p.qmu.Lock()
		if p.b.closed.Load() {
			p.qmu.Unlock()
			return false
		}
		p.queue = append(p.queue, r)
		p.qmu.Unlock()
	}
	select {
	case p.qkick <- struct{}{}:
	default:
	}
	return true
}

func (p *partition) writeLoop() {
	defer p.b.wg.Done()
	for {
		select {
		case <-p.qkick:
		case <-p.b.closing:
			p.qmu.Lock()
			q := p.queue
			p.queue = nil
			p.qmu.Unlock()
			for _, r := range q {
				p.fail(r, ErrClosed)
			}
			return
		}
		p.wmu.Lock()
		p.qmu.Lock()
		batch := p.queue
		p.queue = p.spare[:0]
		p.qmu.Unlock()
		p.writeBatch(batch)
		clear(batch)
		p.spare = batch[:0]
		p.wmu.Unlock()
	}
}

func (p *partition) fail(r *appendReq, err error) {
	p.b.unreserve(r.frame)
	r.ch <- appendResult{err: err}
}

// writeBatch writes the requests in order, one pwritev per group that fits
// the active segment. A full disk makes it cut back, wait and retry.
func (p *partition) writeBatch(batch []*appendReq) {
	backoff := p.b.opts.retryBackoff
	for len(batch) > 0 {
		live := batch[:0]
		for _, r := range batch {
			if p.b.closed.Load() {
				p.fail(r, ErrClosed)
			} else if err := r.ctx.Err(); err != nil {
				p.fail(r, err)
			} else {
				live = append(live, r)
			}
		}
		batch = live
		if len(batch) == 0 {
			return
		}
		n, err := p.writeGroup(batch)
		batch = batch[n:]
		if err == nil {
			backoff = p.b.opts.retryBackoff
			continue
		}
		p.setUnhealthy(err)
		if isDiskFull(err) {
			p.b.m.diskFull.Add(1)
			p.b.dropSpares() // spare segment files are the first to go
			p.b.rl.Warn("disk-full", "filesystem full: appends wait and retry until space frees",
				zap.Int("partition", p.id), zap.Error(err))
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-p.b.closing:
				t.Stop()
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		p.b.rl.Warn("write-error", "buffer write failed; appends get the error",
			zap.Int("partition", p.id), zap.Error(err))
		for _, r := range batch {
			p.fail(r, fmt.Errorf("broker: append: %w", err))
		}
		return
	}
}

// writeGroup writes a prefix of batch into the active segment (rolling it
// first when full) and returns how many were written.
func (p *partition) writeGroup(batch []*appendReq) (int, error) {
	if err := p.b.ensureMeta(); err != nil {
		return 0, err // no record of an epoch not durably begun
	}
	s := p.active
	start := s.size
	if start > segHeaderSize && start+batch[0].frame > p.b.segMax {
		if err := p.roll(); err != nil {
			return 0, err
		}
		s = p.active
		start = s.size
	}
	hdrTotal, j, end := 0, 0, start
	for j < len(batch) && (j == 0 || end+batch[j].frame <= p.b.segMax) {
		hdrTotal += frameHeaderSize + len(batch[j].tag)
		if batch[j].meta != nil {
			hdrTotal += 2 + len(batch[j].meta)
		}
		end += batch[j].frame
		j++
	}
	if cap(p.hdrs) < hdrTotal {
		p.hdrs = make([]byte, hdrTotal)
	}
	p.hdrs = p.hdrs[:hdrTotal]
	iovs := p.iovs[:0]
	off := p.next
	h := 0
	for i := 0; i < j; i++ {
		r := batch[i]
		n, flags := frameHeaderSize+len(r.tag), uint16(0)
		if r.meta != nil {
			n += 2 + len(r.meta)
			flags = flagMeta
		}
		hb := p.hdrs[h : h+n]
		putFrameHeader(hb, uint32(n-frameHeaderSize+len(r.entries)), r.count, off+uint64(i), uint16(len(r.tag)), flags, p.b.epoch)
		copy(hb[frameHeaderSize:], r.tag)
		if r.meta != nil {
			m := hb[frameHeaderSize+len(r.tag):]
			binary.LittleEndian.PutUint16(m, uint16(len(r.meta)))
			copy(m[2:], r.meta)
		}
		setFrameCRC(hb, frameCRC(hb, hb[frameHeaderSize:], r.entries))
		iovs = append(iovs, hb)
		if len(r.entries) > 0 {
			iovs = append(iovs, r.entries)
		}
		h += len(hb)
	}
	_, err := p.wf.WriteVAt(iovs, start)
	clear(iovs)
	p.iovs = iovs[:0]
	if err != nil {
		// cut back a partial write; were that to fail too, the next write
		// at start overwrites it anyway.
		if terr := p.wf.Truncate(start); terr != nil {
			p.b.rl.Warn("truncate", "cannot cut back a failed write", zap.Int("partition", p.id), zap.Error(terr))
		}
		return 0, err
	}
	tails := p.takeTails(batch[:j])
	p.publish(batch[:j], start, end, tails)
	clear(tails)
	p.tails = tails[:0]
	return j, nil
}

// takeTails decides which of the records just written the tail cache
// keeps: those whose appender handed their memory over (AppendAsyncOwned),
// while the cache has room and the partition an open cursor. The memory of
// the others goes back to the pool. It returns nil, or one entry per
// request (zero for a record not kept). It runs on the writer's goroutine
// after the write and before publish, after which the requests may be
// reused.
func (p *partition) takeTails(reqs []*appendReq) []tailEntry {
	owned := false
	for _, r := range reqs {
		owned = owned || r.own != nil
	}
	if !owned {
		return nil
	}
	var room int64
	if p.b.opts.tailShare() > 0 {
		p.mu.Lock()
		room = p.tailRoomLocked()
		p.mu.Unlock()
	}
	tails := p.tails[:0]
	for _, r := range reqs {
		var e tailEntry
		if r.own != nil {
			if n := int64(cap(*r.own)); n <= room {
				e = tailEntry{tag: r.tag, count: int(r.count), entries: r.entries, buf: r.own, bytes: n}
				if r.meta != nil {
					e.meta = append([]byte(nil), r.meta...) // the appender's, not handed over
				}
				room -= n
			} else {
				room = 0 // the rest are read from the segment, in order
				putRecBuf(r.own)
			}
			r.own = nil
		}
		tails = append(tails, e)
	}
	return tails
}

// publish makes written records visible to readers and hands their
// acknowledgements on; tails (nil, or one per request) are the copies of
// the records for the tail cache.
func (p *partition) publish(reqs []*appendReq, start, end int64, tails []tailEntry) {
	p.mu.Lock()
	s := p.active
	first := p.next
	pos := start
	var total int64
	for i, r := range reqs {
		s.addIndex(first+uint64(i), pos)
		if tails != nil && tails[i].entries != nil {
			t := &tails[i]
			t.off, t.seg, t.pos, t.size, t.epoch = first+uint64(i), s, pos, r.frame, p.b.epoch
		}
		pos += r.frame
		total += r.frame
		s.events += int64(r.count)
	}
	if tails != nil {
		p.addTailLocked(tails)
	}
	s.records += int64(len(reqs))
	s.size = end
	credit := min(s.credit, total) // written over bytes already counted
	s.credit -= credit
	p.next = first + uint64(len(reqs))
	s.next = p.next
	if p.b.opts.sync == SyncNone {
		p.wakeReadersLocked()
	}
	p.mu.Unlock()
	p.b.written(total, -credit)
	p.b.m.appendRecords.Add(uint64(len(reqs)))
	p.b.m.appendBytes.Add(uint64(total))

	if p.b.opts.sync == SyncNone {
		p.setHealthy(p.healthSeq())
		for i, r := range reqs {
			pos := Pos{Partition: p.id, Offset: first + uint64(i)}
			if r.done != nil {
				r.done(pos, nil)
			}
			r.ch <- appendResult{pos: pos}
		}
		return
	}
	p.smu.Lock()
	for i, r := range reqs {
		a := ack{off: first + uint64(i), bytes: r.frame, pos: Pos{Partition: p.id, Offset: first + uint64(i)}}
		if r.async {
			a.done = r.done
			p.acks = append(p.acks, a)
			// written: AppendAsync returns (r is not touched after this)
			r.ch <- appendResult{pos: a.pos}
		} else {
			a.ch = r.ch
			p.acks = append(p.acks, a)
		}
	}
	p.unsynced += total
	kick := p.b.opts.sync == SyncAlways || p.unsynced >= earlySyncBytes
	p.smu.Unlock()
	if kick {
		select {
		case p.skick <- struct{}{}:
		default:
		}
	}
}

func (p *partition) healthSeq() uint64 {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	return p.hseq
}

// setUnhealthy records the error of a failed write or fdatasync.
func (p *partition) setUnhealthy(err error) {
	p.hmu.Lock()
	p.herr = err
	p.hseq++
	p.hmu.Unlock()
}

// setHealthy clears the error after an append succeeded, unless an error
// was set since seq was read (when the successful operation began).
func (p *partition) setHealthy(seq uint64) {
	p.hmu.Lock()
	if p.hseq == seq {
		p.herr = nil
	}
	p.hmu.Unlock()
}

// wakeReadersLocked wakes the readers waiting for new records. Callers
// hold p.mu.
func (p *partition) wakeReadersLocked() {
	for i, c := range p.waiters {
		c.queued = false
		select {
		case c.wake <- struct{}{}:
		default: // a wake-up is pending already
		}
		p.waiters[i] = nil
	}
	p.waiters = p.waiters[:0]
}

// readEndLocked returns the offset below which readers may read: what is
// synced, or under SyncNone what is written. Callers hold p.mu.
func (p *partition) readEndLocked() uint64 {
	if p.b.opts.sync == SyncNone {
		return p.next
	}
	return p.durNext
}

// readLimitLocked returns how far readers may read in s: the byte limit,
// the offset after the last readable record of s, and whether s holds the
// partition's last readable record (readers must not move past it).
// Callers hold p.mu.
func (p *partition) readLimitLocked(s *segment) (limit int64, next uint64, last bool) {
	limit, next, last = s.size, s.next, s == p.segs[len(p.segs)-1]
	if last {
		next = p.next
	}
	if p.b.opts.sync != SyncNone && s == p.durSeg {
		limit, next, last = p.durSize, p.durNext, true
	}
	return limit, next, last
}

// syncedTo makes the records below target, which end at size in segment
// s, visible to readers: an fdatasync covered them and every segment
// before s. Syncs run one at a time, each capturing a later state.
func (p *partition) syncedTo(s *segment, size int64, target uint64) {
	p.mu.Lock()
	if target >= p.durNext {
		p.durNext, p.durSeg, p.durSize = target, s, size
		p.wakeReadersLocked()
	}
	p.mu.Unlock()
}

// roll seals the active segment and starts a new one at the next offset.
// The writer does not wait for fsyncs here: the syncer fdatasyncs the
// sealed segment and the directory before it acknowledges anything after
// them.
func (p *partition) roll() error {
	old := p.active
	base := p.next
	path := filepath.Join(p.dir, segName(base))
	if st, err := os.Lstat(path); err == nil && !st.Mode().IsRegular() {
		setAside(path, p.b.log)
	}
	f, reused, spareSize, err := p.reuseSpare(path, base)
	if err != nil {
		return err
	}
	if f == nil {
		if f, err = p.b.opts.openFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC); err != nil {
			return err
		}
	}
	var hdr [segHeaderSize]byte
	var flags uint16
	if reused {
		flags = segFlagReused
	}
	putSegHeaderFlags(hdr[:], p.id, base, flags)
	if _, err := f.WriteVAt([][]byte{hdr[:]}, 0); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		if reused {
			p.b.freed(spareSize)
		}
		// the removal must be durable before anything appended later
		// is acknowledged: a reused name already is
		p.mu.Lock()
		p.dirDirty = true
		p.mu.Unlock()
		return err
	}
	if reused {
		p.b.m.segmentsReused.Add(1)
	}
	if old.reused {
		// the bytes of the file's earlier use after its records go: a
		// sealed segment ends with its last record on disk too
		if err := p.wf.Truncate(old.size); err != nil {
			p.b.rl.Warn("truncate", "cannot cut a reused segment at its last record; readers stop there anyway",
				zap.Int("partition", p.id), zap.String("segment", old.path), zap.Error(err))
		} else {
			p.mu.Lock()
			cut := old.credit
			old.credit = 0
			p.mu.Unlock()
			p.b.freed(cut)
		}
	}
	s := &segment{p: p, base: base, path: path, size: segHeaderSize, next: base, version: segVersion, reused: reused}
	if reused {
		// the spare's bytes stay counted: the disk holds them until
		// records are written over them
		s.credit = max(spareSize-segHeaderSize, 0)
	}
	s.adopt(f)
	syncing := p.b.opts.sync != SyncNone
	p.mu.Lock()
	old.sealed = true
	old.sealTime = time.Now()
	p.segs = append(p.segs, s)
	p.active = s
	if syncing {
		p.unsyncedSegs = append(p.unsyncedSegs, old) // the writer's reference goes with it
		p.dirDirty = true
	}
	p.mu.Unlock()
	if !syncing {
		old.release()
	}
	p.wf = f
	if !reused { // a reused file's bytes are counted already (credit)
		p.b.written(0, segHeaderSize)
	}
	p.b.kickRetention()
	return nil
}

// reuseSpare renames the partition's spare segment file to path, the new
// segment at base, and opens it, or returns nil when there is no spare or
// it cannot be used (it is then deleted). A spare is used only when every
// record it holds is below base: the bytes of its earlier use that the
// new records do not cover can then never pass for records of the new
// segment (the scan of a segment takes only frames at or after the offset
// it expects).
func (p *partition) reuseSpare(path string, base uint64) (f segFile, reused bool, size int64, err error) {
	p.mu.Lock()
	spare, next, size := p.spareFile, p.spareNext, p.spareSize
	p.spareFile, p.spareNext, p.spareSize = "", 0, 0
	p.mu.Unlock()
	if spare == "" {
		return nil, false, 0, nil
	}
	drop := func() (segFile, bool, int64, error) {
		_ = os.Remove(spare)
		p.b.spareGone(size)
		return nil, false, 0, nil
	}
	if next > base {
		return drop()
	}
	// The new name becomes durable below (syncDir), before the syncer
	// would have synced the segments before it: sync them first, or a
	// power cut could leave the new name with the unsynced end of an
	// earlier segment (never acknowledged) lost, a gap readers would
	// count as corrupted records.
	if err := p.syncBeforeRoll(); err != nil {
		_ = os.Remove(spare)
		p.b.spareGone(size)
		return nil, false, 0, err
	}
	if err := p.b.opts.rename(spare, path); err != nil {
		p.b.rl.Warn("reuse-segment", "cannot reuse a consumed segment file; creating a new one",
			zap.Int("partition", p.id), zap.String("spare", spare), zap.Error(err))
		return drop()
	}
	f, err = p.b.opts.openFile(path, os.O_RDWR)
	if err != nil {
		spare = path
		return drop()
	}
	// The new name must be durable before the file is written over:
	// overwritten blocks can reach the disk before a directory change
	// does, and after a power cut the old name would hold new records.
	if err := p.b.opts.syncDir(p.dir); err != nil {
		_ = f.Close()
		spare = path
		return drop()
	}
	p.b.spareTaken() // its bytes now count as the new segment's
	return f, true, size, nil
}

// syncBeforeRoll fdatasyncs the active segment and the sealed ones the
// syncer has not synced yet, on the writer's goroutine. A failure is the
// syncer's too: on Linux a writeback error is reported once per open file,
// so the syncer's next fdatasync of the same file could succeed; the
// appends waiting for a sync get the error instead (syncErr), and the
// partition is unhealthy.
func (p *partition) syncBeforeRoll() error {
	if p.b.opts.sync == SyncNone || p.wf == nil {
		return nil
	}
	p.fsyncMu.Lock()
	defer p.fsyncMu.Unlock()
	p.mu.Lock()
	sealed := slices.Clone(p.unsyncedSegs)
	p.mu.Unlock()
	var err error
	for _, s := range sealed {
		if err != nil {
			break
		}
		// a reference of our own: the syncer may be done with it and
		// close it meanwhile
		var f segFile
		if f, err = s.acquire(); err == nil {
			t := time.Now()
			err = f.Datasync()
			p.b.m.observeFsync(time.Since(t))
			s.release()
		}
	}
	if err == nil {
		t := time.Now()
		err = p.wf.Datasync()
		p.b.m.observeFsync(time.Since(t))
	}
	if err != nil {
		err = fmt.Errorf("sync: %w", err)
		p.b.rl.Warn("fsync", "fdatasync before a new segment failed; the appends waiting for it get the error", zap.Int("partition", p.id), zap.Error(err))
		p.setUnhealthy(err)
		p.smu.Lock()
		p.syncErr = err
		p.smu.Unlock()
		select {
		case p.skick <- struct{}{}: // the syncer hands it to the waiting appends
		default:
		}
	}
	return err
}

// keepSpare keeps s, a segment every cursor consumed and that no one holds
// open, as the partition's spare instead of deleting it, when reuse is on,
// the partition has none and s is at least half a segment. It reports
// whether it did; the caller deletes s otherwise.
func (p *partition) keepSpare(s *segment) bool {
	if !p.b.opts.reuse || !p.writable || s.size < p.b.segMax/2 {
		return false
	}
	if s.isOpen() {
		return false // a reader may still read it: its bytes must stay
	}
	p.mu.Lock()
	has := p.spareFile != ""
	p.mu.Unlock()
	if has {
		return false
	}
	path := filepath.Join(p.dir, spareName(s.next))
	if err := p.b.opts.rename(s.path, path); err != nil {
		return false
	}
	p.mu.Lock()
	p.spareFile, p.spareNext, p.spareSize = path, s.next, s.size+s.credit
	p.mu.Unlock()
	p.b.spareKept()
	return true
}

// dropSpare deletes the partition's spare file, if any, and returns the
// bytes it freed.
func (p *partition) dropSpare() int64 {
	p.mu.Lock()
	spare, size := p.spareFile, p.spareSize
	p.spareFile, p.spareNext, p.spareSize = "", 0, 0
	p.mu.Unlock()
	if spare == "" {
		return 0
	}
	_ = os.Remove(spare)
	p.b.spareGone(size)
	return size
}

// adoptSpares keeps at Open the spare file with the highest offset, if
// its header is an intact one of a segment below that offset; every other
// spare is deleted (all of them when reuse is off or the partition is read
// only). Open counts its size in the buffer's.
func (p *partition) adoptSpares(names []string) {
	keep := ""
	var keepNext uint64
	for _, name := range names {
		next, _ := parseSpareName(name)
		if keep == "" || next > keepNext {
			keep, keepNext = name, next
		}
	}
	for _, name := range names {
		path := filepath.Join(p.dir, name)
		if name == keep && p.b.opts.reuse && p.writable && spareIntact(path, keepNext) {
			if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() {
				p.spareFile, p.spareNext, p.spareSize = path, keepNext, st.Size()
				continue
			}
		}
		_ = os.Remove(path)
	}
}

// spareIntact reports whether the spare file at path starts with the
// intact header of a segment whose base is below next, the offset in its
// name: the segment it was, not one it was being reused as when the
// process stopped.
func spareIntact(path string, next uint64) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	var hb [segHeaderSize]byte
	if n, _ := f.ReadAt(hb[:], 0); n < segHeaderSize {
		return false
	}
	h, err := parseSegHeader(hb[:])
	return err == nil && h.base < next
}

// upgradeTail makes sure appends go to a segment of the current version,
// whose frames carry their epoch: the header of an empty version 1 last
// segment is rewritten, a non-empty one is sealed and a new segment
// started. Open calls it before the writer starts. Failing that (a full
// filesystem), appends go to the version 1 segment: logged, not fatal.
func (p *partition) upgradeTail() error {
	s := p.active
	if !p.writable || s.version == segVersion {
		return nil
	}
	if s.size > segHeaderSize {
		if err := p.roll(); err != nil {
			// appends go on in the version 1 segment: its frames read
			// the same, only their epoch is not 0
			p.b.log.Warn("cannot start a new version segment; appending to the version 1 one",
				zap.Int("partition", p.id), zap.Error(err))
		}
		return nil
	}
	var hdr [segHeaderSize]byte
	putSegHeader(hdr[:], p.id, s.base)
	_, err := p.wf.WriteVAt([][]byte{hdr[:]}, 0)
	if err == nil {
		err = p.wf.Datasync()
	}
	if err != nil {
		// the frames read the same in either version; a header torn
		// meanwhile is tolerated by the next Open (the base offset comes
		// from the file name)
		p.b.log.Warn("cannot rewrite the header of an empty version 1 segment; appending to it",
			zap.Int("partition", p.id), zap.String("segment", s.path), zap.Error(err))
		return nil
	}
	s.version = segVersion
	return nil
}

// --- syncer ---

func (p *partition) syncLoop() {
	defer p.b.wg.Done()
	var tick <-chan time.Time
	if p.b.opts.sync == SyncInterval {
		t := time.NewTicker(p.b.opts.syncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-p.b.closing:
			return
		case <-p.skick:
		case <-tick:
		}
		_ = p.syncNow(&p.sAcks) // logged; the appends it covered get the error
	}
}

// syncNow fdatasyncs what is unsynced (sealed segments first, then the
// directory if segments were created, then the active segment) and
// acknowledges what it covered.
func (p *partition) syncNow(buf *[]ack) error {
	p.fsyncMu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			p.fsyncMu.Unlock()
		}
	}
	defer unlock()
	p.mu.Lock()
	s, target, size := p.active, p.next, p.active.size
	sealed, dirDirty := p.unsyncedSegs, p.dirDirty
	p.unsyncedSegs, p.dirDirty = nil, false
	p.mu.Unlock()
	p.smu.Lock()
	synced := p.synced
	err := p.syncErr // a failed fdatasync of the writer's: nothing it covered is durable
	p.syncErr = nil
	p.smu.Unlock()
	hseq := p.healthSeq()
	if target <= synced && len(sealed) == 0 && !dirDirty {
		unlock()
		p.completeSync(synced, nil, buf) // nothing waits: the error concerned no one
		return nil
	}
	if err != nil {
		// synced again from the start by the next sync
		p.mu.Lock()
		p.unsyncedSegs = append(slices.Clone(sealed), p.unsyncedSegs...)
		p.dirDirty = p.dirDirty || dirDirty
		p.mu.Unlock()
		sealed, dirDirty = nil, false
	}
	datasync := func(f segFile) {
		t := time.Now()
		err = f.Datasync()
		p.b.m.observeFsync(time.Since(t))
	}
	for i, o := range sealed {
		if f := o.file(); f != nil {
			datasync(f)
		}
		if err != nil {
			// the next sync starts again with the segments not synced
			// (they keep their references) and the directory: nothing
			// after them is acknowledged or visible before
			p.mu.Lock()
			p.unsyncedSegs = append(slices.Clone(sealed[i:]), p.unsyncedSegs...)
			p.dirDirty = p.dirDirty || dirDirty
			p.mu.Unlock()
			break
		}
		o.release()
	}
	if err == nil && dirDirty {
		if err = p.b.opts.syncDir(p.dir); err != nil {
			p.mu.Lock()
			p.dirDirty = true
			p.mu.Unlock()
		}
	}
	if err == nil {
		var f segFile
		if f, err = s.acquire(); err == nil {
			datasync(f)
			s.release()
		}
	}
	if err != nil {
		p.b.rl.Warn("fsync", "fdatasync failed; the appends it covered get the error", zap.Int("partition", p.id), zap.Error(err))
		p.setUnhealthy(fmt.Errorf("sync: %w", err))
	} else {
		p.syncedTo(s, size, target)
		p.setHealthy(hseq)
	}
	unlock()
	p.completeSync(target, err, buf)
	return err
}

// completeSync acknowledges every pending append below target: durable if
// err is nil, failed otherwise.
func (p *partition) completeSync(target uint64, err error, buf *[]ack) {
	p.smu.Lock()
	if err == nil && target > p.synced {
		p.synced = target
	}
	i := 0
	for i < len(p.acks) && p.acks[i].off < target {
		p.unsynced -= p.acks[i].bytes
		i++
	}
	done := append((*buf)[:0], p.acks[:i]...)
	n := copy(p.acks, p.acks[i:])
	clear(p.acks[n:])
	p.acks = p.acks[:n]
	p.smu.Unlock()
	if err != nil {
		err = fmt.Errorf("broker: sync: %w", err)
	}
	for _, a := range done {
		if a.done != nil {
			a.done(a.pos, err)
		} else {
			a.ch <- appendResult{pos: a.pos, err: err}
		}
	}
	clear(done)
	*buf = done[:0]
}

// finalSync runs in Close after the writer and the syncer stopped.
func (p *partition) finalSync() error {
	if p.wf == nil {
		return nil
	}
	if p.b.opts.sync != SyncNone {
		if err := p.syncNow(&p.sAcks); err != nil {
			return fmt.Errorf("broker: partition %d: %w", p.id, err)
		}
		return nil
	}
	if err := p.wf.Datasync(); err != nil {
		return fmt.Errorf("broker: partition %d: %w", p.id, err)
	}
	return nil
}

// --- cursor files ---

func (p *partition) cursorPath(name string) string {
	return filepath.Join(p.dir, cursorsDir, escapeCursorName(name)+curSuffix)
}

// flushCursors persists the dirty cursors of the partition: each file is
// written to a temp file, fsync'd and renamed; then the directory is
// fsync'd once.
func (p *partition) flushCursors() error {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	p.mu.Lock()
	var dirty []*Cursor
	for _, c := range p.cursors {
		c.mu.Lock()
		if c.dirty {
			dirty = append(dirty, c)
		}
		c.mu.Unlock()
	}
	p.mu.Unlock()
	if len(dirty) == 0 {
		return nil
	}
	var errs []error
	var written []*Cursor
	for _, c := range dirty {
		c.mu.Lock()
		v := c.committed
		c.dirty = false
		c.mu.Unlock()
		if err := writeCursorFile(c.path, v); err != nil {
			c.markDirty()
			errs = append(errs, err)
			continue
		}
		written = append(written, c)
	}
	if len(written) > 0 {
		if err := syncDir(filepath.Join(p.dir, cursorsDir)); err != nil {
			for _, c := range written {
				c.markDirty()
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func writeCursorFile(path string, committed uint64) error {
	var b [cursorFileSize]byte
	encodeCursor(b[:], committed, time.Now().UnixNano())
	return replaceFile(path, b[:])
}
