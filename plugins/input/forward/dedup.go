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
	mu      sync.Mutex
	window  int
	ids     map[string]*dedupEntry
	ring    []string // committed ids, oldest first from head
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

	// Hooks for tests.
	create func(name string) (*os.File, error)
	sync   func(*os.File) error
}

type dedupEntry struct {
	id        string // the map key
	committed bool
	finishing bool // its finish waits for the journal: not reused yet
	waiters   []func(error)
}

const maxIDLen = 255

const (
	compactRetryMin = time.Second
	compactRetryMax = time.Minute
)

func openDedup(dir string, window int, onErr func(error)) (*dedup, error) {
	d := &dedup{window: window, ids: map[string]*dedupEntry{}, ring: make([]string, window), onErr: onErr, retryIn: compactRetryMin,
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
		d.remember(string(buf[:n]))
	}
}

// remember adds a committed id to the window, forgetting the oldest.
func (d *dedup) remember(id string) {
	e, ok := d.ids[id]
	if !ok {
		e = d.entry(id)
		d.ids[id] = e
	}
	d.commitLocked(e)
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

// forget removes e from the map and keeps it for reuse, unless its finish
// still has to collect its waiters (a window smaller than a batch).
func (d *dedup) forget(e *dedupEntry) {
	delete(d.ids, e.id)
	if e.finishing {
		return
	}
	*e = dedupEntry{}
	d.free = append(d.free, e)
}

// commitLocked marks e committed and adds it to the window, forgetting the
// oldest.
func (d *dedup) commitLocked(e *dedupEntry) {
	if e.committed {
		return
	}
	if d.size == d.window {
		old := d.ring[d.head]
		if oe, ok := d.ids[old]; ok && oe.committed {
			d.forget(oe)
		}
		d.ring[d.head] = ""
		d.head = (d.head + 1) % d.window
		d.size--
	}
	d.ring[(d.head+d.size)%d.window] = e.id
	d.size++
	e.committed = true
}

// snapshotLocked returns the window as journal records and starts a
// compaction: records appended from now on are kept in tail too.
func (d *dedup) snapshotLocked() []byte {
	buf := make([]byte, 0, d.size*25)
	for i := range d.size {
		id := d.ring[(d.head+i)%d.window]
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
		d.pend = append(append(d.pend, byte(len(id))), id...)
		e.finishing = true
		my := d.pendSeq
		for d.flushed < my {
			if d.flushing {
				d.cond.Wait()
			} else {
				d.flushLocked()
			}
		}
		e.finishing = false
		if d.ids[string(id)] != e {
			// Committed and forgotten again while this finish waited (a
			// window smaller than a batch): answer, and leave e to the GC.
			waiters := e.waiters
			d.mu.Unlock()
			for _, w := range waiters {
				w(nil)
			}
			return
		}
	}
	waiters := e.waiters
	e.waiters = nil
	if err != nil {
		d.forget(e)
	} else {
		d.commitLocked(e) // done by flushLocked with a journal
	}
	d.mu.Unlock()
	for _, w := range waiters {
		w(err)
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
	for b := buf; len(b) > 0; n++ {
		rec := b[1 : 1+int(b[0])]
		b = b[1+len(rec):]
		if e := d.ids[string(rec)]; e != nil {
			d.commitLocked(e)
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
