package broker

import (
	"os"
	"sync"
	"time"
)

// segment is one segment file of a partition.
type segment struct {
	p    *partition
	base uint64
	path string
	// version of the segment's format (segVersion for the segments this
	// code creates); set before the segment is shared
	version uint16
	// reused: the file was a consumed segment before (header flag
	// segFlagReused); past size it may hold bytes of that use
	reused bool

	// guarded by p.mu
	size int64 // bytes of header and complete frames (readers stop here)
	// credit: bytes of a reused file past size, which the size accounting
	// counts (the disk holds them) until records written over them or the
	// cut at seal take their place
	credit   int64
	next     uint64 // offset after the last record
	sealed   bool
	sealTime time.Time
	deleted  bool
	records  int64 // data records, -1 when not scanned
	events   int64 // events, -1 when not scanned
	index    []indexEntry
	bad      []badSpan // known bad spans (counted once)

	// fmu: a leaf (lock order: "Locks" in doc.go), taken under p.wmu, b.dropMu,
	// c.nextMu and p.mu; held across open(2) and close(2) of f.
	fmu  sync.Mutex
	f    segFile
	refs int
}

// acquire returns the open file of the segment, opening it read-only if
// needed; release must follow.
func (s *segment) acquire() (segFile, error) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.f == nil {
		f, err := s.p.b.opts.openFile(s.path, os.O_RDONLY)
		if err != nil {
			return nil, err
		}
		s.f = f
	}
	s.refs++
	return s.f, nil
}

// isOpen reports whether anyone holds the segment's file open.
func (s *segment) isOpen() bool {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.refs > 0 || s.f != nil
}

// file returns the open file, if any; the caller holds a reference.
func (s *segment) file() segFile {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.f
}

// adopt makes f the segment's file with one reference (the writer's).
func (s *segment) adopt(f segFile) {
	s.fmu.Lock()
	s.f = f
	s.refs++
	s.fmu.Unlock()
}

func (s *segment) release() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.refs <= 0 {
		return // closed by Close
	}
	s.refs--
	if s.refs == 0 && s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
}

// indexLookup returns the position to start from to find offset off: the
// last index entry at or before it, else the first frame. Callers hold p.mu.
func (s *segment) indexLookup(off uint64) indexEntry {
	e := indexEntry{off: s.base, pos: segHeaderSize}
	lo, hi := 0, len(s.index)
	for lo < hi {
		m := (lo + hi) / 2
		if s.index[m].off <= off {
			e = s.index[m]
			lo = m + 1
		} else {
			hi = m
		}
	}
	return e
}

// addIndex records that the frame with offset off starts at pos, if it is
// far enough past the last entry. Callers hold p.mu.
func (s *segment) addIndex(off uint64, pos int64) {
	n := len(s.index)
	if n == 0 {
		if pos-segHeaderSize >= indexEvery {
			s.index = append(s.index, indexEntry{off, pos})
		}
		return
	}
	if last := s.index[n-1]; pos-last.pos >= indexEvery && off > last.off {
		s.index = append(s.index, indexEntry{off, pos})
	}
}

// badAt returns the known bad span starting at pos. Callers hold p.mu.
func (s *segment) badAt(pos int64) (badSpan, bool) {
	for _, b := range s.bad {
		if b.start == pos {
			return b, true
		}
	}
	return badSpan{}, false
}
