package forward

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// dedup remembers the ids of the chunks this input stored, so that a chunk
// resent (its ack was lost, the sender crashed and restarted) is
// acknowledged again without being stored twice. An id is remembered for
// retention after it was committed (see Config.DedupRetention), then
// forgotten; at most window ids are remembered, the oldest forgotten first
// to make room. Memory thus follows the chunk rate times retention, bounded
// by window: an id costs about 28 bytes (its 128-bit hash and commit time
// in a ring, and an index slot: idStore, TestDedupBytesPerID). An id
// forgotten to make room while younger than retention is reported
// (onEvict with early set), since a resend of it would be stored again;
// also at start, when the journal holds more live ids than window.
//
// Expiry is amortised: every commit first forgets up to two expired ids at
// the ring's head, and a sweeper forgets the rest every second, in batches
// that release the lock in between; nothing scans the window.
//
// The window survives restarts: every committed id is appended to a
// journal with write(2) before its ack is sent, so a process kill loses
// none; the journal is compacted to the live ids by writing a new file and
// renaming it over the old one, outside the lock every connection takes
// (see compact). A failed compaction is reported and retried later; the
// journal in use stays, so dedup never turns off.
//
// Journal format (data_dir/input/NAME/chunk-ids): a 32-byte header, the
// magic journalMagic then the SipHash key of the ids' hashes (two
// little-endian uint64), then records of 24 bytes: the id's hash (two
// little-endian uint64) and its commit time (unix milliseconds,
// little-endian int64). A torn last record (a crash mid-write) is ignored,
// and so are records older than retention when it is read. A journal of
// logship before this format (length-prefixed ids, first byte never 0) is
// read, hashed under a new key and rewritten at start.
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
	key       hashKey
	ids       *idStore               // committed ids
	inflight  map[idHash]*dedupEntry // ids whose chunk is being stored
	path      string
	journal   *os.File
	lines     int // records in the journal
	free      []*dedupEntry

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

	// Compaction runs in its own goroutine: the live ids are copied from
	// the ring a piece at a time under mu and written outside it, the file
	// fsynced, and swapped in under mu with the records written to the old
	// journal meanwhile (tail) appended. A failure is reported and retried
	// after retryIn; the journal in use stays as it was.
	compacting bool
	tail       []byte    // journal records appended while compacting
	retryAt    time.Time // no compaction before this after a failure
	retryIn    time.Duration
	bg         sync.WaitGroup
	onErr      func(error) // reports a failed journal write or compaction
	// onEvict is told the age of every id forgotten, and whether it was
	// forgotten younger than retention, to make room (called with mu held:
	// it must not block).
	onEvict func(age time.Duration, early bool)
	// loading: ids come from the journal (or the buffer): evictions are
	// reported only when early.
	loading bool

	// The buffer floor saved beside the journal (floor.go), and the
	// sweeper; nil channels when not running.
	floorStop, floorDone chan struct{}
	sweepStop, sweepDone chan struct{}

	// Hooks for tests. now is called with mu held only.
	now    func() time.Time
	create func(name string) (*os.File, error)
	sync   func(*os.File) error
}

// dedupEntry is an id whose chunk is being stored (in flight).
type dedupEntry struct {
	h         idHash
	finishing bool // its finish waits for the journal: not reused yet
	// staged: the buffer stored the chunk and its id was queued for the
	// journal (in batch seq) from the buffer's ack, before finish; the
	// flush that writes it leaves committing to finish.
	staged  bool
	seq     uint64
	waiters []func(error)
}

// maxFree bounds the entries kept for reuse: about as many as chunks are
// in flight at once.
const maxFree = 4096

const maxIDLen = 255

const (
	journalMagic  = "\x00logship-ids v2\n" // 16 bytes; a legacy journal never starts with 0
	journalHeader = len(journalMagic) + 16
	recordSize    = 24
)

const (
	compactRetryMin = time.Second
	compactRetryMax = time.Minute
	// compactMin: the journal is compacted once it holds twice the live
	// ids, or twice this many (or window, if smaller) when fewer are live.
	compactMin = 4096
	// compactPiece is how many ids compaction copies per hold of mu.
	compactPiece = 4096
	sweepEvery   = time.Second
	sweepBatch   = 4096 // ids the sweeper forgets per hold of mu
	// commitExpire is how many expired ids a commit forgets first.
	commitExpire = 2
)

// dedupClock is the clock of the windows opened next (tests set it).
var dedupClock = time.Now

// openDedup opens the window of dir's journal ("": none, nothing
// survives a restart): at most window ids, each remembered for retention
// (onEvict reports those forgotten sooner; nil: nobody).
func openDedup(dir string, window int, retention time.Duration, onErr func(error), onEvict func(age time.Duration, early bool)) (*dedup, error) {
	d := &dedup{window: window, retention: retention, ids: newIDStore(window), inflight: map[idHash]*dedupEntry{},
		onErr: onErr, onEvict: onEvict, retryIn: compactRetryMin, now: dedupClock,
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
		d.key = newHashKey()
		d.startSweep()
		return d, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d.path = filepath.Join(dir, "chunk-ids")
	legacy, err := d.load()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	c := d.startCompactionLocked()
	d.mu.Unlock()
	if err := d.compact(c); err != nil {
		if legacy {
			return nil, fmt.Errorf("dedup journal: rewriting %s in the current format: %w", d.path, err)
		}
		// Keep the journal as it is; compaction is retried later.
		d.onErr(err)
		d.retryAt = time.Now().Add(d.retryIn)
		f, oerr := d.openAppend()
		if oerr != nil {
			return nil, fmt.Errorf("dedup journal: %w", oerr)
		}
		d.journal = f
	}
	d.startSweep()
	return d, nil
}

// openAppend opens the journal in use for appending (start-up compaction
// failed): a torn last record (a crash mid-write) is cut off first, so that
// the records appended after it stay aligned; a journal without d's header
// (none, torn, or zero-filled by a power loss: load read it as empty) is
// emptied and given the header, fsynced with its directory.
func (d *dedup) openAppend() (*os.File, error) {
	f, err := os.OpenFile(d.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if err = d.alignJournal(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// alignJournal makes f, the journal opened for appending, d's header plus
// whole records, and sets d.lines.
func (d *dedup) alignJournal(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	hdr := make([]byte, journalHeader)
	if size >= int64(journalHeader) {
		if _, err := f.ReadAt(hdr, 0); err != nil {
			return err
		}
	}
	if size < int64(journalHeader) || !bytes.Equal(hdr, d.header()) {
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Write(d.header()); err != nil {
			return err
		}
		if err := d.sync(f); err != nil {
			return err
		}
		d.lines = 0
		return syncDir(filepath.Dir(d.path))
	}
	records := (size - int64(journalHeader)) / recordSize
	if end := int64(journalHeader) + records*recordSize; end != size {
		if err := f.Truncate(end); err != nil {
			return err
		}
		if err := d.sync(f); err != nil {
			return err
		}
	}
	d.lines = int(records)
	return nil
}

// syncDir fsyncs directory dir (a file created or renamed in it).
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (d *dedup) header() []byte {
	b := append(make([]byte, 0, journalHeader), journalMagic...)
	b = binary.LittleEndian.AppendUint64(b, d.key[0])
	return binary.LittleEndian.AppendUint64(b, d.key[1])
}

func appendRecord(b []byte, h idHash, ms int64) []byte {
	b = binary.LittleEndian.AppendUint64(b, h[0])
	b = binary.LittleEndian.AppendUint64(b, h[1])
	return binary.LittleEndian.AppendUint64(b, uint64(ms))
}

func readRecord(b []byte) (idHash, int64) {
	return idHash{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])}, int64(binary.LittleEndian.Uint64(b[16:]))
}

// load reads the journal (and its key): records older than retention are
// skipped; a torn last record (a crash mid-write) ends it. legacy is set
// for a journal of the format before hashes, which must be rewritten.
func (d *dedup) load() (legacy bool, err error) {
	f, err := os.Open(d.path)
	if errors.Is(err, os.ErrNotExist) {
		d.key = newHashKey()
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	d.loading = true
	defer func() { d.loading = false }()
	now := d.now().UnixNano()
	r := bufio.NewReaderSize(f, 64<<10)
	hdr := make([]byte, journalHeader)
	n, err := io.ReadFull(r, hdr)
	if n == 0 || (hdr[0] == 0 && err != nil) || bytes.Count(hdr, []byte{0}) == len(hdr) {
		// Empty, a header torn while it was first written, or one a power
		// loss left zero-filled (its records are under a lost key).
		d.key = newHashKey()
		return false, nil
	}
	if hdr[0] != 0 {
		d.key = newHashKey()
		d.loadLegacy(io.MultiReader(bytes.NewReader(hdr[:n]), r), now)
		return true, nil
	}
	if string(hdr[:len(journalMagic)]) != journalMagic {
		return false, fmt.Errorf("%s: not a chunk-id journal of this version", d.path)
	}
	d.key = hashKey{binary.LittleEndian.Uint64(hdr[len(journalMagic):]), binary.LittleEndian.Uint64(hdr[len(journalMagic)+8:])}
	rec := make([]byte, recordSize)
	for {
		if _, err := io.ReadFull(r, rec); err != nil {
			return false, nil
		}
		h, ms := readRecord(rec)
		if h == (idHash{}) || d.expired(now, ms) || d.ids.contains(h) {
			continue // zeroed by a crash, expired, or already read
		}
		d.rememberLocked(h, ms*1e6)
	}
}

// loadLegacy reads a journal of length-prefixed ids: they count as
// committed now.
func (d *dedup) loadLegacy(r io.Reader, now int64) {
	br := bufio.NewReader(r)
	buf := make([]byte, maxIDLen)
	for {
		n, err := br.ReadByte()
		if err != nil {
			return
		}
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			return
		}
		if n == 0 {
			continue
		}
		if h := d.key.hash(buf[:n]); !d.ids.contains(h) {
			d.rememberLocked(h, now)
		}
	}
}

// expired reports whether an id committed at ms (unix milliseconds) is
// older than retention at now (unix nanoseconds). Times are kept to the
// millisecond, rounded down: an id is kept a millisecond longer so that it
// is never forgotten sooner than retention.
func (d *dedup) expired(now, ms int64) bool {
	return time.Duration(now-ms*1e6) >= d.retention+time.Millisecond
}

// expireLocked forgets up to max ids older than retention at now (unix
// nanoseconds), oldest first, and returns how many.
func (d *dedup) expireLocked(now int64, max int) int {
	n := 0
	for ; n < max && d.ids.len() > 0; n++ {
		_, ms := d.ids.oldest()
		if !d.expired(now, ms) {
			break
		}
		d.ids.pop()
		if !d.loading {
			d.onEvict(time.Duration(now-ms*1e6), false)
		}
	}
	return n
}

// rememberLocked adds h, committed at now (unix nanoseconds), to the
// window: expired ids are forgotten first (a few), then the oldest when
// the window is full.
func (d *dedup) rememberLocked(h idHash, now int64) {
	d.expireLocked(now, commitExpire)
	if d.ids.len() > 0 {
		// The wall clock jumped forward: forget every expired id before the
		// store moves its epoch (its times span at most 49.7 days).
		if _, ms := d.ids.oldest(); now/1e6-ms > math.MaxUint32 {
			d.expireLocked(now, d.ids.len())
		}
	}
	if d.ids.len() >= d.window {
		_, ms := d.ids.oldest()
		d.ids.pop()
		// While loading, only the ids forgotten younger than retention are
		// reported: the journal holds more live ids than window (an agent
		// started with a smaller dedup_window), and a resend of them would
		// be stored twice. (An id forgotten early before the restart that
		// the journal still held, not compacted yet, is reported again.)
		age := time.Duration(now - ms*1e6)
		if d.loading {
			// now is the time of the id read; it is forgotten now.
			age = time.Duration(d.now().UnixNano() - ms*1e6)
		}
		if !d.loading || age < d.retention {
			d.onEvict(age, age < d.retention)
		}
	}
	d.ids.push(h, now/1e6)
}

// entry returns a fresh in-flight entry for h, reusing a forgotten one.
func (d *dedup) entry(h idHash) *dedupEntry {
	if n := len(d.free); n > 0 {
		e := d.free[n-1]
		d.free = d.free[:n-1]
		e.h = h
		return e
	}
	return &dedupEntry{h: h}
}

// recycle keeps an in-flight entry no longer in the map for reuse, unless
// its finish still has to collect its waiters.
func (d *dedup) recycle(e *dedupEntry) {
	if e.finishing || len(d.free) >= maxFree {
		return
	}
	*e = dedupEntry{}
	d.free = append(d.free, e)
}

// commitLocked commits the in-flight entry e at now (unix nanoseconds):
// its id joins the window and leaves the in-flight map; e itself is
// recycled unless its finish holds it.
func (d *dedup) commitLocked(e *dedupEntry, now int64) {
	d.rememberLocked(e.h, now)
	delete(d.inflight, e.h)
	d.recycle(e)
}

// compaction is a journal rewrite in progress: the ring's positions
// [from, to) when it began (those still live when copied are written),
// and the records of in-flight ids already written to the journal but not
// yet committed (their finish has not run).
type compaction struct {
	from, to uint64
	written  []byte
}

// startCompactionLocked starts a compaction: records written to the
// journal from now on are kept in tail too.
func (d *dedup) startCompactionLocked() compaction {
	d.compacting = true
	d.tail = d.tail[:0]
	c := compaction{from: d.ids.first, to: d.ids.next}
	ms := d.now().UnixMilli()
	for h, e := range d.inflight {
		if e.staged && e.seq <= d.flushed {
			c.written = appendRecord(c.written, h, ms)
		}
	}
	return c
}

// compact writes the window (as c found it, less what expired since) to a
// new journal and fsyncs it without holding mu, then, under mu, appends
// the records written meanwhile, renames it over the old journal and makes
// it the journal appended to. On failure the old journal stays in use.
func (d *dedup) compact(c compaction) (err error) {
	tmp := d.path + ".compact"
	f, err := d.create(tmp)
	records := 0
	if err == nil {
		records, err = d.writeWindow(f, c)
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
	d.lines = records + len(d.tail)/recordSize
	d.tail = d.tail[:0]
	d.retryIn = compactRetryMin
	if dir, derr := os.Open(filepath.Dir(d.path)); derr == nil {
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}

// writeWindow writes the header, the ids of c still live (copied from the
// ring compactPiece at a time under mu) and c's written records to f; it
// returns how many records.
func (d *dedup) writeWindow(f *os.File, c compaction) (int, error) {
	buf := append(make([]byte, 0, compactPiece*recordSize), d.header()...)
	n := 0
	for seq := c.from; ; {
		d.mu.Lock()
		seq = max(seq, d.ids.first)
		end := min(c.to, seq+compactPiece)
		for ; seq < end; seq++ {
			buf = appendRecord(buf, d.ids.hashAt(seq), d.ids.timeAt(seq))
			n++
		}
		d.mu.Unlock()
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		buf = buf[:0]
		if seq >= c.to {
			break
		}
	}
	if _, err := f.Write(c.written); err != nil {
		return 0, err
	}
	return n + len(c.written)/recordSize, nil
}

// begin starts storing a chunk id. It returns true if the caller must store
// the chunk and call finish; false if the id is known: then answer is
// called (now if the id is committed, later if it is in flight).
func (d *dedup) begin(id []byte, answer func(error)) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return true
	}
	h := d.key.hash(id)
	d.mu.Lock()
	if e := d.inflight[h]; e != nil {
		e.waiters = append(e.waiters, answer)
		d.mu.Unlock()
		return false
	}
	if d.ids.contains(h) {
		d.mu.Unlock()
		answer(nil)
		return false
	}
	d.inflight[h] = d.entry(h)
	d.mu.Unlock()
	return true
}

// finish records the fate of a chunk begun with begin. On success the id is
// journaled (a write(2) that contained it returned) before finish returns
// and before anyone is answered; until then a resend waits.
func (d *dedup) finish(id []byte, err error) {
	if len(id) == 0 || len(id) > maxIDLen {
		return
	}
	h := d.key.hash(id)
	d.mu.Lock()
	e := d.inflight[h]
	if e == nil {
		d.mu.Unlock()
		return
	}
	e.finishing = true // this finish collects the waiters: e is not reused
	switch {
	case err == nil && d.journal != nil:
		my := e.seq
		if !e.staged {
			d.pend = appendRecord(d.pend, h, d.now().UnixMilli())
			my = d.pendSeq
		}
		d.waitFlushedLocked(my)
		// The flush that wrote the id committed it, or, for an id staged
		// and written before this finish, left that to us. Either way e
		// leaves the map, and only this finish holds it now.
		if d.inflight[h] == e {
			d.commitLocked(e, d.now().UnixNano())
		}
	case err == nil:
		d.commitLocked(e, d.now().UnixNano())
	default:
		delete(d.inflight, h)
	}
	e.finishing = false
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
	if len(id) == 0 || len(id) > maxIDLen {
		return
	}
	h := d.key.hash(id)
	d.mu.Lock()
	if e := d.inflight[h]; e != nil && d.journal != nil && !e.staged && !e.finishing {
		d.pend = appendRecord(d.pend, h, d.now().UnixMilli())
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

// recover commits the ids found in the buffer's records after the
// journal's floor (a kill came between storing a chunk and journaling its
// id) that the window lacks, journals them, and returns how many.
func (d *dedup) recover(ids [][]byte) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.loading = true
	now := d.now().UnixNano()
	n := 0
	for _, id := range ids {
		if len(id) == 0 || len(id) > maxIDLen {
			continue
		}
		h := d.key.hash(id)
		if d.inflight[h] != nil || d.ids.contains(h) {
			continue
		}
		d.rememberLocked(h, now)
		n++
		if d.journal != nil {
			d.pend = appendRecord(d.pend, h, now/1e6)
		}
	}
	d.loading = false
	if len(d.pend) > 0 {
		d.waitFlushedLocked(d.pendSeq)
	}
	return n
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
	for b := buf; len(b) >= recordSize; b = b[recordSize:] {
		n++
		h, _ := readRecord(b)
		if e := d.inflight[h]; e != nil && (e.finishing || !e.staged) {
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
	} else if d.lines > 2*max(d.ids.len(), min(d.window, compactMin)) && time.Now().After(d.retryAt) {
		c := d.startCompactionLocked()
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			if err := d.compact(c); err != nil {
				d.onErr(err)
			}
		}()
	}
	if cap(buf) <= 64<<10 {
		d.spare = buf[:0]
	}
}

// startSweep starts the sweeper: every sweepEvery it forgets the expired
// ids, sweepBatch per hold of mu, so that memory follows the load also
// when no chunk comes.
func (d *dedup) startSweep() {
	d.sweepStop = make(chan struct{})
	d.sweepDone = make(chan struct{})
	go func() {
		defer close(d.sweepDone)
		t := time.NewTicker(sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				d.sweep()
			case <-d.sweepStop:
				return
			}
		}
	}()
}

// sweep forgets every expired id, sweepBatch at a time.
func (d *dedup) sweep() {
	for {
		d.mu.Lock()
		n := d.expireLocked(d.now().UnixNano(), sweepBatch)
		d.mu.Unlock()
		if n < sweepBatch {
			return
		}
	}
}

func (d *dedup) close() error {
	if d.floorStop != nil {
		close(d.floorStop)
		<-d.floorDone
		d.floorStop = nil
	}
	if d.sweepStop != nil {
		close(d.sweepStop)
		<-d.sweepDone
		d.sweepStop = nil
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
