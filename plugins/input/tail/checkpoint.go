package tail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/atomicfile"
)

// checkpoint is what is remembered of one file: its identity and the
// offset after the last line whose chunk the buffer made durable.
type checkpoint struct {
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	FPLen  int    `json:"fp_len"`
	FP     uint64 `json:"fp"`
	Offset int64  `json:"offset"`
	Path   string `json:"path"`
	// TailLen and TailFP hash the bytes just before Offset (up to
	// tailBytes): a file truncated and written again while logship was
	// stopped, with the same first bytes and longer than Offset, is told
	// apart by them. 0 (a checkpoint written before they existed): not
	// checked.
	TailLen int    `json:"tail_len,omitempty"`
	TailFP  uint64 `json:"tail_fp,omitempty"`
	// Sum is FNV-1a over the entry's JSON encoding with Sum 0: an entry
	// whose sum does not match is not trusted. Entries of files written
	// before it existed have none and are trusted only in a file that
	// parses whole.
	Sum uint64 `json:"sum,omitempty"`

	// origin numbers the chain this position belongs to (source.go); it
	// is saved in checkpointFile.Origins, outside the entry, so that the
	// entry and its sum stay what older versions read. 0: not known.
	origin uint64
}

func (c *checkpoint) key() fileKey             { return fileKey{c.Dev, c.Ino} }
func (c *checkpoint) fingerprint() fingerprint { return fingerprint{c.FPLen, c.FP} }
func (c *checkpoint) tail() tailSum            { return tailSum{c.TailLen, c.TailFP} }

// checksum is the Sum the entry should carry.
func (c checkpoint) checksum() uint64 {
	c.Sum = 0
	b, _ := json.Marshal(&c)
	return max(fnv1a(b), 1) // 0 means "no sum"
}

// checkpointFile is the on-disk form, checkpoints.json.
type checkpointFile struct {
	Version int          `json:"version"`
	SavedAt int64        `json:"saved_at_unix_nano"`
	Files   []checkpoint `json:"files"`
	// Floor is pipeline.Positions.Floor, taken before the entries: every
	// chunk whose ack the entries lack is at or after it, and its source
	// is read back from there at the next start. Absent (a file of an
	// older version, or an emitter without positions): from the oldest
	// record. Older versions ignore it and Origins.
	Floor []uint64 `json:"buffer_floor,omitempty"`
	// Origins is the chain of each entry, by "dev:ino".
	Origins map[string]uint64 `json:"origins,omitempty"`
}

func originKey(k fileKey) string {
	return strconv.FormatUint(k.dev, 10) + ":" + strconv.FormatUint(k.ino, 10)
}

const checkpointVersion = 1

// store holds the checkpoints of one input in memory and writes them to
// disk atomically (temp file, fsync, rename, fsync of the directory) when
// asked, never per line. Commits come from ack callbacks, so every method
// is short and does no I/O under mu; save writes the file holding saveMu
// only.
type store struct {
	// mu guards m, dirty and closed. It is the last lock of the order
	// Input.mu, then tailer.mu, then store.mu (doc.go): set is called
	// under a tailer's mu (acked, checkTruncated) and del under Input.mu
	// (scan); no other lock is taken while it is held.
	mu    sync.Mutex
	m     map[fileKey]*checkpoint
	dirty bool
	// closed: saved a last time at Stop; later commits change memory only.
	closed bool
	// saveMu serialises save; it is taken before mu (saveMu, then mu),
	// with no other lock of ours held.
	saveMu sync.Mutex

	// Set by openStore and read-only afterwards.
	path    string    // "" keeps checkpoints in memory only
	existed bool      // a checkpoint file was found: not the first run
	savedAt time.Time // when the file found at open was written
	// recovered is set when the checkpoint file could not be trusted as a
	// whole: files without a trusted checkpoint are read from their start.
	recovered *corruption
	// floor is the buffer floor found in the file (nil: none).
	floor []uint64
	// floorFn, when set, is the emitter's Floor: save takes it before the
	// entries and stores it with them.
	floorFn func() []uint64
}

// corruption says what was wrong with a checkpoint file found at open and
// what was made of it.
type corruption struct {
	reason   error
	aside    string // where the bad file was moved; "" if it could not be
	asideErr error
	kept     int // entries trusted and used
	dropped  int // entries found but not trusted
}

// readFile reads the checkpoint file; tests replace it.
var readFile = os.ReadFile

// openStore loads DATA_DIR/input/NAME/checkpoints.json. A checkpoint file
// that cannot be trusted as a whole (not a regular file, unreadable, not
// JSON, cut short, an unknown version, an entry whose sum does not match)
// does not stop the input: it is moved aside as
// checkpoints.json.corrupt-TIMESTAMP, the entries that can be trusted are
// used, and every other file is read from its start (recovered is set):
// lines are shipped twice rather than lost.
func openStore(dir string) (*store, error) {
	s := &store{m: map[fileKey]*checkpoint{}}
	if dir == "" {
		return s, nil
	}
	s.path = filepath.Join(dir, "checkpoints.json")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		// The checkpoint directory is a file: set it aside like a bad
		// checkpoint file.
		fi, serr := os.Lstat(dir)
		if serr != nil || fi.IsDir() {
			return nil, fmt.Errorf("checkpoint dir: %w", err)
		}
		c := &corruption{reason: fmt.Errorf("%s is not a directory", dir)}
		aside := dir + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
		if rerr := os.Rename(dir, aside); rerr != nil {
			return nil, fmt.Errorf("checkpoint dir: %w (and it cannot be moved aside: %w)", err, rerr)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("checkpoint dir: %w", err)
		}
		c.aside = aside
		s.recovered, s.existed, s.dirty = c, true, true
		return s, nil
	}
	// Temporary files of a save cut short by a crash.
	_ = os.Remove(s.path + ".tmp")
	if tmps, err := filepath.Glob(filepath.Join(dir, ".checkpoints.json.*.tmp")); err == nil {
		for _, p := range tmps {
			_ = os.Remove(p)
		}
	}
	fi, err := os.Lstat(s.path)
	if os.IsNotExist(err) {
		return s, nil
	}
	var b []byte
	switch {
	case err != nil:
		err = fmt.Errorf("unreadable: %w", err)
	case fi.IsDir():
		err = errors.New("a directory, not a file")
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("not a regular file (mode %s)", fi.Mode())
	default:
		b, err = readFile(s.path)
		if err != nil && os.IsNotExist(err) {
			return s, nil
		}
		if err != nil {
			err = fmt.Errorf("unreadable: %w", err)
		}
	}
	if err != nil {
		s.setAside(&corruption{reason: err})
		return s, nil
	}
	files, savedAt, trusted, err := parseCheckpoints(b)
	s.existed = true
	s.savedAt = savedAt
	var cf checkpointFile
	if err == nil && json.Unmarshal(b, &cf) == nil {
		// Only a file that parses whole vouches for its floor and chains.
		s.floor = cf.Floor
	}
	kept := 0
	for i := range files {
		c := files[i]
		if !trusted[i] {
			continue
		}
		c.Sum = 0
		c.origin = cf.Origins[originKey(c.key())]
		s.m[c.key()] = &c
		kept++
	}
	if err != nil {
		s.setAside(&corruption{reason: err, kept: kept, dropped: len(files) - kept})
	}
	return s, nil
}

// parseCheckpoints reads a checkpoint file. A file that parses whole, with
// the known version and every sum right, returns a nil error and every
// entry trusted. Otherwise the entries before the damage are returned and
// only those with a right sum are trusted.
func parseCheckpoints(b []byte) (files []checkpoint, savedAt time.Time, trusted []bool, err error) {
	var cf checkpointFile
	if jerr := json.Unmarshal(b, &cf); jerr == nil {
		if cf.Version != checkpointVersion {
			// Another version may mean other things by the same fields:
			// trust none of it.
			return cf.Files, time.Time{}, make([]bool, len(cf.Files)), fmt.Errorf("version %d, want %d", cf.Version, checkpointVersion)
		}
		files = cf.Files
	} else {
		err = fmt.Errorf("not valid JSON (cut short or damaged): %w", jerr)
		files, cf.SavedAt = salvage(b)
	}
	if cf.SavedAt > 0 {
		savedAt = time.Unix(0, cf.SavedAt)
	}
	trusted = make([]bool, len(files))
	bad := 0
	for i := range files {
		if c := &files[i]; c.Sum != 0 {
			trusted[i] = c.Sum == c.checksum()
			if !trusted[i] {
				bad++
			}
		}
	}
	if err == nil && bad > 0 {
		err = fmt.Errorf("%d entries with a wrong checksum", bad)
	}
	for i := range files {
		if files[i].Sum == 0 {
			// Written before sums existed: only a whole, valid file
			// vouches for it.
			trusted[i] = err == nil
		}
	}
	return files, savedAt, trusted, err
}

// salvage decodes the entries of a damaged checkpoint file up to the
// damage: a file cut short keeps the entries written before the cut.
func salvage(b []byte) (files []checkpoint, savedAt int64) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, 0
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return files, savedAt
		}
		key, _ := tok.(string)
		switch key {
		case "saved_at_unix_nano":
			if dec.Decode(&savedAt) != nil {
				return files, savedAt
			}
		case "files":
			if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
				return files, savedAt
			}
			for dec.More() {
				var c checkpoint
				if dec.Decode(&c) != nil {
					return files, savedAt
				}
				files = append(files, c)
			}
			if _, err := dec.Token(); err != nil {
				return files, savedAt
			}
		default:
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return files, savedAt
			}
		}
	}
	return files, savedAt
}

// setAside moves the untrusted checkpoint file out of the way, keeping it
// for a post-mortem, and records what happened; the input logs it.
func (s *store) setAside(c *corruption) {
	aside := s.path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(s.path, aside); err != nil {
		c.asideErr = err
	} else {
		c.aside = aside
	}
	s.recovered = c
	s.existed = true
	s.dirty = true // write a good file at the first save
}

// get returns a copy of the checkpoint of k.
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
// after a truncation, or a commit); tail hashes the bytes before off and
// origin is the chain (source.go).
func (s *store) set(k fileKey, path string, fp fingerprint, off int64, tail tailSum, origin uint64) {
	s.mu.Lock()
	c := s.m[k]
	if c == nil {
		c = &checkpoint{Dev: k.dev, Ino: k.ino}
		s.m[k] = c
	}
	if c.Offset != off || c.FPLen != fp.n || c.FP != fp.sum || c.Path != path || c.tail() != tail || c.origin != origin {
		c.Offset, c.FPLen, c.FP, c.Path = off, fp.n, fp.sum, path
		c.TailLen, c.TailFP = tail.n, tail.sum
		c.origin = origin
		s.dirty = true
	}
	s.mu.Unlock()
}

// maxOrigin is the highest chain number of the checkpoints.
func (s *store) maxOrigin() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m uint64
	for _, c := range s.m {
		m = max(m, c.origin)
	}
	return m
}

// del forgets the checkpoint of k.
func (s *store) del(k fileKey) {
	s.mu.Lock()
	if _, ok := s.m[k]; ok {
		delete(s.m, k)
		s.dirty = true
	}
	s.mu.Unlock()
}

// keys lists the files that have a checkpoint.
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
	// The floor first: a chunk acknowledged after it is taken is in the
	// entries or at or after the floor.
	var floor []uint64
	if s.floorFn != nil && s.path != "" {
		floor = s.floorFn()
	}
	s.mu.Lock()
	if !s.dirty || s.path == "" || s.closed {
		s.mu.Unlock()
		return nil
	}
	cf := checkpointFile{Version: checkpointVersion, SavedAt: time.Now().UnixNano(), Files: make([]checkpoint, 0, len(s.m)), Floor: floor}
	for _, c := range s.m {
		cf.Files = append(cf.Files, *c)
		if c.origin != 0 {
			if cf.Origins == nil {
				cf.Origins = make(map[string]uint64, len(s.m))
			}
			cf.Origins[originKey(c.key())] = c.origin
		}
	}
	s.dirty = false
	s.mu.Unlock()
	for i := range cf.Files {
		cf.Files[i].Sum = cf.Files[i].checksum()
	}
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

// openCheckpoints opens the input's checkpoint store in
// DATA_DIR/input/NAME (in memory only without data_dir) and reports a
// checkpoint file that could not be trusted and was set aside.
func (in *Input) openCheckpoints() error {
	dir := ""
	if in.set.DataDir != "" {
		dir = filepath.Join(in.set.DataDir, "input", in.set.Name)
	} else {
		in.log.Warn("tail input without data_dir: checkpoints are kept in memory only, a restart reads files again")
	}
	st, err := openStore(dir)
	if err != nil {
		return err
	}
	in.store = st
	if c := st.recovered; c != nil {
		in.met.corrupt.Inc()
		in.set.Metrics.Error("checkpoint_corrupt")
		fields := []zap.Field{
			zap.String("path", st.path), zap.NamedError("reason", c.reason),
			zap.Int("checkpoints_kept", c.kept), zap.Int("checkpoints_dropped", c.dropped),
		}
		if c.aside != "" {
			fields = append(fields, zap.String("moved_to", c.aside))
		} else {
			fields = append(fields, zap.NamedError("move_error", c.asideErr))
		}
		in.log.Error("tail checkpoint file is corrupt and was set aside; resuming from the checkpoints that can be trusted, every other file is read from its start: lines already shipped will be shipped again (duplicates rather than loss)", fields...)
	}
	return nil
}

// saveSoon asks the manager to save the checkpoints now; it never blocks.
func (in *Input) saveSoon() {
	select {
	case in.saveReq <- struct{}{}:
	default:
	}
}

// save writes the checkpoints if they changed.
func (in *Input) save() {
	if err := in.store.save(); err != nil {
		in.set.Metrics.Error("checkpoint_save")
		in.log.Warn("saving checkpoints failed; retrying", zap.Error(err))
	}
}
