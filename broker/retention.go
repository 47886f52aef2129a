package broker

import (
	"os"

	"go.uber.org/zap"
)

func (b *Broker) kickRetention() {
	select {
	case b.retainKick <- struct{}{}:
	default:
	}
}

func (b *Broker) retentionLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.closing:
			return
		case <-b.retainKick:
		}
		for _, p := range b.parts {
			p.applyRetention()
		}
		b.retentionPasses.Add(1)
	}
}

// minRetainedLocked returns the lowest committed position of the cursors
// opened in this process. Callers hold p.mu.
func (p *partition) minRetainedLocked() (uint64, bool) {
	var lowest uint64
	found := false
	for _, c := range p.cursors {
		c.mu.Lock()
		if c.retain && (!found || c.committed < lowest) {
			lowest, found = c.committed, true
		}
		c.mu.Unlock()
	}
	return lowest, found
}

// applyRetention deletes the sealed segments every retaining cursor has
// committed past. Cursors are persisted first, so that a restart does not
// find them pointing into a deleted segment.
func (p *partition) applyRetention() {
	roomy := p.b.roomy()
	p.mu.Lock()
	lowest, ok := p.minRetainedLocked()
	n := 0
	for ok && n < len(p.segs)-1 && p.segs[n].sealed && p.segs[n].next <= lowest {
		n++
	}
	// The oldest segment would be the partition's spare but a reader
	// still has it open (a cursor that has not moved on yet): while the
	// buffer has room, the next pass (the next commit) keeps it instead.
	hold := n > 0 && roomy && p.spareFile == "" && p.b.opts.reuse && p.writable &&
		p.segs[0].size >= p.b.segMax/2 && p.segs[0].isOpen()
	p.mu.Unlock()
	if n == 0 || hold {
		return
	}
	if err := p.flushCursors(); err != nil {
		p.b.rl.Warn("cursor-flush", "persisting cursors failed; segments are deleted later", zap.Error(err))
		return
	}
	p.mu.Lock()
	var del []*segment
	for len(del) < n && len(p.segs) > 1 && p.segs[0].sealed && p.segs[0].next <= lowest {
		s := p.segs[0]
		s.deleted = true
		del = append(del, s)
		p.segs = p.segs[1:]
	}
	p.mu.Unlock()
	// Oldest first, as deletes go: a kill in between leaves the log
	// without a prefix, never with a hole.
	if len(del) > 0 && p.keepSpare(del[0]) {
		s := del[0]
		p.b.log.Debug("segment consumed by every cursor; kept to be written over as a later segment",
			zap.Int("partition", p.id), zap.String("segment", s.path), zap.Int64("bytes", s.size))
		del = del[1:]
		if len(del) > 0 {
			// the rename durable before the deletes: a power cut must not
			// keep them and lose it (a hole in the log)
			_ = p.b.opts.syncDir(p.dir)
		}
	}
	p.removeSegments(del)
	for _, s := range del {
		p.b.log.Debug("segment consumed by every cursor; deleted",
			zap.Int("partition", p.id), zap.String("segment", s.path), zap.Int64("bytes", s.size))
	}
}

// roomy reports whether the buffer is less than half full, so that
// retention may leave a consumed segment for a later pass.
func (b *Broker) roomy() bool {
	b.spaceMu.Lock()
	defer b.spaceMu.Unlock()
	return 2*(b.used+b.reserved) < b.opts.maxBytes
}

// dropSpares deletes every partition's spare segment file and reports
// whether that freed anything.
func (b *Broker) dropSpares() bool {
	var n int64
	for _, p := range b.parts {
		n += p.dropSpare()
	}
	return n > 0
}

// removeSegments unlinks segments already taken out of p.segs and frees
// their bytes. Open descriptors stay valid until their last release.
func (p *partition) removeSegments(del []*segment) {
	var freed int64
	for _, s := range del {
		if err := os.Remove(s.path); err != nil && !os.IsNotExist(err) {
			p.b.rl.Warn("remove-segment", "cannot delete segment", zap.String("segment", s.path), zap.Error(err))
		}
		freed += s.size + s.credit
	}
	if len(del) > 0 {
		_ = syncDir(p.dir)
		p.b.freed(freed)
	}
}

// dropOldest deletes the oldest sealed segment of the buffer (by seal
// time), moves the cursors that had not consumed it past it and counts what
// they lost. It reports whether it deleted anything.
func (b *Broker) dropOldest() bool {
	b.dropMu.Lock()
	defer b.dropMu.Unlock()
	var victim *segment
	var vp *partition
	for _, p := range b.parts {
		p.mu.Lock()
		if len(p.segs) > 1 && p.segs[0].sealed {
			if s := p.segs[0]; victim == nil || s.sealTime.Before(victim.sealTime) {
				victim, vp = s, p
			}
		}
		p.mu.Unlock()
	}
	if victim == nil {
		return false
	}
	p := vp

	// Who had not consumed it yet?
	type lagging struct {
		c       *Cursor
		from    uint64
		records uint64
		events  uint64
		bytes   uint64
	}
	var lag []*lagging
	p.mu.Lock()
	nCursors := len(p.cursors)
	for _, c := range p.cursors {
		c.mu.Lock()
		if c.committed < victim.next {
			lag = append(lag, &lagging{c: c, from: c.committed})
		}
		c.mu.Unlock()
	}
	p.mu.Unlock()
	from := victim.base
	if nCursors > 0 {
		from = victim.next
		for _, l := range lag {
			from = min(from, l.from)
		}
	}
	var recs, events, bytes uint64
	if f, err := victim.acquire(); err == nil {
		_, _ = scanSegment(f, victim.size, victim.base, func(_ int64, h frameHeader) error {
			if h.flags&flagLost != 0 {
				return nil
			}
			if h.offset >= from {
				recs++
				events += uint64(h.count)
				bytes += uint64(h.size())
			}
			for _, l := range lag {
				if h.offset >= l.from {
					l.records++
					l.events += uint64(h.count)
					l.bytes += uint64(h.size())
				}
			}
			return nil
		})
		victim.release()
	}

	p.mu.Lock()
	if len(p.segs) < 2 || p.segs[0] != victim {
		p.mu.Unlock()
		return true // changed meanwhile; the caller re-checks the space
	}
	victim.deleted = true
	p.segs = p.segs[1:]
	for _, l := range lag {
		c := l.c
		c.mu.Lock()
		if c.committed < victim.next {
			c.committed, c.dirty = victim.next, true
		}
		if c.readOff < victim.next {
			c.readOff = victim.next
			c.gen++
		}
		c.mu.Unlock()
	}
	p.mu.Unlock()
	p.removeSegments([]*segment{victim})

	b.m.droppedRecords.Add(recs)
	b.m.droppedEvents.Add(events)
	b.m.droppedBytes.Add(bytes)
	fields := []zap.Field{zap.Int("partition", p.id), zap.String("segment", victim.path),
		zap.Uint64("records", recs), zap.Uint64("events", events), zap.Uint64("bytes", bytes)}
	if len(lag) == 0 && recs > 0 {
		b.log.Warn("buffer full (when_full: drop_oldest): dropped the oldest segment before any output read it", fields...)
	}
	for _, l := range lag {
		if l.records == 0 {
			continue
		}
		b.log.Warn("buffer full (when_full: drop_oldest): dropped the oldest segment; cursor lost records",
			zap.String("cursor", l.c.name), zap.Int("partition", p.id), zap.String("segment", victim.path),
			zap.Uint64("records", l.records), zap.Uint64("events", l.events), zap.Uint64("bytes", l.bytes))
	}
	return true
}
