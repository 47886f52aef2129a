package tail

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/logship/logship/internal/ratelog"
	"github.com/logship/logship/pipeline"
)

// Factory registers the tail input.
func Factory() pipeline.Factory {
	return pipeline.NewInputFactory("tail", defaultConfig,
		func(set pipeline.Settings, cfg *Config) (pipeline.Input, error) { return New(set, cfg) })
}

var _ pipeline.Input = (*Input)(nil)

// Input follows files. Discovery and checkpoint saving run on one manager
// goroutine, inotify events on another; each open file has a goroutine of
// its own that
// reads it (while holding one of a few read slots, so memory stays bounded
// with thousands of files) and emits its chunks.
type Input struct {
	set pipeline.Settings
	cfg *Config
	log *zap.Logger
	met *metrics
	rl  *ratelog.Logger

	startRe    *regexp.Regexp
	maxLine    int
	keyEnc     []byte // the msgpack str of cfg.Key
	pathKeyEnc []byte // the msgpack str of cfg.PathKey, or nil

	emit    pipeline.Emitter
	ctx     context.Context // ends when Stop begins
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	store   *store
	watcher *fsnotify.Watcher
	slots   chan struct{}
	bufs    sync.Pool // read buffers
	chunks  sync.Pool // chunk buffers
	scanReq chan struct{}
	saveReq chan struct{}

	mu       sync.Mutex
	files    map[fileKey]*tailer
	byReal   map[string][]*tailer // resolved path -> tailers, for notifications
	pathRefs map[string]int       // tailers per path, for per-file metric series
	truncs   map[truncKey]*truncRecord
	warned   map[string]bool
	// firstSeen is what the first scan found, for recoverOrphans.
	firstSeen map[fileKey]bool

	ackMu    sync.Mutex
	inflight int           // chunks emitted and not yet acknowledged
	drained  chan struct{} // closed when inflight drops to 0, if someone waits
}

// New builds the input; Start begins following files.
func New(set pipeline.Settings, cfg *Config) (*Input, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	in := &Input{
		set:      set,
		cfg:      cfg,
		log:      set.Logger,
		maxLine:  int(cfg.MaxLineBytes),
		keyEnc:   pipeline.AppendString(nil, cfg.Key),
		scanReq:  make(chan struct{}, 1),
		saveReq:  make(chan struct{}, 1),
		files:    map[fileKey]*tailer{},
		byReal:   map[string][]*tailer{},
		pathRefs: map[string]int{},
		truncs:   map[truncKey]*truncRecord{},
		warned:   map[string]bool{},
	}
	if in.log == nil {
		in.log = zap.NewNop()
	}
	if in.set.Metrics == nil {
		in.set.Metrics = pipeline.NopMetrics(pipeline.KindInput, set.Name)
	}
	if cfg.PathKey != "" {
		in.pathKeyEnc = pipeline.AppendString(nil, cfg.PathKey)
	}
	if cfg.Multiline.StartRegex != "" {
		in.startRe = regexp.MustCompile(cfg.Multiline.StartRegex)
	}
	in.slots = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
	bufSize := int(cfg.ReadBufferBytes)
	in.bufs.New = func() any { b := make([]byte, bufSize); return &b }
	chunkCap := int(cfg.Batch.MaxBytes) + 2*in.maxLine + 1024
	in.chunks.New = func() any { b := make([]byte, 0, chunkCap); return &b }
	in.met = newMetrics(set)
	in.rl = ratelog.New(in.log, 10*time.Second)
	return in, nil
}

// Start loads the checkpoints, finds and opens the files and starts
// following them. It returns once every file found is open.
func (in *Input) Start(_ context.Context, emit pipeline.Emitter) error {
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
	in.emit = emit
	in.ctx, in.cancel = context.WithCancel(context.Background())
	if w, err := fsnotify.NewWatcher(); err != nil {
		in.log.Warn("inotify unavailable; files are polled every refresh_interval", zap.Error(err))
	} else {
		in.watcher = w
	}
	in.scan(true)
	in.recoverOrphans()
	if err := in.store.save(); err != nil {
		in.log.Warn("saving checkpoints failed", zap.Error(err))
	}
	in.wg.Add(1)
	go in.loop()
	if in.watcher != nil {
		in.wg.Add(1)
		go in.watch()
	}
	in.mu.Lock()
	n := len(in.files)
	in.mu.Unlock()
	in.log.Info("tail input started", zap.Strings("paths", in.cfg.Paths), zap.Int("files", n), zap.Bool("inotify", in.watcher != nil))
	return nil
}

// Stop stops reading, waits until every chunk already emitted has been
// acknowledged (or ctx is done), writes the checkpoints and closes the
// files. Lines read but not acknowledged are read again after a restart.
func (in *Input) Stop(ctx context.Context) error {
	if in.cancel == nil {
		return nil
	}
	in.cancel()
	if in.watcher != nil {
		_ = in.watcher.Close()
	}
	in.wg.Wait()
	err := in.waitAcks(ctx)
	if serr := in.store.close(); serr != nil {
		err = errors.Join(err, serr)
	}
	in.mu.Lock()
	for _, t := range in.files {
		t.f.Close()
		in.met.dropFile(t.path, in.pathRefs)
	}
	in.files = map[fileKey]*tailer{}
	in.byReal = map[string][]*tailer{}
	in.mu.Unlock()
	return err
}

// loop is the manager: discovery, the safety-net poll, checkpoint saves.
func (in *Input) loop() {
	defer in.wg.Done()
	refresh := in.cfg.RefreshInterval.D()
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	// Often enough that a SIGKILL re-reads little more than the
	// unacknowledged tail; a save is skipped when nothing changed.
	save := time.NewTicker(200 * time.Millisecond)
	defer save.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-in.ctx.Done():
			return
		case <-tick.C:
			in.scan(false)
			in.wakeAll()
			in.expireTruncs()
		case <-in.scanReq:
			debounce.Reset(20 * time.Millisecond)
		case <-debounce.C:
			in.scan(false)
		case <-save.C:
			in.save()
		case <-in.saveReq:
			in.save()
		}
	}
}

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

func (in *Input) warnOnce(key, msg string, fields ...zap.Field) {
	in.mu.Lock()
	seen := in.warned[key]
	if !seen && len(in.warned) < 10000 {
		in.warned[key] = true
	}
	in.mu.Unlock()
	if !seen {
		in.log.Warn(msg, fields...)
	}
}

// openMode says how a file found by open starts.
type openMode struct {
	start     int64   // first offset to read
	copyOf    *tailer // a possible copy of this live file: wait for its truncation
	gone      bool    // not under a matched name: read to the end, then close
	path, tag string  // overrides for a copy read under its original's name
	how       string
	tail      tailSum // of the bytes before start; filled by open
}

// open opens a file found at p and starts its tailer. mode, when given,
// fixes where reading starts (orphans and copies found by other means).
func (in *Input) open(p string, fi os.FileInfo, first bool, mode *openMode) *tailer {
	f, err := os.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			if mode == nil && (in.cfg.ReadFromHead || !first) && fi.Size() > 0 {
				in.met.lost(in.set.Name, p, "vanished", fi.Size())
			}
			return nil
		}
		in.set.Metrics.Error("open")
		in.warnOnce("open:"+p, "cannot open file", zap.String("path", p), zap.Error(err))
		return nil
	}
	fi2, err := f.Stat()
	if err != nil || !fi2.Mode().IsRegular() {
		f.Close()
		return nil
	}
	k := fileKeyOf(fi2)
	size := fi2.Size()
	var head [fingerprintBytes]byte
	h, err := readHead(f, size, head[:])
	if err != nil {
		f.Close()
		in.set.Metrics.Error("read")
		in.warnOnce("read:"+p, "cannot read file", zap.String("path", p), zap.Error(err))
		return nil
	}
	fp := fingerprint{len(h), fnv1a(h)}
	var m openMode
	if mode != nil {
		m = *mode
	} else {
		m = in.decideStart(f, k, fi2, h, fp, first)
	}
	if m.path == "" {
		m.path = p
	}
	if m.tag == "" {
		m.tag = expandTag(in.cfg.Tag, m.path)
	}
	if m.copyOf == nil {
		m.tail, _ = readTail(f, m.start)
	}
	t := newTailer(in, f, k, m, fp, size)
	in.mu.Lock()
	if in.files[k] != nil || in.ctx.Err() != nil {
		in.mu.Unlock()
		f.Close()
		return nil
	}
	in.files[k] = t
	in.byReal[t.real] = append(in.byReal[t.real], t)
	in.met.addFile(t, in.pathRefs)
	in.mu.Unlock()
	if m.copyOf == nil {
		in.store.set(k, t.path, fp, m.start, m.tail)
		// A new file's identity goes to disk at once, not at the next
		// periodic save: renamed away and followed by a crash, it is
		// then still found and read after the restart.
		in.saveSoon()
	}
	in.log.Debug("following file", zap.String("path", t.path), zap.Int64("offset", m.start), zap.String("start", m.how), zap.Uint64("inode", k.ino))
	in.wg.Add(1)
	go t.run()
	return t
}

// decideStart picks where a newly found file is read from.
func (in *Input) decideStart(f *os.File, k fileKey, fi os.FileInfo, head []byte, fp fingerprint, first bool) openMode {
	size := fi.Size()
	if ck, ok := in.store.get(k); ok {
		ckfp := ck.fingerprint()
		how := "identity changed"
		if ckfp.matches(head) {
			if ck.Offset > size {
				in.met.rotation(in.set.Name, "truncated")
				return openMode{start: 0, how: "truncated while stopped"}
			}
			if tailMatches(f, ck.Offset, ck.tail()) {
				return openMode{start: ck.Offset, how: "checkpoint"}
			}
			// The first bytes are the same but those before the
			// checkpoint are not: truncated and written again past the
			// old offset (or the inode was reused for a file that starts
			// alike). Resuming would skip the new lines before it.
			in.met.rotation(in.set.Name, "rewritten")
			in.log.Warn("file rewritten while logship was stopped (same first bytes, other content before the checkpoint); reading it from its start",
				zap.String("path", f.Name()), zap.Int64("checkpoint", ck.Offset), zap.Int64("size", size))
			how = "rewritten while stopped"
		}
		// Same inode, other content: rewritten in place (copytruncate)
		// while logship was stopped, or the inode was reused. A copy of
		// the old content resumes at the old checkpoint.
		if ckfp.n > 0 {
			key := truncKey{k.dev, ckfp}
			in.mu.Lock()
			in.truncs[key] = &truncRecord{path: ck.Path, tag: expandTag(in.cfg.Tag, ck.Path), emitted: ck.Offset, tail: ck.tail(), strict: true, at: time.Now()}
			in.mu.Unlock()
			in.findCopy(key, filepath.Dir(absReal(f.Name())))
		}
		return openMode{start: 0, how: how}
	}
	if fp.full() {
		if rec := in.claimTrunc(k.dev, fp, f); rec != nil {
			in.met.rotation(in.set.Name, "copy")
			return openMode{start: min(rec.emitted, size), how: "copy of a truncated file"}
		}
		if !first {
			if src := in.liveWithFingerprint(k, fp); src != nil {
				return openMode{copyOf: src, how: "possible copy"}
			}
		}
	}
	// Modified after the last save (less a scan period, since a file is
	// found up to a scan after it appears, and a second for coarse file
	// system clocks): created while logship was stopped.
	createdWhileStopped := in.store.existed && fi.ModTime().After(in.store.savedAt.Add(-in.cfg.RefreshInterval.D()-time.Second))
	if in.cfg.ReadFromHead || !first || createdWhileStopped || in.store.recovered != nil {
		return openMode{start: 0, how: "head"}
	}
	return openMode{start: lastLineStart(f, size, in.maxLine), how: "end"}
}

// lastLineStart is the offset after the last newline in the file's final
// window: reading starts with the line being written, not in its middle.
// It reads backwards in small steps (the newline is nearly always close to
// the end).
func lastLineStart(f *os.File, size int64, window int) int64 {
	var b [4096]byte
	for end := size; end > 0 && size-end < int64(window); {
		n := min(end, int64(len(b)), int64(window)-(size-end))
		got, err := f.ReadAt(b[:n], end-n)
		if int64(got) != n && err != nil {
			return size
		}
		if i := bytes.LastIndexByte(b[:n], '\n'); i >= 0 {
			return end - n + int64(i) + 1
		}
		end -= n
		if end == 0 {
			return 0
		}
	}
	return size
}

// untrack removes a tailer that finished (retired or closed while idle).
func (in *Input) untrack(t *tailer) {
	in.mu.Lock()
	if in.files[t.key] == t {
		delete(in.files, t.key)
	}
	ts := in.byReal[t.real]
	for i, o := range ts {
		if o == t {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(in.byReal, t.real)
	} else {
		in.byReal[t.real] = ts
	}
	in.met.dropFile(t.path, in.pathRefs)
	in.mu.Unlock()
}

func expandTag(tag, path string) string {
	if !strings.Contains(tag, "*") {
		return tag
	}
	p := strings.TrimLeft(strings.ReplaceAll(filepath.ToSlash(path), "/", "."), ".")
	return strings.ReplaceAll(tag, "*", p)
}
