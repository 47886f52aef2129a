package tail

import (
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
)

// The formats a file may be written in.
const (
	FormatNone   = "none"
	FormatJSON   = "json"
	FormatCRI    = "cri"
	FormatDocker = "docker"
)

// Config is the tail input's configuration.
type Config struct {
	// Tag is the tag of every event read. Each '*' in it becomes the file's
	// path with '/' replaced by '.' and the leading '.' dropped: tag kube.*
	// and file /var/log/containers/a.log give kube.var.log.containers.a.log.
	Tag string `yaml:"tag"`
	// Paths are glob patterns (Go's filepath.Match syntax: *, ?, [a-z]) of
	// the files to read; symbolic links are followed.
	Paths []string `yaml:"paths"`
	// ExcludePaths are glob patterns of files not to read, matched against
	// the full path; a pattern without '/' is also matched against the
	// file's base name (exclude_paths: ["*.gz"]).
	ExcludePaths []string `yaml:"exclude_paths"`
	// ReadFromHead reads the files found at the very first start from
	// their beginning. When false they are read from their end (the
	// last, unfinished line included). Files that appear later, while
	// logship runs or while it was stopped, are always read from their
	// beginning, and files with a checkpoint resume from it.
	ReadFromHead bool `yaml:"read_from_head"`
	// Format is how lines become records: none gives {key: LINE}; json
	// parses each line as a JSON object (a line that is not one, or that
	// nests objects and arrays more than 128 levels deep, is kept as
	// {key: LINE}, never dropped, and counted in
	// logship_tail_unparsed_lines_total); cri reads containerd/CRI-O container
	// logs (time, stream, partial lines merged); docker reads Docker's
	// json-file logs (time, stream, 16KiB splits merged).
	Format string `yaml:"format"`
	// Key is the record field that holds the line (the log message for
	// cri and docker).
	Key string `yaml:"key"`
	// PathKey, when set, adds the file's path to every record under this
	// field.
	PathKey string `yaml:"path_key"`
	// RefreshInterval is how often the paths are globbed again for new,
	// rotated and deleted files, and how often every open file is checked
	// even when no file-system notification arrived (the safety net under
	// inotify). Between 10ms and 1h.
	RefreshInterval conftypes.Duration `yaml:"refresh_interval"`
	// IgnoreOlder skips files not modified for this long and closes open
	// ones that have been idle (fully read) for this long; a file written
	// again is picked up where its checkpoint left off. A file whose
	// checkpoint says it was not read to its end is never skipped. 0 turns
	// it off; otherwise between 1s and 87600h (ten years).
	IgnoreOlder conftypes.Duration `yaml:"ignore_older"`
	// RotateWait is how long a file that was renamed away or deleted is
	// still followed after it has been read to its end, for writers that
	// have not reopened their log yet. It is read to its end once more
	// before it is closed. At most 1h.
	RotateWait conftypes.Duration `yaml:"rotate_wait"`
	// MaxLineBytes is the longest line (and the longest merged cri/docker
	// message) kept in one record. A longer one is cut into records of at
	// most this size that carry the field split: true, except the last
	// piece, which carries split: false; reading never stops on a long
	// line. A multiline group that would grow past it is emitted and the
	// line starts the next group. Between 64 bytes and 16MiB.
	MaxLineBytes conftypes.Size `yaml:"max_line_bytes"`
	// ReadBufferBytes is the size of the blocks files are read in. Buffers
	// are shared: only the files being read at a moment hold one. Between
	// 4KiB and 64MiB, and larger than max_line_bytes.
	ReadBufferBytes conftypes.Size `yaml:"read_buffer_bytes"`
	// PartialFlushTimeout is how long a last line without its newline (or
	// a cri/docker message whose final part has not come) waits before it
	// is emitted as it is. 0 waits forever; at most 1h.
	PartialFlushTimeout conftypes.Duration `yaml:"partial_flush_timeout"`
	// Multiline joins lines into one record: a line matching start_regex
	// begins a record, the lines that follow and do not match are added to
	// it (joined with "\n").
	Multiline Multiline `yaml:"multiline"`
	// Batch bounds the chunks handed to the buffer.
	Batch Batch `yaml:"batch"`
}

// Multiline configures the joining of lines into records.
type Multiline struct {
	// StartRegex is a regular expression (Go RE2 syntax) matching the first
	// line of a record; "" turns multiline joining off.
	StartRegex string `yaml:"start_regex"`
	// FlushTimeout emits a record when no line has been added to it for
	// this long. Between 1ms and 1h.
	FlushTimeout conftypes.Duration `yaml:"flush_timeout"`
}

// Batch bounds the chunks the input emits. A chunk holds lines of one file
// only; its checkpoint moves once the buffer has it durable.
type Batch struct {
	// MaxEvents is the most events in one chunk, between 1 and 100000.
	MaxEvents int `yaml:"max_events"`
	// MaxBytes is the most bytes of msgpack entries in one chunk: an event
	// that would take a chunk past it starts the next one. A single event
	// larger than that (a line of up to max_line_bytes) is a chunk of its
	// own. Keep it well below what the buffer stores in one record
	// (about buffer.segment_bytes); a larger chunk is split by the
	// pipeline. Between 1KiB and 16MiB.
	MaxBytes conftypes.Size `yaml:"max_bytes"`
	// FlushInterval is how often a file that has been read to its end is
	// read again when it grows, so a file written a line at a time ships
	// chunks of many lines rather than one chunk per line. It is the most
	// latency it adds; 0 reads on every change. At most 1m.
	FlushInterval conftypes.Duration `yaml:"flush_interval"`
}

func defaultConfig() *Config {
	return &Config{
		Tag:                 "tail.*",
		Format:              FormatNone,
		Key:                 "log",
		RefreshInterval:     conftypes.Duration(time.Second),
		RotateWait:          conftypes.Duration(5 * time.Second),
		MaxLineBytes:        64 << 10,
		ReadBufferBytes:     256 << 10,
		PartialFlushTimeout: conftypes.Duration(5 * time.Second),
		Multiline:           Multiline{FlushTimeout: conftypes.Duration(time.Second)},
		Batch: Batch{
			MaxEvents:     1000,
			MaxBytes:      256 << 10,
			FlushInterval: conftypes.Duration(100 * time.Millisecond),
		},
	}
}

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	if c.Tag == "" {
		errs = append(errs, pipeline.FieldErr("tag", "must not be empty"))
	}
	if len(c.Paths) == 0 {
		errs = append(errs, pipeline.FieldErr("paths", "needs at least one glob pattern"))
	}
	for i, p := range c.Paths {
		if err := checkPattern(p); err != nil {
			errs = append(errs, pipeline.FieldErr("paths", "entry %d %q: %v", i, p, err))
		}
	}
	for i, p := range c.ExcludePaths {
		if err := checkPattern(p); err != nil {
			errs = append(errs, pipeline.FieldErr("exclude_paths", "entry %d %q: %v", i, p, err))
		}
	}
	switch c.Format {
	case FormatNone, FormatJSON, FormatCRI, FormatDocker:
	default:
		errs = append(errs, pipeline.FieldErr("format", "%q is not one of none, json, cri, docker", c.Format))
	}
	if c.Key == "" {
		errs = append(errs, pipeline.FieldErr("key", "must not be empty"))
	}
	if c.PathKey != "" && (c.PathKey == c.Key || c.PathKey == "stream" && (c.Format == FormatCRI || c.Format == FormatDocker) || c.PathKey == splitKey) {
		errs = append(errs, pipeline.FieldErr("path_key", "%q is already a field of every record", c.PathKey))
	}
	if (c.Format == FormatCRI || c.Format == FormatDocker) && c.Key == "stream" || c.Key == splitKey {
		errs = append(errs, pipeline.FieldErr("key", "%q is already a field of every record", c.Key))
	}
	durationIn(&errs, "refresh_interval", c.RefreshInterval, 10*time.Millisecond, maxRefreshInterval)
	if c.IgnoreOlder != 0 {
		durationIn(&errs, "ignore_older", c.IgnoreOlder, time.Second, maxIgnoreOlder)
	}
	durationIn(&errs, "rotate_wait", c.RotateWait, 0, maxRotateWait)
	durationIn(&errs, "partial_flush_timeout", c.PartialFlushTimeout, 0, maxFlushTimeout)
	sizeIn(&errs, "max_line_bytes", c.MaxLineBytes, 64, maxMaxLineBytes)
	if sizeIn(&errs, "read_buffer_bytes", c.ReadBufferBytes, 4<<10, maxReadBufferBytes) && c.ReadBufferBytes < c.MaxLineBytes+1 {
		errs = append(errs, pipeline.FieldErr("read_buffer_bytes", "must be larger than max_line_bytes (%v)", c.MaxLineBytes))
	}
	if c.Multiline.StartRegex != "" {
		if _, err := regexp.Compile(c.Multiline.StartRegex); err != nil {
			errs = append(errs, pipeline.FieldErr("multiline.start_regex", "%v", err))
		}
	}
	if c.Multiline.StartRegex != "" || c.Multiline.FlushTimeout != 0 {
		durationIn(&errs, "multiline.flush_timeout", c.Multiline.FlushTimeout, time.Millisecond, maxFlushTimeout)
	}
	if c.Batch.MaxEvents < 1 || c.Batch.MaxEvents > maxBatchEvents {
		errs = append(errs, pipeline.FieldErr("batch.max_events", "must be between 1 and %d", maxBatchEvents))
	}
	sizeIn(&errs, "batch.max_bytes", c.Batch.MaxBytes, 1<<10, maxBatchBytes)
	durationIn(&errs, "batch.flush_interval", c.Batch.FlushInterval, 0, maxBatchFlushInterval)
	return errors.Join(errs...)
}

// The bounds of the numbers in the config: far beyond any sensible
// setting, so that a typo (a missing unit, an extra zero) is an error
// rather than an input that polls never, holds gigabytes or waits for
// days.
const (
	maxRefreshInterval    = time.Hour
	maxIgnoreOlder        = 10 * 365 * 24 * time.Hour
	maxRotateWait         = time.Hour
	maxFlushTimeout       = time.Hour // partial_flush_timeout, multiline.flush_timeout
	maxMaxLineBytes       = 16 << 20
	maxReadBufferBytes    = 64 << 20
	maxBatchEvents        = 100_000
	maxBatchBytes         = 16 << 20
	maxBatchFlushInterval = time.Minute
)

// durationIn checks lo <= d <= hi and reports whether it holds.
func durationIn(errs *[]error, field string, d conftypes.Duration, lo, hi time.Duration) bool {
	switch {
	case d.D() < lo && lo == 0:
		*errs = append(*errs, pipeline.FieldErr(field, "must not be negative"))
	case d.D() < lo:
		*errs = append(*errs, pipeline.FieldErr(field, "must be at least %v", lo))
	case d.D() > hi:
		*errs = append(*errs, pipeline.FieldErr(field, "must be at most %v", hi))
	default:
		return true
	}
	return false
}

// sizeIn checks lo <= n <= hi and reports whether it holds.
func sizeIn(errs *[]error, field string, n, lo, hi conftypes.Size) bool {
	switch {
	case n < lo:
		*errs = append(*errs, pipeline.FieldErr(field, "must be at least %v", lo))
	case n > hi:
		*errs = append(*errs, pipeline.FieldErr(field, "must be at most %v", hi))
	default:
		return true
	}
	return false
}

func checkPattern(p string) error {
	if strings.TrimSpace(p) == "" {
		return errors.New("empty pattern")
	}
	if _, err := filepath.Match(p, ""); err != nil {
		return err
	}
	return nil
}
