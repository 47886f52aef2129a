// Package stdout is the stdout output: every event as one JSON object per
// line on the process's standard output.
//
//	outputs:
//	  - type: stdout
//	    match: "**"
//	    tag_key: tag     # optional
//	    time_key: time   # optional
package stdout

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/output/internal/jsonl"
)

// Config is the stdout output's configuration.
type Config struct {
	jsonl.Format `yaml:",inline"`
}

// Validate implements pipeline.Config.
func (c *Config) Validate() error { return nil }

// Factory registers the stdout output.
func Factory() pipeline.Factory {
	return pipeline.NewOutputFactory("stdout", func() *Config { return &Config{} },
		func(set pipeline.Settings, cfg *Config) (pipeline.Output, error) {
			return New(set, cfg, os.Stdout), nil
		})
}

var _ pipeline.Output = (*Output)(nil)

// Output writes JSON lines to a writer.
type Output struct {
	cfg *Config
	set pipeline.Settings
	mu  sync.Mutex
	w   io.Writer
	buf []byte

	lastCut time.Time // the last log of records cut at the JSON depth limit
}

// New returns an output writing to w.
func New(set pipeline.Settings, cfg *Config, w io.Writer) *Output {
	return &Output{cfg: cfg, set: set, w: w}
}

// Start implements pipeline.Output.
func (o *Output) Start(context.Context) error { return nil }

// Write implements pipeline.Output.
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
	_, err = o.w.Write(o.buf)
	return err
}

// Stop implements pipeline.Output.
func (o *Output) Stop(context.Context) error { return nil }
