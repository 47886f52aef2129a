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
// waits with it and gets the same answer.
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
	committed bool
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
		sync: (*os.File).Sync,
	}
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
	if e, ok := d.ids[id]; ok && e.committed {
		return
	}
	if d.size == d.window {
		old := d.ring[d.head]
		if e, ok := d.ids[old]; ok && e.committed {
			delete(d.ids, old)
		}
		d.head = (d.head + 1) % d.window
		d.size--
	}
	d.ring[(d.head+d.size)%d.window] = id
	d.size++
	if e, ok := d.ids[id]; ok {
		e.committed = true
	} else {
		d.ids[id] = &dedupEntry{committed: true}
	}
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
		d.ids[string(id)] = &dedupEntry{}
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
// journaled before anyone is answered.
func (d *dedup) finish(id []byte, err error) {
	if len(id) == 0 || len(id) > maxIDLen {
		return
	}
	d.mu.Lock()
	e := d.ids[string(id)]
	if e == nil {
		d.mu.Unlock()
		return
	}
	waiters := e.waiters
	e.waiters = nil
	if err != nil {
		delete(d.ids, string(id))
	} else {
		d.remember(string(id))
		if d.journal != nil {
			rec := make([]byte, 0, 1+len(id))
			rec = append(append(rec, byte(len(id))), id...)
			if _, werr := d.journal.Write(rec); werr == nil {
				d.lines++
			} else {
				d.onErr(fmt.Errorf("dedup journal: %w", werr))
			}
			if d.compacting {
				d.tail = append(d.tail, rec...)
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
		}
	}
	d.mu.Unlock()
	for _, w := range waiters {
		w(err)
	}
}

func (d *dedup) close() error {
	d.bg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.journal == nil {
		return nil
	}
	err := d.journal.Close()
	d.journal = nil
	return err
}
