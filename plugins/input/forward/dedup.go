package forward

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/logship/logship/internal/atomicfile"
)

// dedup remembers the ids of the chunks this input stored, so that a chunk
// resent (its ack was lost, the sender crashed and restarted) is
// acknowledged again without being stored twice. The window is bounded (the
// oldest ids are forgotten first) and survives restarts: every committed id
// is appended to a journal with write(2) before its ack is sent, so a
// process kill loses none; the journal is compacted to the window by
// writing a new file and renaming it over the old one.
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
}

type dedupEntry struct {
	committed bool
	waiters   []func(error)
}

const maxIDLen = 255

func openDedup(dir string, window int) (*dedup, error) {
	d := &dedup{window: window, ids: map[string]*dedupEntry{}, ring: make([]string, window)}
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
	if err := d.compact(); err != nil {
		return nil, err
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

// compact rewrites the journal to hold the window only.
func (d *dedup) compact() error {
	if d.journal != nil {
		d.journal.Close()
		d.journal = nil
	}
	buf := make([]byte, 0, d.size*24)
	for i := range d.size {
		id := d.ring[(d.head+i)%d.window]
		buf = append(append(buf, byte(len(id))), id...)
	}
	if err := atomicfile.Write(d.path, buf, 0o644); err != nil {
		return fmt.Errorf("dedup journal: %w", err)
	}
	d.lines = d.size
	var err error
	d.journal, err = os.OpenFile(d.path, os.O_WRONLY|os.O_APPEND, 0o644)
	return err
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
			}
			if d.lines > 2*d.window {
				_ = d.compact()
			}
		}
	}
	d.mu.Unlock()
	for _, w := range waiters {
		w(err)
	}
}

func (d *dedup) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.journal == nil {
		return nil
	}
	err := d.journal.Close()
	d.journal = nil
	return err
}
