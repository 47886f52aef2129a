package broker

// The tail cache keeps, in memory, the records a partition's writer just
// appended from memory their appenders handed over (AppendAsyncOwned: the
// forward input reads a request into pooled memory and hands it over with
// the chunk), for the cursors that read right behind the writer (an output
// keeping up with its inputs, the usual case): such a cursor takes its next
// record from the cache instead of reading back from the page cache what
// was written a moment ago and checking its CRC again. The memory goes to
// the last open cursor that reads the record (the others get a copy), so
// that with one output a chunk travels from the input's socket to the
// output's without a copy in user space: it is read into that memory,
// written from it to the segment and sent from it.
//
// The cache is only an optimisation: a cursor that is not exactly at a
// cached record (it lags, was reset or moved) reads the segment as before,
// and so does every cursor when the cache is full (records are then not
// cached until the cursors have read what it holds). Records are cached
// only while the partition has an open cursor, and only after their write
// succeeded; readers still see only what is durable (the cache is looked up
// after the read limit). All of it is guarded by p.mu.

// tailEntry is one cached record: its frame's place in its segment, and its
// payload: the entries in the memory the appender handed over, the meta
// copied.
type tailEntry struct {
	off     uint64
	seg     *segment
	pos     int64 // the frame's position in seg
	size    int64 // the frame's size
	epoch   uint32
	tag     string
	count   int
	meta    []byte // nil: none
	entries []byte
	buf     *[]byte // the memory entries lie in
	bytes   int64   // cap(*buf), as accounted
}

// tailShare is how many bytes of records each partition's cache may hold:
// an equal share of WithTailCache.
func (o *options) tailShare() int64 {
	if o.tailCache <= 0 || o.partitions <= 0 {
		return 0
	}
	return o.tailCache / int64(o.partitions)
}

// tailRoomLocked returns how many bytes of records the cache may take now:
// 0 without an open cursor to read them. Callers hold p.mu.
func (p *partition) tailRoomLocked() int64 {
	share := p.b.opts.tailShare()
	if share <= 0 || !p.anyOpenCursorLocked() {
		return 0
	}
	return share - p.tailBytes
}

// anyOpenCursorLocked reports whether an output has the partition open.
// Callers hold p.mu.
func (p *partition) anyOpenCursorLocked() bool {
	for _, c := range p.cursors {
		c.mu.Lock()
		open := c.open
		c.mu.Unlock()
		if open {
			return true
		}
	}
	return false
}

// minReadLocked returns the lowest next offset to read of the open cursors
// other than except, and whether there is one. Callers hold p.mu.
func (p *partition) minReadLocked(except *Cursor) (uint64, bool) {
	var lowest uint64
	found := false
	for _, c := range p.cursors {
		if c == except {
			continue
		}
		c.mu.Lock()
		open, r := c.open, c.readOff
		c.mu.Unlock()
		if open && (!found || r < lowest) {
			lowest, found = r, true
		}
	}
	return lowest, found
}

// addTailLocked caches the records just published and forgets those every
// open cursor has read. Callers hold p.mu.
func (p *partition) addTailLocked(es []tailEntry) {
	for _, e := range es {
		if e.entries != nil {
			p.tail = append(p.tail, e)
			p.tailBytes += e.bytes
		}
	}
	if len(p.tail) == 0 {
		return
	}
	lowest, open := p.minReadLocked(nil)
	i := 0
	for i < len(p.tail) && (!open || p.tail[i].off < lowest) {
		i++
	}
	p.dropTailLocked(i)
}

// dropTailLocked forgets the first n cached records. Callers hold p.mu.
func (p *partition) dropTailLocked(n int) {
	for i := range n {
		putRecBuf(p.tail[i].buf)
		p.tailBytes -= p.tail[i].bytes
	}
	m := copy(p.tail, p.tail[n:])
	clear(p.tail[m:])
	p.tail = p.tail[:m]
}

// fromTailLocked returns record off from the tail cache when c is
// positioned at its frame and the frame is readable (below limit): the
// cached memory itself when no other open cursor still has to read it,
// else a copy. It moves c past the frame. Callers hold p.mu and c.nextMu.
func (c *Cursor) fromTailLocked(off uint64, limit int64) (Record, bool) {
	p := c.p
	i := 0
	for i < len(p.tail) && p.tail[i].off < off {
		i++
	}
	if i == len(p.tail) {
		return Record{}, false
	}
	e := p.tail[i]
	if e.off != off || e.seg != c.seg || e.pos != c.pos || e.pos+e.size > limit || off < c.expect {
		return Record{}, false
	}
	rec := Record{Partition: p.id, Offset: off, Epoch: p.b.recordEpoch(e.epoch), Tag: e.tag, Count: e.count}
	if lowest, others := p.minReadLocked(c); others && lowest <= off {
		n := len(e.meta) + len(e.entries)
		b, h := getRecBuf(n)
		copy(b, e.meta)
		copy(b[len(e.meta):], e.entries)
		rec.Entries, rec.buf = b[len(e.meta):n], h
		if e.meta != nil {
			rec.Meta = b[:len(e.meta)]
		}
	} else {
		rec.Entries, rec.Meta, rec.buf = e.entries, e.meta, e.buf
		p.tailBytes -= e.bytes
		last := len(p.tail) - 1
		copy(p.tail[i:], p.tail[i+1:])
		p.tail[last] = tailEntry{}
		p.tail = p.tail[:last]
	}
	c.pos = e.pos + e.size
	c.expect = off + 1
	p.b.m.tailHits.Add(1)
	return rec, true
}
