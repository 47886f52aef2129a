package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"go.uber.org/zap"
)

// Cursor reads one partition for one named consumer (an output) and
// remembers, across restarts, what it consumed. Next must be called from one
// goroutine at a time; Commit, Committed, Reset and Close may be called from
// any goroutine.
type Cursor struct {
	p    *partition
	name string
	path string

	// mu: a leaf (lock order: "Locks" in doc.go), taken under p.wmu, p.cmu,
	// b.dropMu, nextMu and p.mu.
	mu        sync.Mutex
	committed uint64 // next offset to consume after a restart
	readOff   uint64 // next offset Next returns
	gen       uint64 // bumped whenever readOff is moved outside Next
	dirty     bool
	open      bool
	retain    bool   // opened in this process: holds retention
	limit     uint64 // a Scan's: Next returns io.EOF at this offset
	closeCh   chan struct{}

	// nextMu: before p.mu, mu and s.fmu (lock order: "Locks" in doc.go); held
	// across segment reads and waits for records.
	nextMu sync.Mutex // held by Next; Close waits for it
	// wake gets a token from publish (wakeReadersLocked) when queued (in
	// p.waiters, under p.mu) and records arrive.
	wake   chan struct{}
	queued bool

	// owned by Next
	seg     *segment
	pos     int64  // frame boundary in seg
	idxPos  int64  // position of the last index entry this cursor added
	expect  uint64 // offset expected at pos
	posFor  uint64 // readOff value the position was found for
	posGen  uint64
	buf     []byte  // cursorBufSize bytes of pooled memory (bufP), or nil
	bufP    *[]byte // handed to a record that takes buf whole (readFrame)
	bufPos  int64
	bufN    int
	lastTag string
}

const cursorBufSize = 256 << 10

func (p *partition) newCursor(name string, committed uint64) *Cursor {
	return &Cursor{p: p, name: name, path: p.cursorPath(name), committed: committed, readOff: committed, wake: make(chan struct{}, 1)}
}

func (c *Cursor) markDirty() {
	c.mu.Lock()
	c.dirty = true
	c.mu.Unlock()
}

// Cursor returns the named cursor of one partition, creating it at the
// oldest retained offset if it is new. Only one *Cursor per (name,
// partition) may be open at a time (ErrCursorInUse); after Close the same
// name may be opened again and resumes at its committed position. From now
// on until RemoveCursor or the next Open, the cursor holds retention: no
// segment it has not committed past is deleted (except by drop_oldest).
func (b *Broker) Cursor(name string, partition int) (*Cursor, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if name == "" {
		return nil, errors.New("broker: empty cursor name")
	}
	if partition < 0 || partition >= len(b.parts) {
		return nil, fmt.Errorf("broker: partition %d out of range [0, %d)", partition, len(b.parts))
	}
	p := b.parts[partition]
	p.mu.Lock()
	defer p.mu.Unlock()
	first := p.segs[0].base
	c := p.cursors[name]
	if c == nil {
		c = p.newCursor(name, first)
		c.dirty = true
		p.cursors[name] = c
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open {
		return nil, fmt.Errorf("%w: %q partition %d", ErrCursorInUse, name, partition)
	}
	if c.committed < first {
		b.log.Warn("cursor points into a deleted segment; clamped to the oldest retained record",
			zap.String("cursor", name), zap.Int("partition", partition),
			zap.Uint64("committed", c.committed), zap.Uint64("oldest", first), zap.Uint64("lost_records", first-c.committed))
		c.committed, c.dirty = first, true
	}
	c.open, c.retain = true, true
	c.closeCh = make(chan struct{})
	c.readOff = c.committed
	c.gen++
	return c, nil
}

// RemoveCursor forgets the named cursor on every partition and deletes its
// files, so that it no longer holds retention. The cursor must be closed.
func (b *Broker) RemoveCursor(name string) error {
	if b.closed.Load() {
		return ErrClosed
	}
	var errs []error
	for _, p := range b.parts {
		p.cmu.Lock()
		p.mu.Lock()
		c := p.cursors[name]
		if c != nil {
			c.mu.Lock()
			open := c.open
			c.mu.Unlock()
			if open {
				p.mu.Unlock()
				p.cmu.Unlock()
				return fmt.Errorf("%w: %q partition %d", ErrCursorInUse, name, p.id)
			}
			delete(p.cursors, name)
		}
		p.mu.Unlock()
		if err := os.Remove(p.cursorPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		} else if err == nil {
			if err := syncDir(filepath.Join(p.dir, cursorsDir)); err != nil {
				errs = append(errs, err)
			}
		}
		p.cmu.Unlock()
	}
	b.kickRetention()
	return errors.Join(errs...)
}

// Name returns the cursor's name.
func (c *Cursor) Name() string { return c.name }

// Partition returns the cursor's partition.
func (c *Cursor) Partition() int { return c.p.id }

// Committed returns the next offset to be consumed after a restart.
func (c *Cursor) Committed() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.committed
}

// Commit records that every record with an offset <= offset is consumed.
// It only moves forward: an older offset is a no-op. It is cheap: a
// background flusher persists it within 250ms (WithCursorFlushInterval), and Flush and Close
// persist it at once. Reading continues after the commit point (or after
// Commit's offset, if reading was behind it).
func (c *Cursor) Commit(offset uint64) error {
	c.p.mu.Lock()
	end := c.p.readEndLocked()
	// Retention can delete something only once every retaining cursor,
	// this one included, is past the oldest segment (every segment but
	// the last is sealed): below that, waking it for every commit is
	// wasted work.
	oldest := len(c.p.segs) > 1 && offset+1 >= c.p.segs[0].next
	c.p.mu.Unlock()
	if offset >= end {
		return fmt.Errorf("broker: commit of offset %d beyond the end of partition %d (%d)", offset, c.p.id, end)
	}
	c.mu.Lock()
	if !c.open {
		c.mu.Unlock()
		return ErrClosed
	}
	if offset+1 <= c.committed {
		c.mu.Unlock()
		return nil
	}
	c.committed = offset + 1
	c.dirty = true
	if c.readOff < c.committed {
		c.readOff = c.committed
		c.gen++
	}
	c.mu.Unlock()
	if oldest {
		c.p.b.kickRetention()
	}
	return nil
}

// Reset rewinds reading to the committed position: the next Next returns
// the first uncommitted record again (an output re-reads after a failed
// delivery).
func (c *Cursor) Reset() {
	c.mu.Lock()
	c.readOff = c.committed
	c.gen++
	c.mu.Unlock()
}

// Close persists the cursor's position and closes it. A blocked Next
// returns ErrClosed. The cursor keeps holding retention at its committed
// position (see RemoveCursor).
func (c *Cursor) Close() error {
	c.mu.Lock()
	if !c.open {
		c.mu.Unlock()
		return nil
	}
	c.open = false
	close(c.closeCh)
	c.mu.Unlock()
	c.nextMu.Lock()
	if c.seg != nil {
		c.seg.release()
		c.seg = nil
	}
	c.dropBuf()
	c.nextMu.Unlock()
	if c.p.b.closed.Load() {
		return nil // Broker.Close persists it
	}
	return c.p.flushCursors()
}

// Next returns the record after the last one returned (reads may run ahead
// of the commit point), blocking until one is written or ctx is done. It
// only returns records that are completely written. Corrupted records are
// skipped (counted and logged once). Errors: ctx.Err(), ErrClosed, or an
// I/O error (retry later).
func (c *Cursor) Next(ctx context.Context) (Record, error) {
	c.nextMu.Lock()
	defer c.nextMu.Unlock()
	p := c.p
	for {
		c.mu.Lock()
		if !c.open {
			c.mu.Unlock()
			return Record{}, ErrClosed
		}
		off, gen, closeCh := c.readOff, c.gen, c.closeCh
		c.mu.Unlock()
		if p.b.closed.Load() {
			return Record{}, ErrClosed
		}
		if c.limit != 0 && off >= c.limit {
			return Record{}, io.EOF
		}

		p.mu.Lock()
		if off >= p.readEndLocked() {
			if !c.queued {
				c.queued = true
				p.waiters = append(p.waiters, c)
			}
			p.mu.Unlock()
			select {
			case <-c.wake:
				continue // maybe a stale wake-up: checked again
			case <-ctx.Done():
				return Record{}, ctx.Err()
			case <-closeCh:
				return Record{}, ErrClosed
			case <-p.b.closing:
				return Record{}, ErrClosed
			}
		}
		if c.seg == nil || c.seg.deleted || c.posFor != off || c.posGen != gen {
			if err := c.seekLocked(off, gen); err != nil {
				p.mu.Unlock()
				return Record{}, err
			}
			if c.posFor != off { // clamped forward
				p.mu.Unlock()
				continue
			}
		}
		s := c.seg
		limit, segNext, last := p.readLimitLocked(s)
		if len(p.tail) > 0 && c.name != "" {
			if rec, ok := c.fromTailLocked(off, limit); ok {
				p.mu.Unlock()
				c.mu.Lock()
				if c.gen != gen { // moved by Reset, Commit or drop_oldest meanwhile
					c.mu.Unlock()
					rec.Release()
					continue
				}
				c.readOff = off + 1
				c.posFor, c.posGen = c.readOff, gen
				c.mu.Unlock()
				return rec, nil
			}
		}
		bads := s.bad
		var nextSeg *segment
		if !last {
			if i := slices.Index(p.segs, s); i >= 0 && i+1 < len(p.segs) {
				nextSeg = p.segs[i+1]
			}
		}
		p.mu.Unlock()

		rec, found, err := c.scanTo(s, off, limit, segNext, bads)
		if err != nil {
			if p.b.closed.Load() {
				return Record{}, ErrClosed
			}
			return Record{}, err
		}
		if found {
			c.mu.Lock()
			if c.gen != gen { // moved by Reset, Commit or drop_oldest meanwhile
				c.mu.Unlock()
				continue
			}
			c.readOff = rec.Offset + 1
			c.posFor, c.posGen = c.readOff, gen
			c.mu.Unlock()
			return rec, nil
		}
		// reached the end of the segment's data without finding off
		newOff := max(off, segNext)
		if !last && nextSeg != nil {
			newOff = max(off, nextSeg.base)
		}
		if !c.moveTo(off, newOff, gen) {
			continue
		}
		if nextSeg != nil && newOff >= nextSeg.base {
			p.mu.Lock()
			if !nextSeg.deleted {
				if err := c.enter(nextSeg, indexEntry{off: nextSeg.base, pos: segHeaderSize}); err != nil {
					p.mu.Unlock()
					return Record{}, err
				}
				c.posFor, c.posGen = newOff, gen
			}
			p.mu.Unlock()
		} else {
			c.posFor = newOff
		}
	}
}

// moveTo moves readOff from off to newOff unless the cursor was moved
// meanwhile.
func (c *Cursor) moveTo(off, newOff uint64, gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.readOff != off {
		return false
	}
	c.readOff = newOff
	return true
}

// seekLocked positions the cursor at the frame for off. Callers hold p.mu.
func (c *Cursor) seekLocked(off uint64, gen uint64) error {
	p := c.p
	i := sort.Search(len(p.segs), func(i int) bool { return p.segs[i].base > off }) - 1
	if i < 0 {
		first := p.segs[0].base
		p.b.rl.Warn("cursor-behind:"+c.name, "cursor is behind the oldest retained record; records were deleted before it read them",
			zap.String("cursor", c.name), zap.Int("partition", p.id), zap.Uint64("offset", off), zap.Uint64("oldest", first))
		c.mu.Lock()
		if c.gen == gen && c.readOff == off {
			c.readOff = first
			if c.committed < first {
				c.committed, c.dirty = first, true
			}
		}
		c.mu.Unlock()
		c.posFor = ^uint64(0)
		return nil
	}
	s := p.segs[i]
	if err := c.enter(s, s.indexLookup(off)); err != nil {
		return err
	}
	c.posFor, c.posGen = off, gen
	return nil
}

// enter makes s the cursor's segment, positioned at e. Callers hold p.mu.
func (c *Cursor) enter(s *segment, e indexEntry) error {
	if c.seg != s {
		if _, err := s.acquire(); err != nil {
			return fmt.Errorf("broker: open segment: %w", err)
		}
		if c.seg != nil {
			c.seg.release()
		}
		c.seg = s
		c.bufN = 0
	}
	c.pos, c.expect, c.idxPos = e.pos, e.off, e.pos
	return nil
}

// ensureBuf gives the cursor its read buffer, if it has none.
func (c *Cursor) ensureBuf() {
	if c.buf == nil {
		c.buf, c.bufP = getRecBuf(cursorBufSize)
		c.bufN = 0
	}
}

// dropBuf gives the read buffer back to the pool.
func (c *Cursor) dropBuf() {
	putRecBuf(c.bufP)
	c.buf, c.bufP, c.bufN = nil, nil, 0
}

// view returns n bytes at pos from the cursor's buffer, reading if needed;
// fewer at limit. n <= len(c.buf).
func (c *Cursor) view(f segFile, pos int64, n int, limit int64) ([]byte, error) {
	if pos+int64(n) > limit {
		n = int(limit - pos)
	}
	if n <= 0 {
		return nil, nil
	}
	if pos >= c.bufPos && pos+int64(n) <= c.bufPos+int64(c.bufN) {
		i := int(pos - c.bufPos)
		return c.buf[i : i+n], nil
	}
	c.ensureBuf()
	want := len(c.buf)
	if pos+int64(want) > limit {
		want = int(limit - pos)
	}
	m, err := f.ReadAt(c.buf[:want], pos)
	c.bufPos, c.bufN = pos, m
	if m < n {
		if err == nil {
			err = errors.New("short read")
		}
		return c.buf[:m], fmt.Errorf("broker: read segment: %w", err)
	}
	return c.buf[:n], nil
}

// scanTo reads frames of s from the cursor position up to limit and returns
// the first record with an offset >= off.
func (c *Cursor) scanTo(s *segment, off uint64, limit int64, segNext uint64, bads []badSpan) (Record, bool, error) {
	p := c.p
	s.fmu.Lock()
	f := s.f
	s.fmu.Unlock()
	if f == nil {
		return Record{}, false, ErrClosed
	}
	c.ensureBuf()
	for c.pos < limit {
		if c.expect >= segNext {
			// every offset of the segment was met: what follows (in a
			// reused segment file, bytes of its earlier use) is no record
			break
		}
		if i := slices.IndexFunc(bads, func(b badSpan) bool { return b.start == c.pos }); i >= 0 {
			c.pos = bads[i].end
			c.expect = max(c.expect, bads[i].firstLost+bads[i].lost)
			continue
		}
		hb, err := c.view(f, c.pos, frameHeaderSize, limit)
		if err != nil {
			return Record{}, false, err
		}
		h, ok := frameHeader{}, false
		if len(hb) == frameHeaderSize {
			h, ok = parseFrameHeader(hb)
		}
		ok = ok && c.pos+h.size() <= limit && h.offset >= c.expect
		var rec Record
		if ok {
			want := h.offset >= off && h.flags&flagLost == 0
			rec, ok, err = c.readFrame(f, h, hb, limit, want)
			if err != nil {
				return Record{}, false, err
			}
		}
		if !ok {
			if err := c.skipBad(f, s, limit, segNext); err != nil {
				return Record{}, false, err
			}
			continue
		}
		if c.pos-c.idxPos >= indexEvery {
			p.mu.Lock()
			s.addIndex(h.offset, c.pos)
			p.mu.Unlock()
			c.idxPos = c.pos
		}
		c.pos += h.size()
		if h.flags&flagLost != 0 {
			c.expect = h.offset + uint64(h.count)
			continue
		}
		c.expect = h.offset + 1
		if h.offset >= off {
			rec.Partition = p.id
			return rec, true, nil
		}
	}
	if c.expect < segNext {
		c.missing(s, limit, segNext)
	}
	return Record{}, false, nil
}

// missing counts (once per segment) the offsets a segment should hold
// after its last frame but does not: it was truncated at a frame boundary,
// or the segment after it is missing.
func (c *Cursor) missing(s *segment, limit int64, segNext uint64) {
	p := c.p
	span := badSpan{start: limit, end: limit, firstLost: c.expect, lost: segNext - c.expect, torn: true}
	p.mu.Lock()
	_, known := s.badAt(limit)
	if !known {
		s.bad = append(s.bad, span)
	}
	p.mu.Unlock()
	if !known {
		p.b.m.corruptRecords.Add(span.lost)
		p.b.log.Warn("records missing: the segment ends before the next one begins (truncated, or a segment file is missing)",
			zap.Int("partition", p.id), zap.String("segment", s.path), zap.Int64("at", limit),
			zap.Uint64("first_offset", span.firstLost), zap.Uint64("records", span.lost))
	}
	c.expect = segNext
}

// readFrame verifies the CRC of the frame at c.pos and, if want, returns
// its record, in pooled memory (Record.Release): a large frame already in
// the read buffer takes the buffer with it (the cursor takes another for
// its next read), a smaller one is copied out, and one not in the buffer
// is read straight into its record's memory: one copy of the bytes at most.
func (c *Cursor) readFrame(f segFile, h frameHeader, hb []byte, limit int64, want bool) (Record, bool, error) {
	crc := crc32.Update(0, crcTable, hb[8:frameHeaderSize])
	size := h.size()
	payloadPos := c.pos + frameHeaderSize
	tagLen := int(h.tagLen)
	inBuf := c.pos >= c.bufPos && c.pos+size <= c.bufPos+int64(c.bufN)
	if inBuf || size <= 64<<10 || (!want && size <= int64(len(c.buf))) {
		fb, err := c.view(f, c.pos, int(size), limit)
		if err != nil {
			return Record{}, false, err
		}
		payload := fb[frameHeaderSize:]
		if crc32.Update(crc, crcTable, payload) != h.crc {
			return Record{}, false, nil
		}
		if !want {
			return Record{}, true, nil
		}
		var rest []byte
		var rb *[]byte
		if size > cursorBufSize/2 {
			// Most of the buffer: the record takes it whole.
			rest, rb = payload[tagLen:], c.bufP
			c.buf, c.bufP, c.bufN = nil, nil, 0
			c.ensureBuf()
		} else {
			rest, rb = getRecBuf(len(payload) - tagLen)
			copy(rest, payload[tagLen:])
		}
		meta, entries, ok := h.splitPayload(rest)
		if !ok {
			putRecBuf(rb)
			return Record{}, false, nil
		}
		return Record{Offset: h.offset, Epoch: c.p.b.recordEpoch(h.epoch), Count: int(h.count), Tag: c.tag(payload[:tagLen]), Entries: entries, Meta: meta, buf: rb}, true, nil
	}
	if !want {
		// stream the CRC through the buffer
		p, rest := payloadPos, int64(h.length)
		for rest > 0 {
			n := int(min(rest, int64(len(c.buf))))
			b, err := c.view(f, p, n, limit)
			if err != nil {
				return Record{}, false, err
			}
			crc = crc32.Update(crc, crcTable, b)
			p += int64(n)
			rest -= int64(n)
		}
		return Record{}, crc == h.crc, nil
	}
	payload, rb := getRecBuf(int(h.length))
	n, err := f.ReadAt(payload, payloadPos)
	if n < len(payload) {
		putRecBuf(rb)
		if err == nil {
			err = errors.New("short read")
		}
		return Record{}, false, fmt.Errorf("broker: read segment: %w", err)
	}
	if crc32.Update(crc, crcTable, payload) != h.crc {
		putRecBuf(rb)
		return Record{}, false, nil
	}
	meta, entries, ok := h.splitPayload(payload[tagLen:])
	if !ok {
		putRecBuf(rb)
		return Record{}, false, nil
	}
	return Record{Offset: h.offset, Epoch: c.p.b.recordEpoch(h.epoch), Count: int(h.count), Tag: c.tag(payload[:tagLen]), Entries: entries, Meta: meta, buf: rb}, true, nil
}

func (c *Cursor) tag(b []byte) string {
	if string(b) != c.lastTag {
		c.lastTag = string(b)
	}
	return c.lastTag
}

// skipBad resynchronises after a bad frame at c.pos, records the bad span
// in the segment (counting it the first time) and moves past it.
func (c *Cursor) skipBad(f segFile, s *segment, limit int64, segNext uint64) error {
	p := c.p
	w := newWindow(f, limit, 64<<10)
	q, h, found, err := w.resync(c.pos, c.expect)
	if err != nil {
		return fmt.Errorf("broker: read segment: %w", err)
	}
	span := badSpan{start: c.pos, firstLost: c.expect}
	if found {
		span.end, span.lost = q, h.offset-c.expect
	} else {
		span.end, span.torn = limit, true
		if segNext > c.expect {
			span.lost = segNext - c.expect
		}
	}
	p.mu.Lock()
	_, known := s.badAt(span.start)
	if !known {
		s.bad = append(s.bad, span)
	}
	p.mu.Unlock()
	if !known {
		p.b.m.corruptRecords.Add(span.lost)
		p.b.log.Warn("skipping corrupted records",
			zap.Int("partition", p.id), zap.String("segment", s.path), zap.Int64("at", span.start),
			zap.Int64("bytes", span.end-span.start), zap.Uint64("first_offset", span.firstLost),
			zap.Uint64("records", span.lost))
	}
	c.pos = span.end
	c.expect = span.firstLost + span.lost
	return nil
}

// NextOffset returns the offset the next record appended to partition will
// get: every record appended from now on is stored at or after it. An input
// that keeps its source position in its records (AppendAsyncMeta) saves it
// beside its own checkpoints, to Scan from it at the next start.
func (b *Broker) NextOffset(partition int) uint64 {
	p := b.parts[partition]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

// Scan calls fn with every record of partition from offset from (or the
// oldest retained record, if from is older) up to the last record readable
// when Scan began (durable, under SyncAlways and SyncInterval), in offset
// order. It holds no retention and moves no cursor. An error of fn stops
// the scan and is returned.
func (b *Broker) Scan(ctx context.Context, partition int, from uint64, fn func(Record) error) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if partition < 0 || partition >= len(b.parts) {
		return fmt.Errorf("broker: partition %d out of range [0, %d)", partition, len(b.parts))
	}
	p := b.parts[partition]
	p.mu.Lock()
	end := p.readEndLocked()
	first := p.segs[0].base
	p.mu.Unlock()
	from = max(from, first)
	if from >= end {
		return nil
	}
	c := p.newCursor("", from)
	c.open, c.limit, c.closeCh = true, end, make(chan struct{})
	defer func() {
		c.nextMu.Lock()
		if c.seg != nil {
			c.seg.release()
			c.seg = nil
		}
		c.dropBuf()
		c.nextMu.Unlock()
		p.mu.Lock()
		if c.queued {
			p.waiters = slices.DeleteFunc(p.waiters, func(w *Cursor) bool { return w == c })
		}
		p.mu.Unlock()
	}()
	for {
		rec, err := c.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}
