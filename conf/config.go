// Package conf loads logship's YAML configuration: `${VAR}` expansion,
// per-role defaults, strict decoding (an unknown key is an error) and
// validation that reports every problem at once as `file:line: key: msg`.
// Each plugin owns its config struct; conf decodes a plugin's block into the
// struct its factory returns and calls its Validate.
package conf

import (
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
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// Buffer configures the durable partitioned buffer.
type Buffer struct {
	// Partitions is the number of partitions (1 to 1024); events of one
	// tag always go to one partition, so they keep their order.
	Partitions int `yaml:"partitions"`
	// MaxBytes bounds the whole buffer on disk: at least twice
	// segment_bytes and 8KiB per partition, at most 1024TiB. Segments are
	// capped at max_bytes/(2*partitions).
	MaxBytes Size `yaml:"max_bytes"`
	// SegmentBytes is the size at which a partition starts a new segment
	// file (4KiB to 1GiB); it also bounds the largest chunk stored.
	SegmentBytes Size `yaml:"segment_bytes"`
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
	Sync string `yaml:"sync"`
	// SyncInterval is the fdatasync period of sync: interval, and so the
	// longest an acknowledgement waits in that mode (1ms to 1m).
	SyncInterval Duration `yaml:"sync_interval"`
	// WhenFull is block (inputs wait: backpressure) or drop_oldest (the
	// oldest segment is deleted and the loss counted).
	WhenFull string `yaml:"when_full"`
}

// Plugin is one configured input, filter or output.
type Plugin struct {
	Kind    pipeline.Kind
	Type    string
	Name    string
	Match   string            // filters and outputs
	Matcher *pipeline.Matcher // compiled Match
	Config  pipeline.Config
	Factory pipeline.Factory
	Line    int // line of the block in the file
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
			ShutdownTimeout: Duration(30e9),
		},
		Buffer: Buffer{
			Partitions:   4,
			MaxBytes:     1 << 30,
			SegmentBytes: 64 << 20,
			Sync:         "always",
			SyncInterval: Duration(200e6),
			WhenFull:     "block",
		},
	}
}
