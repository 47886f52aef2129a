package file

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/ratelog"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/output/internal/jsonl"
)

// Factory registers the file output.
func Factory() pipeline.Factory {
	return pipeline.NewOutputFactory("file", defaultConfig,
		func(set pipeline.Settings, cfg *Config) (pipeline.Output, error) {
			return &Output{cfg: cfg, set: set}, nil
		})
}

var (
	_ pipeline.Output   = (*Output)(nil)
	_ pipeline.Reopener = (*Output)(nil)
)

// ReasonInvalidPath is the dropped_records_total reason of events whose
// rendered path the output refuses (see Config.Path).
const ReasonInvalidPath = "invalid_path"

// Output appends JSON lines to files, each batch once (see the package
// doc).
type Output struct {
	cfg *Config
	set pipeline.Settings

	mu    sync.Mutex
	path  *pathTemplate
	open  map[string]*openFile // by path
	lru   list.List            // of *openFile, the most recently written first
	st    state                // what the files hold; st.files: see syncFiles
	store *stateStore          // nil: the state is kept in memory only
	dirty bool                 // st differs from what store holds

	started bool
	gen     uint64 // Writes so far
	pbuf    []byte
	groups  []*group       // reused by split
	gidx    map[string]int // split's index of groups by path
	rl      *ratelog.Logger

	saveHook func() error // tests: fails a state save when it returns an error
	lastCut  time.Time    // the last log of records cut at the JSON depth limit
}

// openFile is one file the output has open, and what the state records of
// it.
type openFile struct {
	fileState
	f    *os.File
	elem *list.Element
	gen  uint64 // the Write that last used it
}

// group is the part of a batch that goes to one file.
type group struct {
	file *openFile
	path string
	buf  []byte
	n    int // events
}

func (o *Output) errorf(format string, args ...any) error {
	return fmt.Errorf("file output %s: "+format, append([]any{o.set.Name}, args...)...)
}

func (o *Output) logger() *zap.Logger {
	if o.set.Logger == nil {
		return zap.NewNop()
	}
	return o.set.Logger
}

// openPath opens the file at path for appending, creating it and its
// directories.
func (o *Output) openPath(path string) (*os.File, error) {
	perm, _ := o.cfg.perm()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, perm)
}

// Start reads the output's state and cuts from every file it names what
// the state does not cover (a batch torn or not recorded when the process
// was killed). A fixed path is opened at once; a templated one when an
// event goes to it.
func (o *Output) Start(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	log := o.logger()
	p, err := parsePath(o.cfg.Path)
	if err != nil {
		return o.errorf("path: %w", err)
	}
	o.path, o.open, o.rl = p, map[string]*openFile{}, ratelog.New(log, time.Minute)
	o.lru.Init()
	if o.set.DataDir != "" {
		store, st, err := openStateStore(filepath.Join(o.set.DataDir, "output", o.set.Name))
		if errors.Is(err, errNoState) {
			log.Warn("the file output's state is unreadable; starting without it: batches read again from the buffer may be written twice", zap.String("state", store.path))
		} else if err != nil {
			return o.errorf("state: %w", err)
		}
		o.store, o.st = store, st
	}
	for _, fs := range o.st.files {
		if fs.path == "" { // a state of version 1: the configured path
			if !p.fixed {
				log.Warn("the file output's state names a file without its path (written by an older logship) and the path is now a template: the file is not checked")
				continue
			}
			fs.path = p.static
		}
		if err := o.recover(fs); err != nil {
			_ = o.store.close()
			o.store = nil
			return o.errorf("%w", err)
		}
	}
	// Every file is now as long as the state says: what it holds is
	// covered. A file is recorded again when it is opened again.
	o.st.files = o.st.files[:0]
	o.dirty = true
	if p.fixed {
		if _, err := o.file(p.static); err != nil {
			_ = o.store.close()
			o.store = nil
			return o.errorf("%w", err)
		}
	}
	if err := o.persist(); err != nil {
		log.Warn("storing the file output's state", zap.Error(err))
	}
	o.started = true
	return nil
}

// recover cuts the file of one recorded entry back to its recorded length
// when it is the same file and longer.
func (o *Output) recover(fs fileState) error {
	log := o.logger()
	f, err := os.OpenFile(fs.path, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	dev, ino, size, err := fileID(f)
	if err != nil {
		return err
	}
	switch {
	case dev != fs.dev || ino != fs.ino:
		// renamed away meanwhile: not ours to cut
	case size > fs.length:
		if err := f.Truncate(fs.length); err != nil {
			return fmt.Errorf("cut %s back to %d bytes: %w", fs.path, fs.length, err)
		}
		if o.cfg.Fsync {
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				log.Warn("fdatasync after cutting the file back", zap.String("path", fs.path), zap.Error(err))
			}
		}
		log.Info("cut the end of the file that the output's state does not cover (written when logship was killed; read again from the buffer)",
			zap.String("path", fs.path), zap.Int64("bytes", size-fs.length), zap.Int64("length", fs.length))
	case size < fs.length:
		log.Warn("the file is shorter than the output's state says (a power cut without fsync, or truncated by someone else); events may be missing from it",
			zap.String("path", fs.path), zap.Int64("length", size), zap.Int64("recorded", fs.length))
	}
	return nil
}

// file returns the open file at path, opening (creating) it when it is
// not open. A file opened is recorded in the state (identity and length):
// the caller stores the state before it writes to the file.
func (o *Output) file(path string) (*openFile, error) {
	if of := o.open[path]; of != nil {
		o.lru.MoveToFront(of.elem)
		of.gen = o.gen
		return of, nil
	}
	// Room first, from files the current Write does not use: the state
	// covers all they hold.
	for o.lru.Len() >= o.cfg.maxOpen() {
		lru := o.lru.Back().Value.(*openFile)
		if lru.gen == o.gen {
			break
		}
		o.close(lru)
	}
	f, err := o.openPath(path)
	if err != nil {
		return nil, err
	}
	dev, ino, size, err := fileID(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	of := &openFile{fileState: fileState{path: path, dev: dev, ino: ino, length: size}, f: f, gen: o.gen}
	of.elem = o.lru.PushFront(of)
	o.open[path] = of
	o.dirty = true
	return of, nil
}

// close closes one open file and forgets it: everything in it is covered
// by the state.
func (o *Output) close(of *openFile) {
	if err := of.f.Close(); err != nil {
		o.logger().Warn("closing a file", zap.String("path", of.path), zap.Error(err))
	}
	o.lru.Remove(of.elem)
	delete(o.open, of.path)
	// Not dirty: the state may name the file until it is next stored.
}

// evict closes the least recently written files beyond max_open_files
// (more are open when one batch needed more). It runs only when the state
// covers all they hold.
func (o *Output) evict() {
	for o.lru.Len() > o.cfg.maxOpen() {
		o.close(o.lru.Back().Value.(*openFile))
	}
}

// persist stores the state if it changed: the open files (identity and
// length) and the partitions.
func (o *Output) persist() error {
	if !o.dirty {
		return nil
	}
	o.st.files = o.st.files[:0]
	for e := o.lru.Front(); e != nil; e = e.Next() {
		o.st.files = append(o.st.files, e.Value.(*openFile).fileState)
	}
	if o.saveHook != nil {
		if err := o.saveHook(); err != nil {
			return err
		}
	}
	if o.store != nil {
		if err := o.store.save(&o.st, o.cfg.Fsync); err != nil {
			return err
		}
	} else {
		o.st.seq++
	}
	o.dirty = false
	return nil
}

// split sorts the events of b into groups, one per file, in order. Events
// whose path is refused are counted and logged; they are in no group.
func (o *Output) split(b pipeline.Batch) ([]*group, error) {
	for _, g := range o.groups {
		g.file, g.buf, g.n = nil, g.buf[:0], 0
	}
	groups := o.groups[:0]
	if o.gidx == nil {
		o.gidx = map[string]int{}
	}
	clear(o.gidx)
	get := func(path string) *group {
		if i, ok := o.gidx[path]; ok {
			return groups[i]
		}
		o.gidx[path] = len(groups)
		if len(groups) < len(o.groups) {
			groups = groups[:len(groups)+1]
		} else {
			groups = append(groups, &group{})
			o.groups = groups
		}
		g := groups[len(groups)-1]
		g.path = path
		return g
	}
	refused := 0
	var refusedErr error
	var err error
	var path string
	if !o.path.tmpl.UsesRecord() {
		if o.pbuf, path, err = o.path.render(o.pbuf, b.Tag, nil); err != nil {
			o.refuse(b, b.Count, err)
			return nil, nil
		}
		g := get(path)
		var cut int
		if g.buf, cut, err = o.cfg.Append(g.buf, b); err != nil {
			return nil, pipeline.Permanent(err)
		}
		jsonl.CountCut(o.set, &o.lastCut, cut)
		g.n = b.Count
		return groups, nil
	}
	one := b
	entries := b.Entries
	for len(entries) > 0 {
		_, rec, n, err := mpack.NextEntry(entries)
		if err != nil {
			return nil, pipeline.Permanent(err)
		}
		if o.pbuf, path, err = o.path.render(o.pbuf, b.Tag, rec); err != nil {
			refused++
			refusedErr = err
		} else {
			g := get(path)
			one.Entries, one.Count = entries[:n], 1
			var cut int
			if g.buf, cut, err = o.cfg.Append(g.buf, one); err != nil {
				return nil, pipeline.Permanent(err)
			}
			jsonl.CountCut(o.set, &o.lastCut, cut)
			g.n++
		}
		entries = entries[n:]
	}
	if refused > 0 {
		o.refuse(b, refused, refusedErr)
	}
	return groups, nil
}

// refuse counts and logs (at most once a minute) n events of b dropped
// because of their path.
func (o *Output) refuse(b pipeline.Batch, n int, err error) {
	if o.set.Metrics != nil {
		o.set.Metrics.Dropped(ReasonInvalidPath, n)
	}
	o.rl.Warn(ReasonInvalidPath, "events dropped: their path leaves the output's directory or is not a file name",
		zap.String("tag", b.Tag), zap.Int("events", n), zap.Error(err))
}

// openErrPermanent reports whether opening a rendered path failed in a way
// no retry mends (a directory in the way, a name too long): its events
// are dropped as of an invalid path.
func openErrPermanent(err error) bool {
	return errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENAMETOOLONG) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ELOOP)
}

// Write appends the batch, one write(2) per file it goes to (one file
// unless the path uses record fields), and records it in the state before
// it returns, so the state is never behind the buffer's cursor. A batch
// the state says was written already is skipped and counted as a
// duplicate.
func (o *Output) Write(_ context.Context, b pipeline.Batch) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.started {
		return errors.New("file output: not started")
	}
	// A state not stored yet (a failed write of it) first: nothing is
	// acknowledged, and nothing written, that it does not cover.
	if err := o.persist(); err != nil {
		return o.errorf("%w", err)
	}
	if o.st.written(b) {
		if o.set.Metrics != nil {
			o.set.Metrics.Duplicates.Add(float64(b.Count))
		}
		return nil
	}
	o.gen++
	groups, err := o.split(b)
	if err != nil {
		return err
	}
	// Open every file first, and record the ones opened, so that a kill
	// during the writes leaves nothing the state does not cover.
	for _, g := range groups {
		if g.n == 0 {
			continue
		}
		if g.file, err = o.file(g.path); err != nil {
			if !o.path.fixed && openErrPermanent(err) {
				o.refuse(b, g.n, err)
				g.n = 0
				continue
			}
			o.evict()
			return o.errorf("open %s: %w", g.path, err)
		}
	}
	if err := o.persist(); err != nil {
		return o.errorf("%w", err)
	}
	for _, g := range groups {
		if g.n == 0 {
			continue
		}
		if n, err := g.file.f.Write(g.buf); err != nil {
			// Cut a partial batch off (ENOSPC), so that the retry does not
			// leave a torn line behind.
			if n > 0 {
				if end, serr := g.file.f.Seek(0, io.SeekCurrent); serr == nil {
					_ = g.file.f.Truncate(end - int64(n))
				}
			}
			return o.cutBack(groups, fmt.Errorf("write %s: %w", g.path, err))
		}
	}
	for _, g := range groups {
		if g.n == 0 {
			continue
		}
		if o.cfg.Fsync {
			if err := unix.Fdatasync(int(g.file.f.Fd())); err != nil {
				return o.cutBack(groups, fmt.Errorf("fdatasync %s: %w", g.path, err))
			}
		}
	}
	for _, g := range groups {
		if g.n == 0 {
			continue
		}
		// With O_APPEND the offset is the end of what was just written,
		// also when someone else truncated the file (copytruncate).
		end, err := g.file.f.Seek(0, io.SeekCurrent)
		if err != nil {
			return o.cutBack(groups, fmt.Errorf("seek %s: %w", g.path, err))
		}
		g.file.length = end
	}
	o.st.advance(b)
	o.dirty = true
	if err := o.persist(); err != nil {
		// The batch is in the files and in o.st: the retry stores the
		// state and skips the batch.
		return o.errorf("%w", err)
	}
	o.evict()
	return nil
}

// cutBack cuts what the failed Write wrote to the files of groups, so its
// retry does not write it twice, and returns err.
func (o *Output) cutBack(groups []*group, err error) error {
	for _, g := range groups {
		if g.n == 0 || g.file == nil {
			continue
		}
		if terr := g.file.f.Truncate(g.file.length); terr != nil {
			o.logger().Warn("cutting back a batch that failed", zap.String("path", g.path), zap.Error(terr))
		}
	}
	return err
}

// Reopen implements pipeline.Reopener: for every open file whose path now
// names another file (logrotate renamed it away), the output lets the old
// one go and writes the next batches to the file at the path, creating
// it.
func (o *Output) Reopen() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.started {
		return nil
	}
	var errs []error
	reopened := 0
	for e := o.lru.Front(); e != nil; e = e.Next() {
		of := e.Value.(*openFile)
		f, err := o.openPath(of.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("reopen %s: %w", of.path, err))
			continue
		}
		dev, ino, size, err := fileID(f)
		if err != nil {
			f.Close()
			errs = append(errs, fmt.Errorf("reopen %s: %w", of.path, err))
			continue
		}
		if dev == of.dev && ino == of.ino {
			f.Close()
			continue
		}
		if err := of.f.Close(); err != nil {
			o.logger().Warn("closing the previous file", zap.String("path", of.path), zap.Error(err))
		}
		of.f, of.dev, of.ino, of.length = f, dev, ino, size
		o.dirty = true
		reopened++
		o.logger().Info("file reopened", zap.String("path", of.path))
	}
	// The state names the new files before a batch goes to them; if that
	// fails, the next Write tries again before it writes.
	if err := o.persist(); err != nil {
		o.logger().Warn("storing the file output's state", zap.Error(err))
	}
	if len(errs) > 0 {
		return o.errorf("%w", errors.Join(errs...))
	}
	return nil
}

// Stop closes the files and the state.
func (o *Output) Stop(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.started {
		return nil
	}
	o.started = false
	err := o.persist()
	for o.lru.Len() > 0 {
		of := o.lru.Back().Value.(*openFile)
		if cerr := of.f.Close(); err == nil {
			err = cerr
		}
		o.lru.Remove(of.elem)
		delete(o.open, of.path)
	}
	if cerr := o.store.close(); err == nil {
		err = cerr
	}
	o.store = nil
	return err
}
