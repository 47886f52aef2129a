package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/logship/logship/internal/ratelog"
)

// Errors returned by the broker.
var (
	// ErrClosed is returned by every call on a closed Broker or Cursor, and
	// by appends still waiting when Close is called (they were not stored).
	ErrClosed = errors.New("broker: closed")
	// ErrTooLarge is returned by Append for a chunk that does not fit in one
	// segment (or whose tag is longer than 65535 bytes). It is permanent.
	ErrTooLarge = errors.New("broker: chunk too large")
	// ErrCursorInUse is returned by Cursor when the named cursor of that
	// partition is already open.
	ErrCursorInUse = errors.New("broker: cursor already open")
	// ErrLocked is returned by Open and Check when another process has the
	// buffer directory open.
	ErrLocked = errors.New("broker: buffer directory in use by another process")
)

// Broker is the durable partitioned log. All its methods are safe for
// concurrent use.
type Broker struct {
	dir    string
	opts   options
	log    *zap.Logger
	rl     *ratelog.Logger
	m      *metrics
	parts  []*partition
	nWrite int   // partitions appended to (opts.partitions)
	segMax int64 // effective segment size
	lock   *os.File

	// incarnation and epoch name the records appended since Open (see
	// "Epochs" in doc.go); fixed while open.
	incarnation uint32
	epoch       uint32
	meta        meta // META as this Open writes it
	// metaMu: a leaf (lock order: "Locks" in doc.go), taken under p.wmu;
	// held across the META write.
	metaMu      sync.Mutex
	metaDurable atomic.Bool // meta is on disk: segments may be written

	closing   chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup

	// spaceMu: a leaf (lock order: "Locks" in doc.go), taken under p.wmu and
	// dropMu.
	spaceMu      sync.Mutex
	used         int64 // sum of segment file sizes (spare files included)
	spares       int   // spare segment files (partition.spare) counted in used
	reserved     int64 // frames admitted, not yet written
	spaceCh      chan struct{}
	spaceWaiters int
	// dropMu: after p.wmu and p.cmu, before p.mu, c.mu, s.fmu and spaceMu
	// (lock order: "Locks" in doc.go); held across I/O.
	dropMu sync.Mutex

	retainKick chan struct{}
	// retentionPasses counts the retention goroutine's passes (tests)
	retentionPasses atomic.Uint64
}

// Open opens (creating it if needed) the buffer in dir and recovers it; see
// the package documentation for what recovery does.
func Open(dir string, opts ...Option) (*Broker, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	b := &Broker{
		dir:        dir,
		opts:       o,
		log:        o.logger,
		nWrite:     o.partitions,
		lock:       lock,
		closing:    make(chan struct{}),
		spaceCh:    make(chan struct{}),
		retainKick: make(chan struct{}, 1),
	}
	b.rl = ratelog.New(b.log, 10*time.Second)
	b.m = newMetrics(b)
	ok := false
	defer func() {
		if !ok {
			for _, p := range b.parts {
				p.closeFiles()
			}
			_ = lock.Close()
		}
	}()
	old, found, err := readMeta(dir, b.log)
	if err != nil {
		return nil, err
	}
	n, err := b.partitionsOnDisk()
	if err != nil {
		return nil, err
	}
	if n < o.partitions {
		n = o.partitions
	}
	if n > o.partitions {
		b.log.Warn("buffer holds more partitions than configured; the extra ones are drained read-only",
			zap.Int("on_disk", n), zap.Int("configured", o.partitions))
	}
	b.segMax = o.segmentBytes
	if lim := o.maxBytes / int64(2*n); b.segMax > lim {
		b.log.Info("segment size capped so that max_bytes holds two segments per partition",
			zap.Int64("segment_bytes", o.segmentBytes), zap.Int64("capped", lim))
		b.segMax = lim
	}
	for i := 0; i < n; i++ {
		p, err := b.openPartition(i)
		if err != nil {
			return nil, err
		}
		b.parts = append(b.parts, p)
	}
	var maxSeen uint32
	restart := ""
	for _, p := range b.parts {
		maxSeen = max(maxSeen, p.maxEpoch)
		if restart == "" && p.restart != "" {
			restart = fmt.Sprintf("partition %d: %s", p.id, p.restart)
		}
	}
	if err := b.beginEpoch(old, found, maxSeen, restart); err != nil {
		return nil, err
	}
	for _, p := range b.parts {
		if err := p.upgradeTail(); err != nil {
			return nil, err
		}
	}
	if err := b.m.register(o.registerer); err != nil {
		return nil, err
	}
	b.used, b.spares = 0, 0 // upgradeTail's rolls counted their headers and took spares; recount
	for _, p := range b.parts {
		b.used += p.bytesLocked() + p.spareSize
		if p.spareFile != "" {
			b.spares++
		}
		if p.writable {
			b.wg.Add(1)
			go p.writeLoop()
			if o.sync != SyncNone {
				b.wg.Add(1)
				go p.syncLoop()
			}
		}
	}
	b.wg.Add(2)
	go b.retentionLoop()
	go b.flushLoop()
	ok = true
	return b, nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("broker: lock %s: %w", dir, err)
	}
	return f, nil
}

// writeFileAtomic writes a file with temp file, fsync, rename and fsync of
// the directory.
func writeFileAtomic(path string, data []byte) error {
	if err := replaceFile(path, data); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// replaceFile writes data to a temp file, fsyncs it and renames it over
// path; the caller fsyncs the directory (once for many files).
func replaceFile(path string, data []byte) error {
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

func (b *Broker) partitionsOnDisk() (int, error) {
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return 0, fmt.Errorf("broker: %w", err)
	}
	n := 0
	for _, e := range ents {
		if id, ok := parsePartDirName(e.Name()); ok && e.IsDir() && id+1 > n {
			n = id + 1
		}
	}
	return n, nil
}

// Partitions returns the number of partitions to read: the configured
// number, or more if the directory holds more (they are drained read-only).
func (b *Broker) Partitions() int { return len(b.parts) }

// PartitionFor returns the partition a tag is appended to: FNV-1a(tag)
// modulo the configured number of partitions.
func (b *Broker) PartitionFor(tag string) int {
	return partitionFor(tag, b.nWrite)
}

func partitionFor(tag string, n int) int {
	// inlined FNV-1a, no allocation
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for i := 0; i < len(tag); i++ {
		h ^= uint32(tag[i])
		h *= prime32
	}
	return int(h % uint32(n))
}

// Flush persists every cursor whose committed position changed.
func (b *Broker) Flush() error {
	if b.closed.Load() {
		return ErrClosed
	}
	return b.flushCursors()
}

func (b *Broker) flushCursors() error {
	var errs []error
	for _, p := range b.parts {
		if err := p.flushCursors(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *Broker) flushLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-b.closing:
			return
		case <-t.C:
			if err := b.flushCursors(); err != nil {
				b.rl.Warn("cursor-flush", "persisting cursors failed; will retry", zap.Error(err))
			}
		}
	}
}

// Close stops the broker: appends not yet written fail with ErrClosed,
// written ones are synced and acknowledged, cursors are persisted, files
// closed. Blocked Next calls return ErrClosed. Close is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		for _, p := range b.parts {
			p.qmu.Lock()
		}
		b.closed.Store(true)
		for _, p := range b.parts {
			p.qmu.Unlock()
		}
		close(b.closing)
		b.wg.Wait()
		for _, p := range b.parts {
			p.wmu.Lock() // an appender writing inline finishes; none starts (closed)
		}
		var errs []error
		for _, p := range b.parts {
			if p.writable {
				if err := p.finalSync(); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := b.flushCursors(); err != nil {
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			// the clean-shutdown marker: the next Open keeps the epoch.
			// Without it the next Open begins a new one: safe, so a
			// failure is only logged.
			m := meta{incarnation: b.incarnation, epoch: b.epoch, clean: true}
			if err := b.writeMeta(m); err != nil {
				b.log.Warn("cannot write the clean-shutdown marker; the next open begins a new epoch", zap.Error(err))
			}
		}
		for _, p := range b.parts {
			p.closeFiles()
		}
		b.m.unregister()
		if err := b.lock.Close(); err != nil {
			errs = append(errs, err)
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// Healthy returns nil when appends can succeed, and otherwise the error of
// the last failed write or fdatasync (a full filesystem included), until
// an append succeeds again; ErrClosed once closed. A service reports
// itself not ready (/readyz) while it is not nil: appends wait or fail
// meanwhile, nothing is acknowledged that was not stored.
func (b *Broker) Healthy() error {
	if b.closed.Load() {
		return ErrClosed
	}
	var errs []error
	for _, p := range b.parts {
		p.hmu.Lock()
		if p.herr != nil {
			errs = append(errs, fmt.Errorf("broker: partition %d: %w", p.id, p.herr))
		}
		p.hmu.Unlock()
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of the buffer.
type Stats struct {
	Bytes      int64 // sum of segment file sizes
	MaxBytes   int64
	Partitions []PartitionStats
	Cursors    []CursorStats // sorted by name, then partition
	// Epoch is Record.Epoch of the records appended since Open:
	// incarnation<<32 | epoch (see "Epochs" in doc.go).
	Epoch uint64
	// Totals since Open.
	DroppedRecords uint64
	DroppedEvents  uint64
	DroppedBytes   uint64
	CorruptRecords uint64
	FullWaits      uint64 // appends that waited for space
	DiskFullErrors uint64 // writes that failed with ENOSPC/EDQUOT
	TailReads      uint64 // records read from memory right behind the writer (WithTailCache)
}

// PartitionStats describes one partition.
type PartitionStats struct {
	Partition   int
	Segments    int
	Bytes       int64
	FirstOffset uint64 // oldest retained offset
	NextOffset  uint64 // offset the next record will get
	Writable    bool   // false for an extra partition drained read-only
}

// CursorStats describes one cursor of one partition.
type CursorStats struct {
	Name      string
	Partition int
	Committed uint64 // next offset to consume after a restart
	Lag       uint64 // records between Committed and the partition's end
	Open      bool   // opened in this process (holds retention)
}

// Stats returns a snapshot of sizes, offsets and cursor lags.
func (b *Broker) Stats() Stats {
	s := Stats{MaxBytes: b.opts.maxBytes, Epoch: b.recordEpoch(b.epoch)}
	b.spaceMu.Lock()
	s.Bytes = b.used
	b.spaceMu.Unlock()
	for _, p := range b.parts {
		p.mu.Lock()
		ps := PartitionStats{Partition: p.id, Segments: len(p.segs), NextOffset: p.next, Writable: p.writable}
		if len(p.segs) > 0 {
			ps.FirstOffset = p.segs[0].base
		}
		ps.Bytes = p.bytesLocked() + p.spareSize
		for _, c := range p.cursors {
			c.mu.Lock()
			cs := CursorStats{Name: c.name, Partition: p.id, Committed: c.committed, Open: c.retain}
			c.mu.Unlock()
			if p.next > cs.Committed {
				cs.Lag = p.next - cs.Committed
			}
			s.Cursors = append(s.Cursors, cs)
		}
		p.mu.Unlock()
		s.Partitions = append(s.Partitions, ps)
	}
	sort.Slice(s.Cursors, func(i, j int) bool {
		if s.Cursors[i].Name != s.Cursors[j].Name {
			return s.Cursors[i].Name < s.Cursors[j].Name
		}
		return s.Cursors[i].Partition < s.Cursors[j].Partition
	})
	s.DroppedRecords = b.m.droppedRecords.Load()
	s.DroppedEvents = b.m.droppedEvents.Load()
	s.DroppedBytes = b.m.droppedBytes.Load()
	s.CorruptRecords = b.m.corruptRecords.Load()
	s.FullWaits = b.m.fullWaits.Load()
	s.DiskFullErrors = b.m.diskFull.Load()
	s.TailReads = b.m.tailHits.Load()
	return s
}

// --- space accounting ---

// reserve admits a frame of n bytes, waiting (Block) or dropping segments
// (DropOldest) while the buffer is full.
func (b *Broker) reserve(ctx context.Context, n int64) error {
	b.spaceMu.Lock()
	waited := false
	for b.used+b.reserved+n > b.opts.maxBytes {
		if b.closed.Load() {
			b.spaceMu.Unlock()
			return ErrClosed
		}
		if b.spares > 0 {
			// spare segment files are the first to go
			b.spaceMu.Unlock()
			dropped := b.dropSpares()
			b.spaceMu.Lock()
			if dropped {
				continue
			}
		}
		if b.opts.whenFull == DropOldest {
			b.spaceMu.Unlock()
			dropped := b.dropOldest()
			b.spaceMu.Lock()
			if dropped {
				continue
			}
		}
		// a consumed segment retention left for a later pass goes now
		b.kickRetention()
		if !waited {
			waited = true
			b.m.fullWaits.Add(1)
			b.rl.Warn("buffer-full", "buffer full, appends wait for outputs to free space",
				zap.Int64("max_bytes", b.opts.maxBytes), zap.Int64("used", b.used))
		}
		ch := b.spaceCh
		b.spaceWaiters++
		b.spaceMu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		case <-b.closing:
			err = ErrClosed
		}
		b.spaceMu.Lock()
		b.spaceWaiters--
		if err != nil {
			b.spaceMu.Unlock()
			return err
		}
	}
	b.reserved += n
	b.spaceMu.Unlock()
	return nil
}

// spaceChanged wakes appends waiting for space. Callers hold spaceMu.
func (b *Broker) spaceChangedLocked() {
	if b.spaceWaiters > 0 {
		close(b.spaceCh)
		b.spaceCh = make(chan struct{})
	}
}

// unreserve gives back an admitted frame that was not written.
func (b *Broker) unreserve(n int64) {
	b.spaceMu.Lock()
	b.reserved -= n
	b.spaceChangedLocked()
	b.spaceMu.Unlock()
}

// written turns reserved bytes into used bytes (plus extra, e.g. a new
// segment header).
func (b *Broker) written(reserved, extra int64) {
	b.spaceMu.Lock()
	b.reserved -= reserved
	b.used += reserved + extra
	if extra != 0 && b.opts.whenFull == DropOldest {
		b.spaceChangedLocked() // a new sealed segment may be droppable
	}
	b.spaceMu.Unlock()
}

// spareKept counts a consumed segment kept as a spare: its bytes stay
// counted.
func (b *Broker) spareKept() {
	b.spaceMu.Lock()
	b.spares++
	b.spaceChangedLocked() // an append waiting for space deletes it
	b.spaceMu.Unlock()
}

// spareTaken accounts a spare that became the next segment, which counts
// its bytes from then on (segment.credit).
func (b *Broker) spareTaken() {
	b.spaceMu.Lock()
	b.spares--
	b.spaceMu.Unlock()
}

// spareGone accounts a spare deleted.
func (b *Broker) spareGone(size int64) {
	b.spaceMu.Lock()
	b.spares--
	b.used -= size
	b.spaceChangedLocked()
	b.spaceMu.Unlock()
}

// freed accounts deleted segment bytes.
func (b *Broker) freed(n int64) {
	b.spaceMu.Lock()
	b.used -= n
	b.spaceChangedLocked()
	b.spaceMu.Unlock()
}
