// Package conf loads logship's YAML configuration: `${VAR}` expansion,
// per-role defaults, strict decoding (an unknown key is an error) and
// validation that reports every problem at once as `file:line: key: msg`.
// Each plugin owns its config struct; conf decodes a plugin's block into the
// struct its factory returns and calls its Validate.
package conf

import (
	"errors"
	"time"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
)

// Role is what a role brings to its configuration: its name and how its
// defaults differ from the common ones. The role packages define theirs
// (agent.Role, aggregator.Role); conf knows no role by name.
type Role struct {
	Name string
	// Defaults sets the role's own defaults on the common ones; nil keeps
	// the common defaults.
	Defaults func(*Config)
	// DefaultInputs are the types of the inputs a config without any gets,
	// each with its plugin's defaults (the agent: a forward input). A
	// config that lists inputs gets only those; a type the registry lacks
	// is skipped.
	DefaultInputs []string
	// Adjust, when set, changes the role's defaults in view of the whole
	// file, once it is decoded: serviceSet holds the service keys the file
	// sets (those must be left as the file says).
	Adjust func(c *Config, serviceSet map[string]int)
}

// Config returns the configuration the role starts from before a file is
// applied: the common defaults with the role's own.
func (r Role) Config() *Config {
	c := CommonDefaults()
	c.Role = r.Name
	if r.Defaults != nil {
		r.Defaults(c)
	}
	return c
}

// Config is a whole configuration file, decoded and validated.
type Config struct {
	// Service holds process-wide settings.
	Service Service `yaml:"service"`
	// Buffer configures the durable partitioned buffer.
	Buffer Buffer `yaml:"buffer"`

	Inputs  []Plugin `yaml:"-"`
	Filters []Plugin `yaml:"-"`
	Outputs []Plugin `yaml:"-"`

	// File is the path the config was read from, Role the role it was
	// validated for.
	File string `yaml:"-"`
	Role string `yaml:"-"`
}

// Service holds process-wide settings.
type Service struct {
	// DataDir holds the buffer's segments, the outputs' cursors and the
	// inputs' checkpoints. It must survive restarts for the delivery
	// guarantee to hold.
	DataDir string `yaml:"data_dir"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is console (human-readable) or json.
	LogFormat string `yaml:"log_format"`
	// HTTPListen is the address of /metrics, /healthz and /readyz; ""
	// turns the server off.
	HTTPListen string `yaml:"http_listen"`
	// ShutdownTimeout bounds how long a stop waits for in-flight
	// deliveries; what is not delivered stays buffered.
	ShutdownTimeout conftypes.Duration `yaml:"shutdown_timeout"`
	// NodeName is this node's identity, given to every plugin: the forward
	// output sends it as its self_hostname. "" (the default) takes the
	// NODE_NAME environment variable (set it from the pod's spec.nodeName
	// in a Kubernetes DaemonSet), else the machine's hostname.
	NodeName string `yaml:"node_name"`
	// MemoryLimit is a soft limit on the memory of the Go runtime (the
	// heap, goroutine stacks and the runtime's own structures, not the
	// binary's code): as the process nears it the garbage collector runs
	// more often, trading CPU for memory (Go's GOMEMLIMIT). What the
	// plugins hold is bounded by their own settings (the forward input's
	// memory_limit, the forward output's max_in_flight_bytes); when they
	// need more than this, the process goes past it rather than fail, with
	// the collector using at most about half the CPU. 0 (the aggregator's
	// default) leaves the collector to its usual pacing, which lets the
	// heap grow to about twice what is live; the agent's default, 48MiB,
	// keeps it under 64MiB resident beside applications (128MiB when it has
	// a kafka output, whose batches in flight need more). The GOMEMLIMIT
	// environment variable, when set, takes precedence. At most 1TiB.
	MemoryLimit conftypes.Size `yaml:"memory_limit"`
}

// Buffer configures the durable partitioned buffer.
type Buffer struct {
	// Partitions is the number of partitions (1 to 1024); events of one
	// tag always go to one partition, so they keep their order.
	Partitions int `yaml:"partitions"`
	// MaxBytes bounds the whole buffer on disk: at least twice
	// segment_bytes and 8KiB per partition, at most 1024TiB. Segments are
	// capped at max_bytes/(2*partitions).
	MaxBytes conftypes.Size `yaml:"max_bytes"`
	// SegmentBytes is the size at which a partition starts a new segment
	// file (4KiB to 1GiB); it also bounds the largest chunk stored.
	SegmentBytes conftypes.Size `yaml:"segment_bytes"`
	// Sync says when a chunk is acknowledged. always (the default):
	// after an fdatasync that covers it; an fdatasync starts as soon as a
	// chunk waits and none is running, and every chunk written meanwhile
	// shares the next one (group commit), so a lone client is acknowledged
	// at once. interval: after the periodic fdatasync (every
	// sync_interval), so an acknowledgement waits up to sync_interval
	// (200ms by default); it is for those who want fewer IOPS and whose
	// clients pipeline many chunks. none: after write(2); survives a
	// process crash, not a power cut. Under always and interval outputs
	// read only what is synced; under none, what is written.
	Sync broker.SyncMode `yaml:"sync"`
	// SyncInterval is the fdatasync period of sync: interval, and so the
	// longest an acknowledgement waits in that mode (1ms to 1m).
	SyncInterval conftypes.Duration `yaml:"sync_interval"`
	// WhenFull is block (inputs wait: backpressure) or drop_oldest (the
	// oldest segment is deleted and the loss counted).
	WhenFull broker.FullPolicy `yaml:"when_full"`
	// ReuseSegments keeps, per partition, one segment file every output
	// has consumed and writes the next segment over it instead of
	// deleting it and creating a new file. Blocks the file already has
	// need no allocation, and an fdatasync then has no file size to make
	// durable: on ext4 an fdatasync of 200KB of chunks took half the time
	// and CPU (docs/benchmarks.md). The kept file counts in max_bytes and
	// is the first deleted when the buffer is full. false deletes
	// consumed segments at once, e.g. on copy-on-write filesystems (btrfs,
	// ZFS), which gain nothing from it.
	ReuseSegments bool `yaml:"reuse_segments"`
}

// Plugin is one configured input, filter or output.
type Plugin struct {
	Kind    pipeline.Kind
	Type    string
	Name    string
	Match   string            // filters and outputs
	Matcher *pipeline.Matcher // compiled Match
	Ack     pipeline.AckLevel // inputs: when the source gets its ack (local by default)
	Config  pipeline.Config
	Factory pipeline.Factory
	Line    int  // line of the block in the file
	Default bool // a role's default input: the file lists no inputs
}

// CommonDefaults returns the defaults every role shares. A role sets its
// own on top (Role.Config).
func CommonDefaults() *Config {
	return &Config{
		Service: Service{
			DataDir:         "./data",
			LogLevel:        "info",
			LogFormat:       "console",
			HTTPListen:      "127.0.0.1:2020",
			ShutdownTimeout: conftypes.Duration(30e9),
		},
		Buffer: Buffer{
			Partitions:    4,
			MaxBytes:      1 << 30,
			SegmentBytes:  64 << 20,
			Sync:          broker.SyncAlways,
			SyncInterval:  conftypes.Duration(200e6),
			WhenFull:      broker.Block,
			ReuseSegments: true,
		},
	}
}

// Validate checks the service block: every value an enum member, the data
// directory set.
func (s *Service) Validate() error {
	var errs []error
	if s.DataDir == "" {
		errs = append(errs, pipeline.FieldErr("data_dir", "must not be empty"))
	}
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, pipeline.FieldErr("log_level", "%q is not one of debug, info, warn, error", s.LogLevel))
	}
	switch s.LogFormat {
	case "console", "json":
	default:
		errs = append(errs, pipeline.FieldErr("log_format", "%q is not one of console, json", s.LogFormat))
	}
	if s.MemoryLimit < 0 || s.MemoryLimit > maxMemoryLimit {
		errs = append(errs, pipeline.FieldErr("memory_limit", "%s is out of range 0..%s", s.MemoryLimit, maxMemoryLimit))
	}
	if s.ShutdownTimeout < 0 || s.ShutdownTimeout > maxShutdownTimeout {
		errs = append(errs, pipeline.FieldErr("shutdown_timeout", "%s is out of range 0s..%s", s.ShutdownTimeout, maxShutdownTimeout))
	}
	return errors.Join(errs...)
}

// Bounds of the service and buffer settings.
const (
	maxShutdownTimeout = conftypes.Duration(time.Hour)
	maxMemoryLimit     = conftypes.Size(1 << 40)
	maxPartitions      = 1024
	minSegmentBytes    = conftypes.Size(4 << 10)
	maxSegmentBytes    = conftypes.Size(1 << 30)
	maxBufferBytes     = conftypes.Size(1 << 50) // 1 PiB
	minSyncInterval    = conftypes.Duration(time.Millisecond)
	maxSyncInterval    = conftypes.Duration(time.Minute)
)

// Validate bounds every number of the buffer block. The enums (sync,
// when_full) are checked by their own types when decoded.
func (b *Buffer) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, pipeline.FieldErr(field, format, args...))
	}
	partsOK := true
	if b.Partitions < 1 || b.Partitions > maxPartitions {
		add("partitions", "%d is out of range 1..%d", b.Partitions, maxPartitions)
		partsOK = false
	}
	segOK := true
	switch {
	case b.SegmentBytes < minSegmentBytes:
		add("segment_bytes", "%s is below the minimum %s", b.SegmentBytes, minSegmentBytes)
		segOK = false
	case b.SegmentBytes > maxSegmentBytes:
		add("segment_bytes", "%s is above the maximum %s", b.SegmentBytes, maxSegmentBytes)
		segOK = false
	}
	switch {
	case b.MaxBytes > maxBufferBytes:
		add("max_bytes", "%s is above the maximum %s", b.MaxBytes, maxBufferBytes)
	case segOK && b.MaxBytes < b.SegmentBytes*2:
		add("max_bytes", "%s must be at least twice segment_bytes (%s)", b.MaxBytes, b.SegmentBytes)
	case partsOK && b.MaxBytes < conftypes.Size(b.Partitions)*2*minSegmentBytes:
		// segments are capped at max_bytes/(2*partitions)
		add("max_bytes", "%s must be at least %s for %d partitions (two %s segments each)",
			b.MaxBytes, conftypes.Size(b.Partitions)*2*minSegmentBytes, b.Partitions, minSegmentBytes)
	}
	// checked in every mode: the broker refuses a zero interval whatever
	// the mode
	if b.SyncInterval < minSyncInterval || b.SyncInterval > maxSyncInterval {
		add("sync_interval", "%s is out of range %s..%s", b.SyncInterval, minSyncInterval, maxSyncInterval)
	}
	return errors.Join(errs...)
}
