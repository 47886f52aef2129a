package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/ratelog"
)

// Component is one built plugin instance with what the runner needs to
// know about it.
type Component struct {
	Name     string
	Type     string
	Kind     Kind
	Matcher  *Matcher // filters and outputs
	Instance any      // an Input, Filter or Output
	Metrics  *ComponentMetrics
}

// Runner wires inputs, filters, the buffer and outputs, and starts and
// stops them in order: outputs first, then inputs; on stop, inputs first,
// then a drain, then outputs.
type Runner struct {
	buf     *broker.Broker
	log     *zap.Logger
	rl      *ratelog.Logger
	inputs  []Component
	filters []Component
	outputs []Component

	loopCtx    context.Context // ends the output loops and in-flight writes
	cancelLoop context.CancelFunc
	runCtx     context.Context // ends when draining begins
	cancelRun  context.CancelFunc
	draining   chan struct{}
	loops      sync.WaitGroup
	started    []Component // for a clean unwind when Start fails half-way

	// Backoff bounds for outputs that return retryable errors.
	MinBackoff, MaxBackoff time.Duration
	// IdleDrain is how long an output loop that is draining waits for more
	// data before it counts itself caught up.
	IdleDrain time.Duration
}

// NewRunner builds a runner. The buffer stays open after Stop: the caller
// owns it, and a reloaded pipeline reuses it.
func NewRunner(buf *broker.Broker, log *zap.Logger, inputs, filters, outputs []Component) *Runner {
	return &Runner{
		buf: buf, log: log, rl: ratelog.New(log, 10*time.Second), inputs: inputs, filters: filters, outputs: outputs,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second, IdleDrain: 100 * time.Millisecond,
	}
}

// Start starts every output with its cursor loops, then every input. If a
// component fails to start, what started is stopped again.
func (r *Runner) Start(ctx context.Context) error {
	r.loopCtx, r.cancelLoop = context.WithCancel(context.Background())
	r.runCtx, r.cancelRun = context.WithCancel(r.loopCtx)
	r.draining = make(chan struct{})
	for _, c := range r.outputs {
		out, ok := c.Instance.(Output)
		if !ok {
			return r.abort(ctx, fmt.Errorf("%s is not an output", c.Name))
		}
		if err := out.Start(ctx); err != nil {
			return r.abort(ctx, fmt.Errorf("start output %s: %w", c.Name, err))
		}
		r.started = append(r.started, c)
		cursors := make([]*broker.Cursor, r.buf.Partitions())
		for p := range cursors {
			cur, err := r.buf.Cursor(c.Name, p)
			if err != nil {
				for _, opened := range cursors[:p] {
					_ = opened.Close()
				}
				return r.abort(ctx, fmt.Errorf("output %s: cursor of partition %d: %w", c.Name, p, err))
			}
			cursors[p] = cur
		}
		for _, cur := range cursors {
			r.loops.Add(1)
			go r.outputLoop(c, out, cur)
		}
	}
	for _, c := range r.inputs {
		in, ok := c.Instance.(Input)
		if !ok {
			return r.abort(ctx, fmt.Errorf("%s is not an input", c.Name))
		}
		if err := in.Start(ctx, &emitter{r: r, name: c.Name, metrics: c.Metrics, log: r.log.With(zap.String("input", c.Name))}); err != nil {
			return r.abort(ctx, fmt.Errorf("start input %s: %w", c.Name, err))
		}
		r.started = append(r.started, c)
	}
	return nil
}

func (r *Runner) abort(ctx context.Context, err error) error {
	close(r.draining)
	r.cancelRun()
	r.cancelLoop()
	r.loops.Wait()
	for i := len(r.started) - 1; i >= 0; i-- {
		c := r.started[i]
		switch x := c.Instance.(type) {
		case Input:
			_ = x.Stop(ctx)
		case Output:
			_ = x.Stop(ctx)
		}
	}
	_ = r.buf.Flush()
	return err
}

// Stop stops the inputs (each waits until what it emitted is acknowledged),
// then lets the outputs deliver what is buffered until they are caught up,
// fail, or ctx is done, then stops the outputs and persists the cursors.
// What was not delivered stays in the buffer.
func (r *Runner) Stop(ctx context.Context) error {
	var errs []error
	for i := len(r.inputs) - 1; i >= 0; i-- {
		c := r.inputs[i]
		if err := c.Instance.(Input).Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop input %s: %w", c.Name, err))
		}
	}
	close(r.draining)
	r.cancelRun()
	done := make(chan struct{})
	go func() { r.loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("shutdown timeout: outputs stopped before they caught up; the rest stays buffered")
		r.cancelLoop()
		<-done
	}
	r.cancelLoop()
	for i := len(r.outputs) - 1; i >= 0; i-- {
		c := r.outputs[i]
		if err := c.Instance.(Output).Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop output %s: %w", c.Name, err))
		}
	}
	if err := r.buf.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("persist cursors: %w", err))
	}
	return errors.Join(errs...)
}

// emitter is the Emitter an input gets: filters, then the buffer.
type emitter struct {
	r       *Runner
	name    string
	metrics *ComponentMetrics
	log     *zap.Logger
}

func (e *emitter) Emit(ctx context.Context, c Chunk, ack AckFunc) error {
	if c.Count == 0 {
		ack(nil)
		return nil
	}
	e.metrics.RecordsIn.Add(float64(c.Count))
	e.metrics.BytesIn.Add(float64(len(c.Entries)))
	for _, f := range e.r.filters {
		if !f.Matcher.Match(c.Tag) {
			continue
		}
		in := c.Count
		f.Metrics.RecordsIn.Add(float64(in))
		out, err := f.Instance.(Filter).Filter(c)
		if err != nil {
			f.Metrics.Error("filter")
			ack(fmt.Errorf("filter %s: %w", f.Name, err))
			return nil
		}
		f.Metrics.RecordsOut.Add(float64(out.Count))
		if out.Count < in {
			f.Metrics.Dropped("filtered", in-out.Count)
		}
		if out.Count == 0 {
			ack(nil)
			return nil
		}
		c = out
	}
	if max := e.r.buf.MaxChunkBytes(); int64(len(c.Tag)+len(c.Entries)) > max {
		return e.emitTooLarge(ctx, c, max, ack)
	}
	err := e.r.buf.AppendAsync(ctx, c.Tag, c.Entries, c.Count, func(_ broker.Pos, err error) {
		if err != nil {
			e.metrics.Error("buffer")
		}
		ack(err)
	})
	if isTooLarge(err) { // the tag alone is more than a record can hold
		e.dropTooLarge(c.Tag, c.Count, int64(len(c.Tag)+len(c.Entries)), err)
		ack(nil)
		return nil
	}
	if err == nil {
		e.metrics.RecordsOut.Add(float64(c.Count))
		e.metrics.BytesOut.Add(float64(len(c.Entries)))
	}
	return err
}

// commitQueue commits a cursor over batches that complete out of order:
// the cursor moves to the end of the longest run of completed offsets.
type commitQueue struct {
	mu      sync.Mutex
	cur     *broker.Cursor
	offsets []uint64
	done    []bool
	failed  bool
}

func (q *commitQueue) push(off uint64) {
	q.mu.Lock()
	q.offsets = append(q.offsets, off)
	q.done = append(q.done, false)
	q.mu.Unlock()
}

// complete marks off delivered (ok) or abandoned (!ok: nothing at or after
// it is committed any more).
func (q *commitQueue) complete(off uint64, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !ok {
		q.failed = true
	}
	for i, o := range q.offsets {
		if o == off {
			q.done[i] = true
			break
		}
	}
	if q.failed {
		return
	}
	n := 0
	for n < len(q.done) && q.done[n] {
		n++
	}
	if n > 0 {
		_ = q.cur.Commit(q.offsets[n-1])
		q.offsets = q.offsets[n:]
		q.done = q.done[n:]
	}
}

func (r *Runner) outputLoop(c Component, out Output, cur *broker.Cursor) {
	defer r.loops.Done()
	defer func() { _ = cur.Close() }()
	log := r.log.With(zap.String("output", c.Name))
	pipelined, _ := out.(PipelinedOutput)
	var sem chan struct{}
	if pipelined != nil {
		sem = make(chan struct{}, max(1, pipelined.MaxInFlight()))
	}
	q := &commitQueue{cur: cur}
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		rec, err := r.next(cur)
		if err != nil {
			return
		}
		if !c.Matcher.Match(rec.Tag) {
			q.push(rec.Offset)
			q.complete(rec.Offset, true)
			continue
		}
		b := Batch{Chunk: Chunk{Tag: rec.Tag, Entries: rec.Entries, Count: rec.Count}, Partition: rec.Partition, Offset: rec.Offset, Epoch: rec.Epoch}
		q.push(rec.Offset)
		if pipelined != nil {
			select {
			case sem <- struct{}{}:
			case <-r.loopCtx.Done():
				return
			}
			inflight.Add(1)
			pipelined.WriteAsync(r.loopCtx, b, func(err error) {
				defer inflight.Done()
				defer func() { <-sem }()
				q.complete(b.Offset, r.delivered(c, log, b, err))
			})
			continue
		}
		if !r.deliver(c, out, log, b) {
			q.complete(b.Offset, false)
			return
		}
		q.complete(b.Offset, true)
	}
}

// next reads the next record. Once draining, a loop that finds no data
// for IdleDrain is caught up, and next returns an error that ends it.
func (r *Runner) next(cur *broker.Cursor) (broker.Record, error) {
	for {
		select {
		case <-r.draining:
			ctx, cancel := context.WithTimeout(r.loopCtx, r.IdleDrain)
			defer cancel()
			return cur.Next(ctx)
		default:
		}
		rec, err := cur.Next(r.runCtx)
		if err != nil && r.loopCtx.Err() == nil && r.runCtx.Err() != nil {
			continue // draining began: read on until caught up
		}
		return rec, err
	}
}

// delivered accounts for a finished delivery and says whether the cursor
// may move past it.
func (r *Runner) delivered(c Component, log *zap.Logger, b Batch, err error) bool {
	switch {
	case err == nil:
		c.Metrics.RecordsOut.Add(float64(b.Count))
		c.Metrics.BytesOut.Add(float64(len(b.Entries)))
		return true
	case IsPermanent(err):
		c.Metrics.Dropped("permanent_error", b.Count)
		c.Metrics.Error("permanent")
		log.Error("batch dropped: it can never be delivered", zap.Int("partition", b.Partition), zap.Uint64("offset", b.Offset), zap.Int("events", b.Count), zap.Error(err))
		return true
	default:
		return false
	}
}

// deliver writes b, retrying with backoff, until it is accepted,
// permanently refused, or the loop must end (false).
func (r *Runner) deliver(c Component, out Output, log *zap.Logger, b Batch) bool {
	backoff := r.MinBackoff
	for attempt := 1; ; attempt++ {
		err := out.Write(r.loopCtx, b)
		if err == nil || IsPermanent(err) {
			return r.delivered(c, log, b, err)
		}
		c.Metrics.Error("write")
		if r.loopCtx.Err() != nil {
			return false
		}
		select {
		case <-r.draining:
			log.Warn("delivery failed while stopping; the batch stays buffered", zap.Error(err))
			return false
		default:
		}
		c.Metrics.Retries.Inc()
		wait := jitter(backoff)
		log.Warn("delivery failed, retrying", zap.Int("attempt", attempt), zap.Duration("in", wait), zap.Int("partition", b.Partition), zap.Uint64("offset", b.Offset), zap.Error(err))
		select {
		case <-time.After(wait):
		case <-r.loopCtx.Done():
			return false
		case <-r.draining:
			return false
		}
		backoff = min(backoff*2, r.MaxBackoff)
	}
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}
