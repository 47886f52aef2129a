package file

import (
	"errors"
	"fmt"
	"os"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/output/internal/jsonl"
)

// Config is the file output's configuration.
type Config struct {
	// Path is the file events are appended to. It may be a template
	// ({tag}, {tag[N]}, {record.FIELD|default}: the syntax of the kafka
	// output's topic): path: ./out/{tag}.log writes each tag's events to a
	// file of its own. A rendered path must stay inside the directory
	// written before the first '{' (no '..', no absolute path from a
	// variable); an event whose path does not is dropped and counted under
	// dropped_records_total{reason="invalid_path"}. Every event reaches its
	// file once, even if logship is killed at any moment (the output keeps
	// its state under data_dir/output/NAME); a reload (SIGHUP) opens every
	// open path again when its file was renamed away (logrotate).
	Path string `yaml:"path"`
	// MaxOpenFiles bounds the files a templated path keeps open: the least
	// recently written one is closed when another is needed, and opened
	// again (appending) when an event goes to it again. A batch whose
	// records name more files (record fields in the path) holds them all
	// open until it is written.
	MaxOpenFiles int `yaml:"max_open_files"`
	// Fsync makes every batch wait for fdatasync of the file and of the
	// output's state before the buffer's cursor moves past it: the file
	// then holds every event once across a power cut too. Without it a
	// power cut can take back the end of the file.
	Fsync bool `yaml:"fsync"`
	// Mode is the permission of a created file, in octal.
	Mode string `yaml:"mode"`

	jsonl.Format `yaml:",inline"`
}

func defaultConfig() *Config { return &Config{Mode: "0644", MaxOpenFiles: 256} }

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, pipeline.FieldErr("path", "is required"))
	} else if _, err := parsePath(c.Path); err != nil {
		errs = append(errs, pipeline.FieldErr("path", "%v", err))
	}
	if c.MaxOpenFiles < 1 {
		errs = append(errs, pipeline.FieldErr("max_open_files", "must be at least 1, not %d", c.MaxOpenFiles))
	}
	if _, err := c.perm(); err != nil {
		errs = append(errs, pipeline.FieldErr("mode", "%v", err))
	}
	return errors.Join(errs...)
}

func (c *Config) perm() (os.FileMode, error) {
	var m uint32
	if _, err := fmt.Sscanf(c.Mode, "%o", &m); err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal permission such as 0644", c.Mode)
	}
	return os.FileMode(m), nil
}

// maxOpen is MaxOpenFiles, 256 when unset (an Output built in code).
func (c *Config) maxOpen() int {
	if c.MaxOpenFiles < 1 {
		return 256
	}
	return c.MaxOpenFiles
}
