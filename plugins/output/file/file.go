// Package file is the file output: every event as one JSON object per line,
// appended to a file. Parent directories are created. The file is opened
// again on every reload (SIGHUP), so logrotate's rename-then-HUP works.
//
//	outputs:
//	  - type: file
//	    match: "**"
//	    path: ./out/all.log
//	    tag_key: tag     # optional
//	    time_key: time   # optional
//	    fsync: false     # fdatasync after every batch
package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/output/internal/jsonl"
)

// Config is the file output's configuration.
type Config struct {
	// Path is the file events are appended to.
	Path string `yaml:"path"`
	// Fsync makes every batch wait for fdatasync before the buffer's cursor
	// moves past it: the file then survives a power cut too.
	Fsync bool `yaml:"fsync"`
	// Mode is the permission of a created file, in octal.
	Mode string `yaml:"mode"`

	jsonl.Format `yaml:",inline"`
}

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

// Factory registers the file output.
func Factory() pipeline.Factory {
	return pipeline.NewOutputFactory("file", func() *Config { return &Config{Mode: "0644"} },
		func(set pipeline.Settings, cfg *Config) (pipeline.Output, error) {
			return &Output{cfg: cfg, set: set}, nil
		})
}

var _ pipeline.Output = (*Output)(nil)

// Output appends JSON lines to a file.
type Output struct {
	cfg *Config
	set pipeline.Settings
	mu  sync.Mutex
	f   *os.File
	buf []byte

	lastCut time.Time // the last log of records cut at the JSON depth limit
}

// Start opens the file, creating it and its directories.
func (o *Output) Start(context.Context) error {
	perm, _ := o.cfg.perm()
	if err := os.MkdirAll(filepath.Dir(o.cfg.Path), 0o755); err != nil {
		return fmt.Errorf("file output %s: %w", o.set.Name, err)
	}
	f, err := os.OpenFile(o.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, perm)
	if err != nil {
		return fmt.Errorf("file output %s: %w", o.set.Name, err)
	}
	o.f = f
	return nil
}

// Write appends the batch with one write(2).
func (o *Output) Write(_ context.Context, b pipeline.Batch) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var err error
	var cut int
	o.buf, cut, err = o.cfg.Append(o.buf[:0], b)
	if err != nil {
		return pipeline.Permanent(err)
	}
	jsonl.CountCut(o.set, &o.lastCut, cut)
	if n, err := o.f.Write(o.buf); err != nil {
		// Cut a partial batch off (ENOSPC), so that the retry does not
		// leave a torn line behind.
		if n > 0 {
			if st, serr := o.f.Stat(); serr == nil {
				_ = o.f.Truncate(st.Size() - int64(n))
			}
		}
		return fmt.Errorf("write %s: %w", o.cfg.Path, err)
	}
	if o.cfg.Fsync {
		if err := unix.Fdatasync(int(o.f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", o.cfg.Path, err)
		}
	}
	return nil
}

// Stop closes the file.
func (o *Output) Stop(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return nil
	}
	err := o.f.Close()
	o.f = nil
	return err
}
