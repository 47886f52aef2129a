// Package dummy is the dummy input: it generates events, for demos, tests
// and load. Every event is the configured record plus a sequence number.
//
//	inputs:
//	  - type: dummy
//	    tag: dummy
//	    record: {message: hello}
//	    rate: 10        # events per second; 0 = as fast as the buffer takes them
//	    count: 0        # stop after this many events; 0 = endless
package dummy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
)

// Config is the dummy input's configuration.
type Config struct {
	// Tag is the tag of every generated event.
	Tag string `yaml:"tag"`
	// Record is the event's record; the sequence field is added to it.
	Record map[string]any `yaml:"record"`
	// Rate is the number of events per second; 0 generates as fast as the
	// buffer accepts.
	Rate float64 `yaml:"rate"`
	// Count stops the input after this many events; 0 is endless.
	Count int64 `yaml:"count"`
	// SequenceKey is the field holding the event's sequence number,
	// counting from StartSequence; "" leaves it out.
	SequenceKey string `yaml:"sequence_key"`
	// StartSequence is the first sequence number.
	StartSequence int64 `yaml:"start_sequence"`
	// ChunkEvents is the largest number of events in one chunk.
	ChunkEvents int `yaml:"chunk_events"`
}

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	if c.Tag == "" {
		errs = append(errs, pipeline.FieldErr("tag", "must not be empty"))
	}
	if c.Rate < 0 {
		errs = append(errs, pipeline.FieldErr("rate", "must not be negative"))
	}
	if c.Count < 0 {
		errs = append(errs, pipeline.FieldErr("count", "must not be negative"))
	}
	if c.ChunkEvents < 1 {
		errs = append(errs, pipeline.FieldErr("chunk_events", "must be at least 1"))
	}
	if _, ok := c.Record[c.SequenceKey]; ok && c.SequenceKey != "" {
		errs = append(errs, pipeline.FieldErr("sequence_key", "%q is also a key of record", c.SequenceKey))
	}
	return errors.Join(errs...)
}

// Factory registers the dummy input.
func Factory() pipeline.Factory {
	return pipeline.NewInputFactory("dummy",
		func() *Config {
			return &Config{Tag: "dummy", Record: map[string]any{"message": "dummy"}, Rate: 1, SequenceKey: "seq", ChunkEvents: 1000}
		},
		func(set pipeline.Settings, cfg *Config) (pipeline.Input, error) { return New(set, cfg) })
}

var _ pipeline.Input = (*Input)(nil)

// Input generates events.
type Input struct {
	set    pipeline.Settings
	cfg    *Config
	prefix []byte // the record's map header and fields, without the sequence
	fields int

	cancel  context.CancelFunc
	done    chan struct{}
	pending sync.WaitGroup
}

// New builds a dummy input.
func New(set pipeline.Settings, cfg *Config) (*Input, error) {
	in := &Input{set: set, cfg: cfg}
	for k, v := range cfg.Record {
		kb, err := msgpack.Marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := msgpack.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("record.%s: %w", k, err)
		}
		in.prefix = append(append(in.prefix, kb...), vb...)
		in.fields++
	}
	return in, nil
}

// Start implements pipeline.Input.
func (in *Input) Start(_ context.Context, emit pipeline.Emitter) error {
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	in.done = make(chan struct{})
	go in.run(ctx, emit)
	return nil
}

func (in *Input) run(ctx context.Context, emit pipeline.Emitter) {
	defer close(in.done)
	seq := in.cfg.StartSequence
	end := int64(-1)
	if in.cfg.Count > 0 {
		end = in.cfg.StartSequence + in.cfg.Count
	}
	start := time.Now()
	var sent float64
	var buf []byte
	tick := time.Duration(0)
	if in.cfg.Rate > 0 {
		tick = max(time.Duration(float64(time.Second)/in.cfg.Rate), 10*time.Millisecond)
	}
	for end < 0 || seq < end {
		n := in.cfg.ChunkEvents
		if in.cfg.Rate > 0 {
			due := time.Since(start).Seconds()*in.cfg.Rate - sent
			if due < 1 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(tick):
				}
				continue
			}
			n = min(n, int(due))
		}
		if end >= 0 {
			n = int(min(int64(n), end-seq))
		}
		buf = buf[:0]
		now := mpack.Now()
		for range n {
			buf = in.appendEvent(buf, now, seq)
			seq++
		}
		sent += float64(n)
		in.pending.Add(1)
		err := emit.Emit(ctx, pipeline.Chunk{Tag: in.cfg.Tag, Entries: buf, Count: n}, func(err error) {
			if err != nil {
				in.set.Logger.Warn("chunk not stored", zap.Error(err))
				in.set.Metrics.Error("not_stored")
			}
			in.pending.Done()
		})
		if err != nil {
			in.pending.Done()
			return
		}
	}
}

func (in *Input) appendEvent(dst []byte, t mpack.EventTime, seq int64) []byte {
	dst = append(dst, 0x92)
	dst = t.AppendMsgpack(dst)
	fields := in.fields
	if in.cfg.SequenceKey != "" {
		fields++
	}
	dst = mpack.AppendMapHeader(dst, fields)
	dst = append(dst, in.prefix...)
	if in.cfg.SequenceKey != "" {
		dst = mpack.AppendString(dst, in.cfg.SequenceKey)
		dst = mpack.AppendInt(dst, seq)
	}
	return dst
}

// Stop implements pipeline.Input: it stops generating and waits for the
// acknowledgement of every emitted chunk.
func (in *Input) Stop(ctx context.Context) error {
	if in.cancel == nil {
		return nil
	}
	in.cancel()
	select {
	case <-in.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	acked := make(chan struct{})
	go func() { in.pending.Wait(); close(acked) }()
	select {
	case <-acked:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
