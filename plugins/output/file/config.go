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
	// Path is the file events are appended to. Every event reaches it once,
	// even if logship is killed at any moment (the output keeps its state
	// under data_dir/output/NAME); a reload (SIGHUP) opens the path again
	// when the file was renamed away (logrotate).
	Path string `yaml:"path"`
	// Fsync makes every batch wait for fdatasync of the file and of the
	// output's state before the buffer's cursor moves past it: the file
	// then holds every event once across a power cut too. Without it a
	// power cut can take back the end of the file.
	Fsync bool `yaml:"fsync"`
	// Mode is the permission of a created file, in octal.
	Mode string `yaml:"mode"`

	jsonl.Format `yaml:",inline"`
}

func defaultConfig() *Config { return &Config{Mode: "0644"} }

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, pipeline.FieldErr("path", "is required"))
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
