package file

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/logship/logship/pipeline"
)

// The state file's layout: see the package doc.
const (
	stateFileName = "file.state"
	stateMagic    = "LSFO"
	stateVersion  = 2
	stateHeader   = 24
	statePart     = 16
	stateFile     = 28 // and the path's bytes
	stateCRC      = 4
	slotAlign     = 512

	// version 1: one file, without its path (the configured one)
	stateVersion1 = 1
	stateHeader1  = 48
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// partState is what the state records of one partition: the epoch and the
// next offset of the last batch written (next 0: none).
type partState struct{ epoch, next uint64 }

// fileState is what the state records of one open file: its path, its
// identity, and its length after the last batch written to it. A path ""
// (a state of version 1) is the configured path.
type fileState struct {
	path     string
	dev, ino uint64
	length   int64
}

// state is what the output has written: the files it has open, each with
// its length after the last batch, and the last batch of every partition.
type state struct {
	seq   uint64 // of the last state stored
	files []fileState
	parts []partState
}

// written reports whether b was written already (see the package doc):
// its offset is below the next one recorded for its partition, and its
// epoch is the recorded one, an older one of the same incarnation, or 0 (a
// record stored before the buffer had epochs, older than any epoch).
func (s *state) written(b pipeline.Batch) bool {
	if b.Partition < 0 || b.Partition >= len(s.parts) {
		return false
	}
	p := s.parts[b.Partition]
	if b.Offset >= p.next {
		return false
	}
	return b.Epoch == p.epoch || b.Epoch == 0 || (b.Epoch>>32 == p.epoch>>32 && b.Epoch < p.epoch)
}

// advance records that b was written.
func (s *state) advance(b pipeline.Batch) {
	for len(s.parts) <= b.Partition {
		s.parts = append(s.parts, partState{})
	}
	s.parts[b.Partition] = partState{epoch: b.Epoch, next: b.Offset + 1}
}

func (s *state) recordSize() int {
	n := stateHeader + statePart*len(s.parts) + stateCRC
	for i := range s.files {
		n += stateFile + len(s.files[i].path)
	}
	return n
}

// encode appends the slot record of s with sequence number seq.
func (s *state) encode(dst []byte, seq uint64) []byte {
	n := s.recordSize()
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	b := dst[:n]
	copy(b[0:4], stateMagic)
	binary.LittleEndian.PutUint16(b[4:], stateVersion)
	binary.LittleEndian.PutUint16(b[6:], 0)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(s.parts)))
	binary.LittleEndian.PutUint32(b[12:], uint32(len(s.files)))
	binary.LittleEndian.PutUint64(b[16:], seq)
	o := stateHeader
	for _, p := range s.parts {
		binary.LittleEndian.PutUint64(b[o:], p.epoch)
		binary.LittleEndian.PutUint64(b[o+8:], p.next)
		o += statePart
	}
	for i := range s.files {
		f := &s.files[i]
		binary.LittleEndian.PutUint64(b[o:], f.dev)
		binary.LittleEndian.PutUint64(b[o+8:], f.ino)
		binary.LittleEndian.PutUint64(b[o+16:], uint64(f.length))
		binary.LittleEndian.PutUint32(b[o+24:], uint32(len(f.path)))
		o += stateFile + copy(b[o+stateFile:], f.path)
	}
	binary.LittleEndian.PutUint32(b[o:], crc32.Checksum(b[:o], castagnoli))
	return b
}

// decodeSlot reads the record of one slot; ok is false for a slot that
// holds none (zero, torn, or from another format).
func decodeSlot(b []byte) (s state, ok bool) {
	if len(b) < stateHeader+stateCRC || string(b[0:4]) != stateMagic {
		return state{}, false
	}
	switch binary.LittleEndian.Uint16(b[4:]) {
	case stateVersion1:
		return decodeSlot1(b)
	case stateVersion:
	default:
		return state{}, false
	}
	parts := uint64(binary.LittleEndian.Uint32(b[8:]))
	files := uint64(binary.LittleEndian.Uint32(b[12:]))
	o := uint64(stateHeader)
	if parts > uint64(len(b))/statePart || files > uint64(len(b))/stateFile {
		return state{}, false
	}
	o += parts * statePart
	s = state{seq: binary.LittleEndian.Uint64(b[16:]), parts: make([]partState, parts), files: make([]fileState, files)}
	if o+files*stateFile+stateCRC > uint64(len(b)) {
		return state{}, false
	}
	for i := range s.parts {
		p := b[stateHeader+statePart*i:]
		s.parts[i] = partState{epoch: binary.LittleEndian.Uint64(p), next: binary.LittleEndian.Uint64(p[8:])}
	}
	for i := range s.files {
		if o+stateFile+stateCRC > uint64(len(b)) {
			return state{}, false
		}
		f := b[o:]
		n := uint64(binary.LittleEndian.Uint32(f[24:]))
		if o+stateFile+n+stateCRC > uint64(len(b)) {
			return state{}, false
		}
		s.files[i] = fileState{
			dev:    binary.LittleEndian.Uint64(f),
			ino:    binary.LittleEndian.Uint64(f[8:]),
			length: int64(binary.LittleEndian.Uint64(f[16:])),
			path:   string(f[stateFile : stateFile+n]),
		}
		o += stateFile + n
	}
	if binary.LittleEndian.Uint32(b[o:]) != crc32.Checksum(b[:o], castagnoli) {
		return state{}, false
	}
	return s, true
}

// decodeSlot1 reads a slot of version 1: header of 48 bytes with the one
// file's device, inode and length at 24, 32 and 40, then the partitions.
func decodeSlot1(b []byte) (s state, ok bool) {
	if len(b) < stateHeader1+stateCRC {
		return state{}, false
	}
	parts := binary.LittleEndian.Uint32(b[8:])
	if uint64(parts) > uint64(len(b)-stateHeader1-stateCRC)/statePart {
		return state{}, false
	}
	n := stateHeader1 + statePart*int(parts) + stateCRC
	if binary.LittleEndian.Uint32(b[n-stateCRC:]) != crc32.Checksum(b[:n-stateCRC], castagnoli) {
		return state{}, false
	}
	s = state{
		seq: binary.LittleEndian.Uint64(b[16:]),
		files: []fileState{{
			dev:    binary.LittleEndian.Uint64(b[24:]),
			ino:    binary.LittleEndian.Uint64(b[32:]),
			length: int64(binary.LittleEndian.Uint64(b[40:])),
		}},
		parts: make([]partState, parts),
	}
	for i := range s.parts {
		o := stateHeader1 + statePart*i
		s.parts[i] = partState{epoch: binary.LittleEndian.Uint64(b[o:]), next: binary.LittleEndian.Uint64(b[o+8:])}
	}
	return s, true
}

// stateStore is the state file: two slots written in turn.
type stateStore struct {
	path string
	f    *os.File
	slot int // bytes per slot
	buf  []byte
}

// errNoState says that a state file exists but holds no valid slot.
var errNoState = errors.New("no valid state slot")

// openStateStore opens (or creates) the state file in dir and reads the
// newest valid state. A file without a valid slot yields the zero state
// and errNoState along with a usable store: the caller logs it and goes on
// without (at-least-once for what was written before).
func openStateStore(dir string) (*stateStore, state, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, state{}, err
	}
	path := filepath.Join(dir, stateFileName)
	st := &stateStore{path: path}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, state{}, err
	}
	var best state
	found := false
	if n := len(data); n > 0 && n%(2*slotAlign) == 0 {
		st.slot = n / 2
		for i := 0; i < 2; i++ {
			if s, ok := decodeSlot(data[i*st.slot : (i+1)*st.slot]); ok && (!found || s.seq > best.seq) {
				best, found = s, true
			}
		}
	}
	if st.slot == 0 || !found {
		// new, or unusable: lay the file out again (empty slots)
		best = state{}
		if err := st.rewrite(nil, 0, slotAlign); err != nil {
			return nil, state{}, err
		}
		if len(data) > 0 {
			return st, best, errNoState
		}
		return st, best, nil
	}
	if st.f, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
		return nil, state{}, err
	}
	return st, best, nil
}

// slotSizeFor is the smallest power of two >= slotAlign that holds a
// record of size bytes (a power of two: a slot of a page or less never
// spans a page).
func slotSizeFor(size int) int {
	n := slotAlign
	for n < size {
		n *= 2
	}
	return n
}

// save stores s with the next sequence number: one pwrite into the slot
// that does not hold the newest state, and an fdatasync when sync is set.
// On success s.seq is the new sequence number; on failure s is unchanged
// and the other slot still holds the previous state.
func (st *stateStore) save(s *state, sync bool) error {
	seq := s.seq + 1
	if size := s.recordSize(); size > st.slot {
		if err := st.rewrite(s, seq, slotSizeFor(size)); err != nil {
			return err
		}
		s.seq = seq
		return nil
	}
	st.buf = s.encode(st.buf, seq)
	if _, err := st.f.WriteAt(st.buf, int64(seq%2)*int64(st.slot)); err != nil {
		return fmt.Errorf("write %s: %w", st.path, err)
	}
	if sync {
		if err := unix.Fdatasync(int(st.f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", st.path, err)
		}
	}
	s.seq = seq
	return nil
}

// rewrite lays the file out again with slots of slot bytes, s (if any)
// in the slot of seq: temporary file, fsync, rename, fsync of the
// directory.
func (st *stateStore) rewrite(s *state, seq uint64, slot int) error {
	data := make([]byte, 2*slot)
	if s != nil {
		rec := s.encode(nil, seq)
		copy(data[int(seq%2)*slot:], rec)
	}
	tmp := st.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, st.path); err != nil {
		f.Close()
		return err
	}
	if err := syncDir(filepath.Dir(st.path)); err != nil {
		f.Close()
		return err
	}
	if st.f != nil {
		st.f.Close()
	}
	st.f, st.slot = f, slot
	return nil
}

func (st *stateStore) close() error {
	if st == nil || st.f == nil {
		return nil
	}
	err := st.f.Close()
	st.f = nil
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// fileID is the device and inode of an open file, and its size.
func fileID(f *os.File) (dev, ino uint64, size int64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, 0, 0, fmt.Errorf("fstat %s: %w", f.Name(), err)
	}
	return uint64(st.Dev), st.Ino, st.Size, nil //nolint:unconvert // widths differ per OS
}
