package forward

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// dedup remembers the ids of the chunks this input stored, so that a chunk
// resent (its ack was lost, the sender crashed and restarted) is
// acknowledged again without being stored twice. The window is bounded (the
// oldest ids are forgotten first) and survives restarts: every committed id
// is appended to a journal with write(2) before its ack is sent, so a
// process kill loses none; the journal is compacted to the window by
// writing a new file and renaming it over the old one, outside the lock
// every connection takes (see compact). A failed compaction is reported and
// retried later; the journal in use stays, so dedup never turns off.
//
// Sizing: an id is forgotten only when window newer ids were committed
// after it; there is no expiry by age, so a lightly loaded input remembers
// ids far longer than it must. retention is how long every id must be
// remembered for the resends a sender can make (see Config.DedupRetention):
// an id forgotten younger than that is reported (onEvict with early set),
// since a resend of it would be stored again. Ids loaded from the journal
// count as committed when the input started. The ring of ids grows with
// use up to window, so memory follows what is remembered: about 110 bytes
// per id (TestDedupBytesPerID).
//
// A resend that arrives while the first copy still waits for the buffer
// (or for its id to be journaled) waits with it and gets the same answer.
//
// Journal writes are grouped: finish appends its id to a shared pending
// buffer; one finisher at a time writes everything pending with one
// write(2) (group commit), and each finisher returns, and its id counts as
// committed, only once a write that contained it returned. Finishes that
// complete together (the writer goroutines of many connections answering
// the acks of one fdatasync) thus share one write(2).
type dedup struct {
	mu        sync.Mutex
	window    int
	retention time.Duration
	// ids maps every id known: committed ones to the shared committedEntry
	// (no allocation per remembered id), in-flight ones to their own entry.
	ids     map[string]*dedupEntry
	ring    []ringSlot // committed ids, oldest first from head; grows to window
	head    int
	size    int
	path    string
	journal *os.File
	lines   int // records in the journal
	free    []*dedupEntry

	// Group commit of journal records (under mu): pend gathers batch
	// pendSeq; flushing is set while a finisher writes a batch outside
	// mu; flushed is the last batch written. flushed and compaction's swap
	// wait on cond.
	pend     []byte
	spare    []byte
	pendSeq  uint64
	flushed  uint64
	flushing bool
	cond     sync.Cond
	writes   int // journal writes of finish (benchmark)

	// Compaction runs in its own goroutine: the snapshot is taken under mu,
	// written and fsynced outside it, and swapped in under mu with the ids
	// committed meanwhile (tail) appended. A failure is reported and
	// retried after retryIn; the journal in use stays as it was.
	compacting bool
	tail       []byte    // journal records appended while compacting
	retryAt    time.Time // no compaction before this after a failure
	retryIn    time.Duration
	bg         sync.WaitGroup
	onErr      func(error) // reports a failed journal write or compaction
	// onEvict is told the age of every id forgotten to make room, and
	// whether it was younger than retention (called with mu held: it must
	// not block).
	onEvict func(age time.Duration, early bool)
	loading bool // ids come from the journal: evictions are not reported

	// The buffer floor saved beside the journal (floor.go); nil channels
	// when not kept.
	floorStop, floorDone chan struct{}

	// Hooks for tests.
	now    func() time.Time
	create func(name string) (*os.File, error)
	sync   func(*os.File) error
}

type dedupEntry struct {
	id        string // the map key
	committed bool
	finishing bool // its finish waits for the journal: not reused yet
	// staged: the buffer stored the chunk and its id was queued for the
	// journal (in batch seq) from the buffer's ack, before finish; the
	// flush that writes it leaves committing to finish.
	staged  bool
	seq     uint64
	waiters []func(error)
}

// committedEntry is the map value of every committed id: a remembered id
// costs its string, a map slot and a ring slot, no entry of its own.
var committedEntry = &dedupEntry{committed: true}

// ringSlot is a committed id and when it was committed (unix nanoseconds).
type ringSlot struct {
	id string
	at int64
}

// maxFree bounds the entries kept for reuse: about as many as chunks are
// in flight at once.
const maxFree = 4096

// ringMin is the ring's first size; it doubles as ids come, up to window.
const ringMin = 1024

const maxIDLen = 255

const (
	compactRetryMin = time.Second
	compactRetryMax = time.Minute
)

// openDedup opens the window of dir's journal ("": none, nothing
// survives a restart): at most window ids, each expected to be remembered
// for retention (onEvict reports those forgotten sooner; nil: nobody).
func openDedup(dir string, window int, retention time.Duration, onErr func(error), onEvict func(age time.Duration, early bool)) (*dedup, error) {
	d := &dedup{window: window, retention: retention, ids: map[string]*dedupEntry{}, ring: make([]ringSlot, min(window, ringMin)),
		onErr: onErr, onEvict: onEvict, retryIn: compactRetryMin, now: time.Now,
		create: func(name string) (*os.File, error) {
			return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
		},
		sync:    (*os.File).Sync,
		pendSeq: 1,
	}
	d.cond.L = &d.mu
	if d.onErr == nil {
		d.onErr = func(error) {}
	}
	if d.onEvict == nil {
		d.onEvict = func(time.Duration, bool) {}
	}
	if dir == "" {
		return d, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d.path = filepath.Join(dir, "chunk-ids")
	if err := d.load(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	snap := d.snapshotLocked()
	d.mu.Unlock()
	if err := d.compact(snap); err != nil {
		// Keep the journal as it is; compaction is retried later.
		d.onErr(err)
		d.retryAt = time.Now().Add(d.retryIn)
		f, oerr := os.OpenFile(d.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if oerr != nil {
			return nil, fmt.Errorf("dedup journal: %w", oerr)
		}
		d.journal = f
	}
	return d, nil
}

// load reads the journal; a torn last record (a crash mid-write) ends it.
func (d *dedup) load() error {
	f, err := os.Open(d.path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	d.loading = true
	defer func() { d.loading = false }()
	now := d.now().UnixNano()
	r := bufio.NewReader(f)
	buf := make([]byte, maxIDLen)
	for {
		n, err := r.ReadByte()
		if err != nil {
			return nil
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return nil
		}
		if id := string(buf[:n]); d.ids[id] == nil {
			d.commitLocked(&dedupEntry{id: id}, now)
		}
	}
}

// entry returns a fresh entry for id, reusing a forgotten one.
func (d *dedup) entry(id string) *dedupEntry {
	if n := len(d.free); n > 0 {
		e := d.free[n-1]
		d.free = d.free[:n-1]
		e.id = id
		return e
	}
	return &dedupEntry{id: id}
}

// recycle keeps an in-flight entry no longer in the map for reuse, unless
// its finish still has to collect its waiters.
func (d *dedup) recycle(e *dedupEntry) {
	if e.finishing || e == committedEntry || len(d.free) >= maxFree {
		return
	}
	*e = dedupEntry{}
	d.free = append(d.free, e)
}

// commitLocked commits the in-flight entry e at now (unix nanoseconds): its
// id maps to committedEntry and joins the window, the oldest id is
// forgotten when the window is full. e itself is recycled unless its
// finish holds it.
func (d *dedup) commitLocked(e *dedupEntry, now int64) {
	if e.committed {
		return
	}
	if d.size == d.window {
		old := d.ring[d.head]
		if d.ids[old.id] == committedEntry {
			delete(d.ids, old.id)
		}
		if !d.loading {
			age := time.Duration(now - old.at)
			d.onEvict(age, age < d.retention)
		}
		d.ring[d.head] = ringSlot{}
		d.head = (d.head + 1) % len(d.ring)
		d.size--
	} else if d.size == len(d.ring) {
		d.grow()
	}
	d.ring[(d.head+d.size)%len(d.ring)] = ringSlot{id: e.id, at: now}
	d.size++
	d.ids[e.id] = committedEntry
	d.recycle(e)
}

// grow doubles the full ring (up to window), oldest id first at 0.
func (d *dedup) grow() {
	ring := make([]ringSlot, min(2*len(d.ring), d.window))
	n := copy(ring, d.ring[d.head:])
	copy(ring[n:], d.ring[:d.head])
	d.ring, d.head = ring, 0
}

// snapshotLocked returns the window as journal records and starts a
// compaction: records appended from now on are kept in tail too.
func (d *dedup) snapshotLocked() []byte {
	buf := make([]byte, 0, d.size*25)
	for i := range d.size {
		id := d.ring[(d.head+i)%len(d.ring)].id
		buf = append(append(buf, byte(len(id))), id...)
	}
	d.compacting = true
	d.tail = d.tail[:0]
	return buf
}

// compact writes snap (the window when the compaction began) to a new
// journal and fsyncs it without holding mu, then, under mu, appends the
// records committed meanwhile, renames it over the old journal and makes it
// the journal appended to. On failure the old journal stays in use.
func (d *dedup) compact(snap []byte) (err error) {
	tmp := d.path + ".compact"
	f, err := d.create(tmp)
	if err == nil {
		_, err = f.Write(snap)
		if err == nil {
			err = d.sync(f)
		}
		if err != nil {
			f.Close()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// A batch being written goes to the journal in use and into tail once
	// written: wait for it before tail is copied and the journal swapped.
	for d.flushing {
		d.cond.Wait()
	}
	d.compacting = false
	if err == nil {
		if _, err = f.Write(d.tail); err == nil {
			err = os.Rename(tmp, d.path)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		d.retryAt = time.Now().Add(d.retryIn)
		d.retryIn = min(2*d.retryIn, compactRetryMax)
		return fmt.Errorf("dedup journal compaction (retried in %v): %w", d.retryIn, err)
	}
	if d.journal != nil {
		d.journal.Close()
	}
	d.journal = f
	d.lines = d.countRecords(snap) + d.countRecords(d.tail)
	d.tail = d.tail[:0]
	d.retryIn = compactRetryMin
	if dir, derr := os.Open(filepath.Dir(d.path)); derr == nil {
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}

func (d *dedup) countRecords(b []byte) int {
	n := 0
	for len(b) > 0 {
		b = b[min(len(b), 1+int(b[0])):]
		n++
	}
	return n
}

// begin starts storing a chunk id. It returns true if the caller must store
// the chunk and call finish; false if the id is known: then answer is
// called (now if the id is committed, later if it is in flight).
func (d *dedup) begin(id []byte, answer func(error)) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return true
	}
	d.mu.Lock()
	e, ok := d.ids[string(id)]
	if !ok {
		k := string(id)
		d.ids[k] = d.entry(k)
		d.mu.Unlock()
		return true
	}
	if e.committed {
		d.mu.Unlock()
		answer(nil)
		return false
	}
	e.waiters = append(e.waiters, answer)
	d.mu.Unlock()
	return false
}

// finish records the fate of a chunk begun with begin. On success the id is
// journaled (a write(2) that contained it returned) before finish returns
// and before anyone is answered; until then a resend waits.
func (d *dedup) finish(id []byte, err error) {
	if len(id) == 0 || len(id) > maxIDLen {
		return
	}
	d.mu.Lock()
	e := d.ids[string(id)]
	if e == nil || e.committed {
		d.mu.Unlock()
		return
	}
	if err == nil && d.journal != nil {
		my := e.seq
		if !e.staged {
			d.pend = append(append(d.pend, byte(len(id))), id...)
			my = d.pendSeq
		}
		e.finishing = true
		d.waitFlushedLocked(my)
		// The flush that wrote the id committed it, or, for an id staged
		// and written before this finish, left that to us. Either way e
		// leaves the map, and only this finish holds it now.
		if d.ids[e.id] == e {
			d.commitLocked(e, d.now().UnixNano())
		}
		e.finishing = false
	} else if err == nil {
		d.commitLocked(e, d.now().UnixNano())
	} else {
		delete(d.ids, e.id)
	}
	waiters := e.waiters
	e.waiters = nil
	d.recycle(e)
	d.mu.Unlock()
	for _, w := range waiters {
		w(err)
	}
}

// stage queues the id of a chunk the buffer just stored for the journal,
// before its finish (which may run later, on another goroutine): called
// from the buffer's ack, so that every chunk whose ack returned has its id
// in a journal batch no later than the current one (see markFloor).
func (d *dedup) stage(id []byte) {
	if len(id) == 0 || len(id) > maxIDLen || d.journal == nil {
		return
	}
	d.mu.Lock()
	if e := d.ids[string(id)]; e != nil && !e.committed && !e.staged && !e.finishing {
		d.pend = append(append(d.pend, byte(len(id))), id...)
		e.staged, e.seq = true, d.pendSeq
	}
	d.mu.Unlock()
}

// waitFlushedLocked returns once journal batch seq is written, flushing
// it itself when no one else is.
func (d *dedup) waitFlushedLocked(seq uint64) {
	for d.flushed < seq {
		if d.flushing {
			d.cond.Wait()
		} else {
			d.flushLocked()
		}
	}
}

// markFloor takes the buffer floor (floor, under mu) and returns it once
// every id staged or finished before it is written to the journal: every
// stored chunk whose id the journal lacks is at or after that floor.
func (d *dedup) markFloor(floor func() []uint64) []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := floor()
	target := d.pendSeq - 1
	if len(d.pend) > 0 {
		target = d.pendSeq
	}
	d.waitFlushedLocked(target)
	return f
}

// recover commits ids found in the buffer's records after the journal's
// floor (a kill came between storing a chunk and journaling its id), and
// journals them.
func (d *dedup) recover(ids [][]byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.loading = true
	now := d.now().UnixNano()
	for _, id := range ids {
		if len(id) == 0 || len(id) > maxIDLen || d.ids[string(id)] != nil {
			continue
		}
		d.commitLocked(&dedupEntry{id: string(id)}, now)
		if d.journal != nil {
			d.pend = append(append(d.pend, byte(len(id))), id...)
		}
	}
	d.loading = false
	if len(d.pend) > 0 {
		d.waitFlushedLocked(d.pendSeq)
	}
}

// flushLocked writes the pending batch to the journal with one write(2),
// without holding mu, then commits its ids; called with mu held and no
// flush running.
func (d *dedup) flushLocked() {
	buf, seq, f := d.pend, d.pendSeq, d.journal
	d.pend = d.spare[:0]
	d.spare = nil
	d.pendSeq++
	d.flushing = true
	d.mu.Unlock()
	_, werr := f.Write(buf)
	d.mu.Lock()
	d.writes++
	d.flushing = false
	d.flushed = seq
	d.cond.Broadcast()
	n := 0
	now := d.now().UnixNano()
	for b := buf; len(b) > 0; n++ {
		rec := b[1 : 1+int(b[0])]
		b = b[1+len(rec):]
		if e := d.ids[string(rec)]; e != nil && (e.finishing || !e.staged) {
			d.commitLocked(e, now)
		}
	}
	if werr == nil {
		d.lines += n
	} else {
		d.onErr(fmt.Errorf("dedup journal: %w", werr))
	}
	if d.compacting {
		d.tail = append(d.tail, buf...)
	} else if d.lines > 2*d.window && time.Now().After(d.retryAt) {
		snap := d.snapshotLocked()
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			if err := d.compact(snap); err != nil {
				d.onErr(err)
			}
		}()
	}
	if cap(buf) <= 64<<10 {
		d.spare = buf[:0]
	}
}

func (d *dedup) close() error {
	if d.floorStop != nil {
		close(d.floorStop)
		<-d.floorDone
		d.floorStop = nil
	}
	d.bg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.flushing {
		d.cond.Wait()
	}
	if d.journal == nil {
		return nil
	}
	err := d.journal.Close()
	d.journal = nil
	return err
}
