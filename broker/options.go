package broker

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// SyncMode says when an append is acknowledged (buffer.sync).
type SyncMode int

const (
	// SyncInterval acknowledges once the periodic fdatasync covers the
	// record: an acknowledgement waits up to the sync interval (200ms by
	// default), so it suits clients that pipeline (AppendAsync, forward
	// clients with many chunks in flight) and want fewer IOPS.
	SyncInterval SyncMode = iota
	// SyncAlways (the default) acknowledges once an fdatasync covers the
	// record (group commit): an fdatasync starts as soon as an append waits
	// and none is running, and every append written meanwhile shares the
	// next one. A lone appender never waits for a timer.
	SyncAlways
	// SyncNone acknowledges once write(2) returned: safe against a process
	// kill, not against a power cut.
	SyncNone
)

// syncModes lists the modes by name, in the order users read them.
var syncModes = []enumName[SyncMode]{{"always", SyncAlways}, {"interval", SyncInterval}, {"none", SyncNone}}

func (m SyncMode) String() string { return enumString(syncModes, m, "SyncMode") }

// MarshalText writes the mode's name.
func (m SyncMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses a mode's name (config files decode through it).
func (m *SyncMode) UnmarshalText(b []byte) error { return enumParse(syncModes, string(b), m) }

// ParseSyncMode parses "always", "interval" or "none".
func ParseSyncMode(s string) (SyncMode, error) {
	var m SyncMode
	return m, m.UnmarshalText([]byte(s))
}

// FullPolicy says what happens when the buffer reaches max_bytes
// (buffer.when_full).
type FullPolicy int

const (
	// Block makes appends wait until space frees (backpressure).
	Block FullPolicy = iota
	// DropOldest deletes the oldest segment and counts the loss.
	DropOldest
)

var fullPolicies = []enumName[FullPolicy]{{"block", Block}, {"drop_oldest", DropOldest}}

func (p FullPolicy) String() string { return enumString(fullPolicies, p, "FullPolicy") }

// MarshalText writes the policy's name.
func (p FullPolicy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses a policy's name (config files decode through it).
func (p *FullPolicy) UnmarshalText(b []byte) error { return enumParse(fullPolicies, string(b), p) }

// ParseFullPolicy parses "block" or "drop_oldest".
func ParseFullPolicy(s string) (FullPolicy, error) {
	var p FullPolicy
	return p, p.UnmarshalText([]byte(s))
}

// enumName is one value of an enum and its name: each enum's list exists
// once, and String, parsing and the error message all read it.
type enumName[T comparable] struct {
	name string
	v    T
}

func enumString[T comparable](list []enumName[T], v T, typ string) string {
	for _, e := range list {
		if e.v == v {
			return e.name
		}
	}
	return fmt.Sprintf("%s(%v)", typ, any(v))
}

func enumParse[T comparable](list []enumName[T], s string, out *T) error {
	names := make([]string, len(list))
	for i, e := range list {
		if e.name == s {
			*out = e.v
			return nil
		}
		names[i] = e.name
	}
	return fmt.Errorf("%q is not one of %s", s, strings.Join(names, ", "))
}

// Option configures Open.
type Option func(*options)

type options struct {
	partitions   int
	segmentBytes int64
	maxBytes     int64
	sync         SyncMode
	syncInterval time.Duration
	whenFull     FullPolicy
	tailCache    int64
	reuse        bool
	logger       *zap.Logger
	registerer   prometheus.Registerer

	// test hooks
	openFile     func(path string, flag int) (segFile, error)
	syncDir      func(dir string) error
	rename       func(oldpath, newpath string) error
	writeMeta    func(path string, data []byte) error
	flushEvery   time.Duration
	retryBackoff time.Duration
}

func defaultOptions() options {
	return options{
		partitions:   4,
		segmentBytes: 64 << 20,
		maxBytes:     1 << 30,
		sync:         SyncAlways,
		syncInterval: 200 * time.Millisecond,
		whenFull:     Block,
		tailCache:    16 << 20,
		reuse:        true,
		logger:       zap.NewNop(),
		openFile:     openOSFile,
		syncDir:      syncDir,
		rename:       os.Rename,
		writeMeta:    writeFileAtomic,
		flushEvery:   250 * time.Millisecond,
		retryBackoff: 50 * time.Millisecond,
	}
}

// WithPartitions sets the number of partitions appended to. Default 4.
func WithPartitions(n int) Option { return func(o *options) { o.partitions = n } }

// WithSegmentBytes sets the size at which a segment file is sealed and a new
// one started. Default 64 MiB. It is capped at max_bytes/(2*partitions).
func WithSegmentBytes(n int64) Option { return func(o *options) { o.segmentBytes = n } }

// WithMaxBytes sets the size of the whole buffer on disk (the sum of the
// segment files). Default 1 GiB.
func WithMaxBytes(n int64) Option { return func(o *options) { o.maxBytes = n } }

// WithSync sets when appends are acknowledged. Default SyncAlways.
func WithSync(m SyncMode) Option { return func(o *options) { o.sync = m } }

// WithSyncInterval sets the fdatasync period of SyncInterval; an
// acknowledgement waits up to this long. SyncAlways and SyncNone ignore it.
// Default 200ms.
func WithSyncInterval(d time.Duration) Option { return func(o *options) { o.syncInterval = d } }

// WithWhenFull sets what happens when the buffer is full. Default Block.
func WithWhenFull(p FullPolicy) Option { return func(o *options) { o.whenFull = p } }

// WithTailCache sets how many bytes of the records just appended the buffer
// keeps in memory, in all, for the cursors reading right behind the writer,
// which then take them from there instead of reading them back from the
// segment files (see tailcache.go). Each partition gets an equal share, so
// memory does not grow with the number of partitions (nor with cursors that
// lag: a lagging cursor holds at most its partition's share). 0 turns it
// off. Default 16 MiB (4 MiB per partition with the default 4).
func WithTailCache(n int64) Option { return func(o *options) { o.tailCache = n } }

// WithSegmentReuse sets whether a segment file every cursor consumed is
// kept (one per partition, counted in max_bytes) and written over as the
// partition's next segment instead of being deleted and a new file
// created. Writing over blocks the file already has spares the filesystem
// allocating them, and an fdatasync then has no file size to make durable:
// on ext4 that made an fdatasync of 200 KB appended records take half the
// time and CPU (docs/benchmarks.md). Copy-on-write filesystems (btrfs,
// ZFS) gain nothing from it. Default true.
func WithSegmentReuse(on bool) Option { return func(o *options) { o.reuse = on } }

// WithLogger sets the logger. Default zap.NewNop().
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the broker's metrics (prefixed
// logship_buffer_) with r; Close unregisters them. Default nil: no metrics
// are registered.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

// withOpenFile replaces how segment files are opened (fault injection in
// tests).
func withOpenFile(f func(path string, flag int) (segFile, error)) Option {
	return func(o *options) { o.openFile = f }
}

// withSyncDir replaces how the partition directory is fsync'd after a
// segment was created (tests simulating a power cut).
func withSyncDir(f func(dir string) error) Option { return func(o *options) { o.syncDir = f } }

// withRename replaces how a consumed segment file is renamed to be kept as
// a spare and a spare to be the next segment (tests simulating a power
// cut).
func withRename(f func(oldpath, newpath string) error) Option {
	return func(o *options) { o.rename = f }
}

// withWriteMeta replaces how META is written (fault injection in tests).
func withWriteMeta(f func(path string, data []byte) error) Option {
	return func(o *options) { o.writeMeta = f }
}

// withFlushEvery sets the cursor flusher period. Default 250ms.
func withFlushEvery(d time.Duration) Option { return func(o *options) { o.flushEvery = d } }

// WithCursorFlushInterval sets how often committed cursor positions are
// persisted. After a crash an output delivers again at most what it
// committed in the last interval. Default 250ms.
func WithCursorFlushInterval(d time.Duration) Option { return withFlushEvery(d) }

// withRetryBackoff sets the first wait after a full disk. Default 50ms.
func withRetryBackoff(d time.Duration) Option { return func(o *options) { o.retryBackoff = d } }

func (o *options) validate() error {
	if o.partitions < 1 || o.partitions > 9999 {
		return fmt.Errorf("broker: partitions must be in [1, 9999], got %d", o.partitions)
	}
	if o.segmentBytes < minSegmentBytes {
		return fmt.Errorf("broker: segment bytes must be at least %d, got %d", minSegmentBytes, o.segmentBytes)
	}
	if o.maxBytes < 2*minSegmentBytes*int64(o.partitions) {
		return fmt.Errorf("broker: max bytes must be at least %d for %d partitions, got %d",
			2*minSegmentBytes*int64(o.partitions), o.partitions, o.maxBytes)
	}
	if o.syncInterval <= 0 {
		return fmt.Errorf("broker: sync interval must be positive, got %s", o.syncInterval)
	}
	switch o.sync {
	case SyncAlways, SyncInterval, SyncNone:
	default:
		return fmt.Errorf("broker: unknown sync mode %d", int(o.sync))
	}
	switch o.whenFull {
	case Block, DropOldest:
	default:
		return fmt.Errorf("broker: unknown when_full policy %d", int(o.whenFull))
	}
	if o.logger == nil {
		o.logger = zap.NewNop()
	}
	return nil
}
