package tail

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
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
// its own that reads it (while holding one of a few read slots, so memory
// stays bounded with thousands of files) and emits its chunks. Where each
// job lives, and the lock order, are written down in doc.go.
type Input struct {
	set pipeline.Settings
	cfg *Config
	log *zap.Logger
	met *metrics
	rl  *ratelog.Logger

	startRe    *regexp.Regexp
	maxLine    int
	json       bool   // cfg.Format is json
	maxEvents  int    // cfg.Batch.MaxEvents
	maxBytes   int    // cfg.Batch.MaxBytes
	keyEnc     []byte // the msgpack str of cfg.Key
	pathKeyEnc []byte // the msgpack str of cfg.PathKey, or nil

	emit pipeline.Emitter
	pos  pipeline.Positions // emit's, when it keeps source positions
	// seq numbers the chains and the source positions (source.go).
	seq       atomic.Uint64
	recovered recovery        // what Start took from the buffer's positions
	ctx       context.Context // ends when Stop begins
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	store     *store
	watcher   *fsnotify.Watcher
	slots     chan struct{}
	bufs      sync.Pool // read buffers
	scanReq   chan struct{}
	saveReq   chan struct{}

	// mu guards the fields below up to firstSeen. It is the first lock of
	// the order Input.mu, then tailer.mu, then store.mu (doc.go): scan
	// calls setGone, and noteTruncation and liveWithFingerprint read other
	// tailers, under it; scan forgets checkpoints (store.del) under it.
	// Nothing takes it while holding a tailer's mu or the store's. It is
	// never held across Emit or a file read.
	mu       sync.Mutex
	files    map[fileKey]*tailer
	byReal   map[string][]*tailer // resolved path -> tailers, for notifications
	pathRefs map[string]int       // tailers per path, for per-file metric series
	truncs   map[truncKey]*truncRecord
	warned   map[string]bool
	// firstSeen is what the first scan found, for recoverOrphans. Only
	// Start uses it, before any other goroutine runs: not guarded.
	firstSeen map[fileKey]bool

	// ackMu guards inflight and drained. A leaf: no other lock is held
	// while it is, and it is taken with none of ours held.
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
		set:       set,
		cfg:       cfg,
		log:       set.Logger,
		maxLine:   int(cfg.MaxLineBytes),
		json:      cfg.Format == FormatJSON,
		maxEvents: cfg.Batch.MaxEvents,
		maxBytes:  int(cfg.Batch.MaxBytes),
		keyEnc:    mpack.AppendString(nil, cfg.Key),
		scanReq:   make(chan struct{}, 1),
		saveReq:   make(chan struct{}, 1),
		files:     map[fileKey]*tailer{},
		byReal:    map[string][]*tailer{},
		pathRefs:  map[string]int{},
		truncs:    map[truncKey]*truncRecord{},
		warned:    map[string]bool{},
	}
	if in.log == nil {
		in.log = zap.NewNop()
	}
	if in.set.Metrics == nil {
		in.set.Metrics = pipeline.NopMetrics(pipeline.KindInput, set.Name)
	}
	if cfg.PathKey != "" {
		in.pathKeyEnc = mpack.AppendString(nil, cfg.PathKey)
	}
	if cfg.Multiline.StartRegex != "" {
		in.startRe = regexp.MustCompile(cfg.Multiline.StartRegex)
	}
	in.slots = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
	bufSize := int(cfg.ReadBufferBytes)
	in.bufs.New = func() any { b := make([]byte, bufSize); return &b }
	in.met = newMetrics(set)
	in.rl = ratelog.New(in.log, 10*time.Second)
	return in, nil
}

// Start loads the checkpoints, finds and opens the files and starts
// following them. It returns once every file found is open.
func (in *Input) Start(ctx context.Context, emit pipeline.Emitter) error {
	if err := in.openCheckpoints(); err != nil {
		return err
	}
	in.emit = emit
	if p, ok := emit.(pipeline.Positions); ok {
		in.pos = p
		in.store.floorFn = p.Floor
	}
	// Before any file is opened: the positions stored with the chunks
	// after the last save are newer than its checkpoints.
	in.recoverPositions(ctx)
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

// warnOnce logs msg the first time key is seen (at most 10000 keys are
// remembered).
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
