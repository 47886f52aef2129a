package tail

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/logship/logship/internal/atomicfile"
)

// fileKey identifies a file on this host while it exists: device and
// inode. An inode is reused once a deleted file is closed, so a key is
// only trusted together with a fingerprint of the file's first bytes.
type fileKey struct {
	dev, ino uint64
}

// fingerprintBytes is how many leading bytes identify a file's content. A
// file shorter than that is fingerprinted over what it has, and the
// fingerprint grows with it up to this size.
const fingerprintBytes = 256

// fingerprint is FNV-1a over a file's first n bytes.
type fingerprint struct {
	n   int
	sum uint64
}

func (fp fingerprint) full() bool { return fp.n >= fingerprintBytes }

func fnv1a(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// readFingerprint reads the first min(size, fingerprintBytes) bytes of f
// into scratch (of at least fingerprintBytes) and returns them.
func readHead(f *os.File, size int64, scratch []byte) ([]byte, error) {
	n := int(min(size, fingerprintBytes))
	got, err := f.ReadAt(scratch[:n], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return scratch[:got], nil
}

// matches reports whether head starts with the content fp was taken over.
func (fp fingerprint) matches(head []byte) bool {
	return len(head) >= fp.n && fnv1a(head[:fp.n]) == fp.sum
}

// checkpoint is what is remembered of one file: its identity and the
// offset after the last line whose chunk the buffer made durable.
type checkpoint struct {
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	FPLen  int    `json:"fp_len"`
	FP     uint64 `json:"fp"`
	Offset int64  `json:"offset"`
	Path   string `json:"path"`
}

func (c *checkpoint) key() fileKey             { return fileKey{c.Dev, c.Ino} }
func (c *checkpoint) fingerprint() fingerprint { return fingerprint{c.FPLen, c.FP} }

// checkpointFile is the on-disk form, checkpoints.json.
type checkpointFile struct {
	Version int          `json:"version"`
	SavedAt int64        `json:"saved_at_unix_nano"`
	Files   []checkpoint `json:"files"`
}

const checkpointVersion = 1

// store holds the checkpoints of one input in memory and writes them to
// disk atomically (temp file, fsync, rename, fsync of the directory) when
// asked, never per line. Commits come from ack callbacks, so every method
// is short and never does I/O under the lock except save.
type store struct {
	mu      sync.Mutex
	path    string // "" keeps checkpoints in memory only
	m       map[fileKey]*checkpoint
	dirty   bool
	existed bool      // a checkpoint file was found: not the first run
	savedAt time.Time // when the file found at open was written
	closed  bool
	saveMu  sync.Mutex // serialises save
}

func openStore(dir string) (*store, error) {
	s := &store{m: map[fileKey]*checkpoint{}}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint dir: %w", err)
	}
	s.path = filepath.Join(dir, "checkpoints.json")
	_ = os.Remove(s.path + ".tmp")
	b, err := os.ReadFile(s.path)
	if os.IsNotExist(err) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	var cf checkpointFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("%s is corrupt (%w); move it away to start over (files are then read as new)", s.path, err)
	}
	if cf.Version != checkpointVersion {
		return nil, fmt.Errorf("%s has version %d, want %d", s.path, cf.Version, checkpointVersion)
	}
	s.existed = true
	s.savedAt = time.Unix(0, cf.SavedAt)
	for i := range cf.Files {
		c := cf.Files[i]
		s.m[c.key()] = &c
	}
	return s, nil
}

func (s *store) get(k fileKey) (checkpoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[k]
	if !ok {
		return checkpoint{}, false
	}
	return *c, true
}

// set records a file's checkpoint (a new file, a new content generation
// after a truncation, or a commit).
func (s *store) set(k fileKey, path string, fp fingerprint, off int64) {
	s.mu.Lock()
	c := s.m[k]
	if c == nil {
		c = &checkpoint{Dev: k.dev, Ino: k.ino}
		s.m[k] = c
	}
	if c.Offset != off || c.FPLen != fp.n || c.FP != fp.sum || c.Path != path {
		c.Offset, c.FPLen, c.FP, c.Path = off, fp.n, fp.sum, path
		s.dirty = true
	}
	s.mu.Unlock()
}

func (s *store) del(k fileKey) {
	s.mu.Lock()
	if _, ok := s.m[k]; ok {
		delete(s.m, k)
		s.dirty = true
	}
	s.mu.Unlock()
}

func (s *store) keys() []fileKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]fileKey, 0, len(s.m))
	for k := range s.m {
		out = append(out, k)
	}
	return out
}

// save writes the checkpoints if they changed since the last save.
func (s *store) save() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	if !s.dirty || s.path == "" || s.closed {
		s.mu.Unlock()
		return nil
	}
	cf := checkpointFile{Version: checkpointVersion, SavedAt: time.Now().UnixNano(), Files: make([]checkpoint, 0, len(s.m))}
	for _, c := range s.m {
		cf.Files = append(cf.Files, *c)
	}
	s.dirty = false
	s.mu.Unlock()
	sort.Slice(cf.Files, func(i, j int) bool { return cf.Files[i].Path < cf.Files[j].Path })
	b, err := json.MarshalIndent(&cf, "", " ")
	if err == nil {
		err = atomicfile.Write(s.path, b, 0o644)
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return fmt.Errorf("save checkpoints: %w", err)
	}
	return nil
}

// close saves a last time; later commits (late acks) change memory only.
func (s *store) close() error {
	err := s.save()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return err
}
