package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/ratelog"
)

// Component is one built plugin instance with what the runner needs to
// know about it.
type Component struct {
	Name    string
	Type    string
	Kind    Kind
	Matcher *Matcher // filters and outputs
	// Ack is when an input's source gets its ack (the input's `ack`
	// option); "" is AckLocal.
	Ack      AckLevel
	Instance // the field of Kind is set
	Metrics  *ComponentMetrics
}

// Runner wires inputs, filters, the buffer and outputs, and starts and
// stops them in order: outputs first, then inputs; on stop, inputs first,
// then a drain, then outputs. Update applies a new set of components while
// the ones that did not change keep running.
//
// Start, Update and Stop are serialised by mu; the emitters of running
// inputs read the filters through an atomic pointer, so an Update never
// waits for them.
type Runner struct {
	buf *broker.Broker
	log *zap.Logger
	rl  *ratelog.Logger

	mu       sync.Mutex
	inputs   []Component
	outputs  []*outRun
	filters  atomic.Pointer[[]Component]
	changing atomic.Bool // an Update is stopping or starting inputs
	acks     ackTracker  // downstream acks waiting for outputs' commits

	// Backoff bounds for outputs that return retryable errors.
	MinBackoff, MaxBackoff time.Duration
	// IdleDrain is how long an output loop that is draining waits for more
	// data before it counts itself caught up.
	IdleDrain time.Duration
}

// outRun is one running output: its cursor loops and the contexts that end
// them.
type outRun struct {
	c          Component
	out        Output
	loopCtx    context.Context // ends the loops and in-flight writes
	cancelLoop context.CancelFunc
	runCtx     context.Context // ends when draining begins
	cancelRun  context.CancelFunc
	draining   chan struct{}
	loops      sync.WaitGroup
	acks       *outAcks // downstream acks waiting for this output's commits
}

// NewRunner builds a runner. The buffer stays open after Stop: the caller
// owns it.
func NewRunner(buf *broker.Broker, log *zap.Logger, inputs, filters, outputs []Component) *Runner {
	r := &Runner{
		buf: buf, log: log, rl: ratelog.New(log, 10*time.Second), inputs: inputs,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second, IdleDrain: 100 * time.Millisecond,
	}
	r.filters.Store(&filters)
	for _, c := range outputs {
		r.outputs = append(r.outputs, &outRun{c: c})
	}
	return r
}

// Start starts every output with its cursor loops, then every input. If a
// component fails to start, what started is stopped again.
func (r *Runner) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	outs, ins := r.outputs, r.inputs
	r.outputs, r.inputs = nil, nil
	for _, o := range outs {
		if err := r.startOutput(ctx, o.c); err != nil {
			return r.abort(ctx, err)
		}
	}
	for _, c := range ins {
		if err := r.startInput(ctx, c); err != nil {
			return r.abort(ctx, err)
		}
	}
	return nil
}

func (r *Runner) startOutput(ctx context.Context, c Component) error {
	out := c.Output
	if out == nil {
		return fmt.Errorf("%s is not an output", c.Name)
	}
	if err := out.Start(ctx); err != nil {
		return fmt.Errorf("start output %s: %w", c.Name, err)
	}
	cursors := make([]*broker.Cursor, r.buf.Partitions())
	for p := range cursors {
		cur, err := r.buf.Cursor(c.Name, p)
		if err != nil {
			for _, opened := range cursors[:p] {
				_ = opened.Close()
			}
			_ = out.Stop(ctx)
			return fmt.Errorf("output %s: cursor of partition %d: %w", c.Name, p, err)
		}
		cursors[p] = cur
	}
	o := &outRun{c: c, out: out, draining: make(chan struct{}), acks: r.acks.output(c.Name, len(cursors))}
	for p, cur := range cursors {
		o.acks.committed(p, cur.Committed())
	}
	o.loopCtx, o.cancelLoop = context.WithCancel(context.Background())
	o.runCtx, o.cancelRun = context.WithCancel(o.loopCtx)
	for _, cur := range cursors {
		o.loops.Add(1)
		go r.outputLoop(o, cur)
	}
	r.outputs = append(r.outputs, o)
	r.acks.publish(r.outputs)
	return nil
}

func (r *Runner) startInput(ctx context.Context, c Component) error {
	in := c.Input
	if in == nil {
		return fmt.Errorf("%s is not an input", c.Name)
	}
	e := &emitter{r: r, name: c.Name, metrics: c.Metrics, log: r.log.With(zap.String("input", c.Name))}
	switch c.Ack {
	case "", AckLocal:
	case AckDownstream:
		e.downstreamAcks = true
		e.ackObs = c.Metrics.DownstreamAck()
	default:
		return fmt.Errorf("input %s: unknown ack level %q", c.Name, c.Ack)
	}
	if err := in.Start(ctx, e); err != nil {
		return fmt.Errorf("start input %s: %w", c.Name, err)
	}
	r.inputs = append(r.inputs, c)
	return nil
}

// halt ends an output's loops at once (no drain: what it did not deliver
// stays in the buffer for its cursor) and stops it.
func (o *outRun) halt(ctx context.Context) error {
	close(o.draining)
	o.cancelRun()
	o.cancelLoop()
	o.loops.Wait()
	return o.out.Stop(ctx)
}

func (r *Runner) abort(ctx context.Context, err error) error {
	for i := len(r.inputs) - 1; i >= 0; i-- {
		_ = r.inputs[i].Input.Stop(ctx)
	}
	for i := len(r.outputs) - 1; i >= 0; i-- {
		_ = r.outputs[i].halt(ctx)
	}
	r.inputs, r.outputs = nil, nil
	_ = r.buf.Flush()
	return err
}

// Update makes the running set of components the given one. A component
// whose Instance is already running keeps running untouched (inputs keep
// their connections and files, outputs their in-flight deliveries); running
// components that are not in the new set are stopped (inputs wait until what
// they emitted is acknowledged; outputs stop at once, and what they did not
// deliver stays in the buffer for their cursors); new ones are started,
// outputs before inputs. The filters are swapped at once.
//
// If a new component fails to start, Update returns the error with
// everything else applied: the caller may call Update again (with the
// previous set, rebuilt) to go back.
func (r *Runner) Update(ctx context.Context, inputs, filters, outputs []Component) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	keepIn := make(map[Instance]bool, len(inputs))
	for _, c := range inputs {
		keepIn[c.Instance] = true
	}
	running := make(map[Instance]bool, len(r.inputs))
	var kept []Component
	for _, c := range r.inputs {
		running[c.Instance] = true
		if keepIn[c.Instance] {
			kept = append(kept, c)
		}
	}
	var toStart []Component
	for _, c := range inputs {
		if !running[c.Instance] {
			toStart = append(toStart, c)
		}
	}
	if len(kept) != len(r.inputs) || len(toStart) > 0 {
		r.changing.Store(true)
		defer r.changing.Store(false)
	}
	for i := len(r.inputs) - 1; i >= 0; i-- {
		c := r.inputs[i]
		if keepIn[c.Instance] {
			continue
		}
		if err := c.Input.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop input %s: %w", c.Name, err))
		}
		r.log.Info("input stopped by reload", zap.String("input", c.Name))
	}
	r.inputs = kept
	old := r.filters.Swap(&filters)
	keepF := make(map[Instance]bool, len(filters))
	for _, c := range filters {
		keepF[c.Instance] = true
	}
	for _, c := range *old {
		if !keepF[c.Instance] {
			r.closeFilter(c)
		}
	}

	keepOut := make(map[Instance]bool, len(outputs))
	for _, c := range outputs {
		keepOut[c.Instance] = true
	}
	runningOut := make(map[Instance]bool, len(r.outputs))
	removed := make(map[string]bool)
	for _, o := range r.outputs {
		removed[o.c.Name] = true
	}
	for _, c := range outputs {
		delete(removed, c.Name)
	}
	var keptOut []*outRun
	for _, o := range r.outputs {
		if keepOut[o.c.Instance] {
			keptOut = append(keptOut, o)
			runningOut[o.c.Instance] = true
			continue
		}
		if err := o.halt(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop output %s: %w", o.c.Name, err))
		}
		r.log.Info("output stopped by reload", zap.String("output", o.c.Name))
	}
	r.outputs = keptOut
	r.acks.publish(r.outputs)
	// Downstream acks no longer wait for an output the new set lacks.
	for name := range removed {
		r.acks.forget(name)
	}
	if err := r.buf.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("persist cursors: %w", err))
	}
	for _, c := range outputs {
		if runningOut[c.Instance] {
			continue
		}
		if err := r.startOutput(ctx, c); err != nil {
			return errors.Join(append(errs, err)...)
		}
		r.log.Info("output started by reload", zap.String("output", c.Name))
	}
	for _, c := range toStart {
		if err := r.startInput(ctx, c); err != nil {
			return errors.Join(append(errs, err)...)
		}
		r.log.Info("input started by reload", zap.String("input", c.Name))
	}
	return errors.Join(errs...)
}

// Ready says whether every input is running and ready to take data: nil,
// or why not. An input may report on itself by implementing Readier.
func (r *Runner) Ready() error {
	if r.changing.Load() {
		return errors.New("reloading: inputs are being restarted")
	}
	if !r.mu.TryLock() {
		return nil // an Update or Stop that does not touch inputs
	}
	defer r.mu.Unlock()
	for _, c := range r.inputs {
		if rd, ok := c.Input.(Readier); ok {
			if err := rd.Ready(); err != nil {
				return fmt.Errorf("input %s: %w", c.Name, err)
			}
		}
	}
	return nil
}

// Stop stops the inputs (each waits until what it emitted is acknowledged),
// then lets the outputs deliver what is buffered until they are caught up,
// fail, or ctx is done, then stops the outputs and persists the cursors.
// What was not delivered stays in the buffer.
func (r *Runner) Stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for i := len(r.inputs) - 1; i >= 0; i-- {
		c := r.inputs[i]
		if err := c.Input.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop input %s: %w", c.Name, err))
		}
	}
	r.inputs = nil
	for _, o := range r.outputs {
		close(o.draining)
		o.cancelRun()
	}
	done := make(chan struct{})
	go func() {
		for _, o := range r.outputs {
			o.loops.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("shutdown timeout: outputs stopped before they caught up; the rest stays buffered")
		for _, o := range r.outputs {
			o.cancelLoop()
		}
		<-done
	}
	for i := len(r.outputs) - 1; i >= 0; i-- {
		o := r.outputs[i]
		o.cancelLoop()
		if err := o.out.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop output %s: %w", o.c.Name, err))
		}
	}
	r.outputs = nil
	for _, c := range *r.filters.Load() { // no input calls them any more
		r.closeFilter(c)
	}
	if err := r.buf.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("persist cursors: %w", err))
	}
	return errors.Join(errs...)
}

// closeFilter ends what a filter runs beside its Filter calls (requests,
// watches), when it has a Close: at Stop, and when a reload drops it. An
// input that took the filter set before the reload may still call it.
func (r *Runner) closeFilter(c Component) {
	cl, ok := c.Filter.(io.Closer)
	if !ok {
		return
	}
	if err := cl.Close(); err != nil {
		r.log.Warn("closing a filter failed", zap.String("filter", c.Name), zap.Error(err))
	}
}

// emitter is the Emitter an input gets: filters, then the buffer.
type emitter struct {
	r       *Runner
	name    string
	metrics *ComponentMetrics
	log     *zap.Logger
	pending pendingFloors // chunks with a Source awaiting their ack
	// downstreamAcks: ack: downstream, the input's ack waits for the
	// matching outputs (replication.go); ackObs times it.
	downstreamAcks bool
	ackObs         prometheus.Observer
}

func (e *emitter) Emit(ctx context.Context, c Chunk, ack AckFunc) error {
	// c.Own is handed on to the buffer with entries that still lie in it;
	// the memory of any other chunk that returns nil is given back here
	own := c.Own
	c.Own = nil
	handed, err := e.emit(ctx, c, own, ack)
	if err == nil && own != nil && !handed {
		broker.PutBuffer(own)
	}
	return err
}

// emit is Emit; handed reports that own went to the buffer.
func (e *emitter) emit(ctx context.Context, c Chunk, own *[]byte, ack AckFunc) (handed bool, err error) {
	if c.Count == 0 {
		ack(nil)
		return false, nil
	}
	entries := c.Entries
	e.metrics.RecordsIn.Add(float64(c.Count))
	e.metrics.BytesIn.Add(float64(len(c.Entries)))
	for _, f := range *e.r.filters.Load() {
		if !f.Matcher.Match(c.Tag) {
			continue
		}
		in := c.Count
		f.Metrics.RecordsIn.Add(float64(in))
		out, err := f.Filter.Filter(c)
		if err != nil {
			f.Metrics.Error("filter")
			ack(fmt.Errorf("filter %s: %w", f.Name, err))
			return false, nil
		}
		f.Metrics.RecordsOut.Add(float64(out.Count))
		if out.Count < in {
			f.Metrics.Dropped("filtered", in-out.Count)
		}
		if out.Count == 0 {
			ack(nil)
			return false, nil
		}
		c = out
	}
	if len(c.Entries) != len(entries) || len(entries) == 0 || &c.Entries[0] != &entries[0] {
		own = nil // a filter rewrote them: the buffer copies them
	}
	var meta []byte
	if src := c.Source; src != nil {
		if len(src) > maxSourceBytes {
			return false, fmt.Errorf("source position of %d bytes (max %d)", len(src), maxSourceBytes)
		}
		mb := metaPool.Get().(*[]byte)
		meta = encodeSource((*mb)[:0], e.name, src)
		// Every record of this chunk is stored at or after floor, and
		// Floor reports nothing above it until the input has its ack.
		sa := &sourceAck{e: e, inner: ack, p: e.r.buf.PartitionFor(c.Tag)}
		sa.floor = e.r.buf.NextOffset(sa.p)
		e.pending.add(sa.p, sa.floor)
		durable, stored := e.acks(c.Tag, sa.ack)
		handed, err := e.emitMeta(ctx, c, meta, own, durable, stored) // meta is not retained
		*mb = meta[:0]
		metaPool.Put(mb)
		if err != nil {
			e.pending.remove(sa.p, sa.floor) // no ack comes
		}
		return handed, err
	}
	durable, stored := e.acks(c.Tag, ack)
	return e.emitMeta(ctx, c, nil, own, durable, stored)
}

// acks returns the ack to call once a chunk of tag is durable, and the
// hook (nil if none) to call with the position of each stored piece first.
// Under ack: local, the input's ack is called at durability; under
// downstream, once the matching outputs delivered every piece.
func (e *emitter) acks(tag string, ack AckFunc) (AckFunc, func(broker.Pos)) {
	if !e.downstreamAcks {
		return ack, nil
	}
	w := e.downstream(tag, ack)
	return w.seal, w.stored
}

// emitMeta appends c, with meta in its (last) record, handing own (the
// memory c.Entries lie in, or nil) over to the buffer when it can: handed
// says it did. stored, if not nil, learns the position of each piece
// stored, before ack.
func (e *emitter) emitMeta(ctx context.Context, c Chunk, meta []byte, own *[]byte, ack AckFunc, stored func(broker.Pos)) (handed bool, err error) {
	extra := int64(0)
	if meta != nil {
		extra = 2 + int64(len(meta))
	}
	if max := e.r.buf.MaxChunkBytes(); int64(len(c.Tag)+len(c.Entries))+extra > max {
		return false, e.emitTooLarge(ctx, c, max-extra, meta, ack, stored)
	}
	err = e.r.buf.AppendAsyncOwned(ctx, c.Tag, meta, c.Entries, c.Count, own, func(pos broker.Pos, err error) {
		if err != nil {
			e.metrics.Error("buffer")
		} else if stored != nil {
			stored(pos)
		}
		ack(err)
	})
	if isTooLarge(err) { // the tag alone is more than a record can hold
		e.dropTooLarge(c.Tag, c.Count, int64(len(c.Tag)+len(c.Entries)), err)
		ack(nil)
		return false, nil
	}
	if err == nil {
		e.metrics.RecordsOut.Add(float64(c.Count))
		e.metrics.BytesOut.Add(float64(len(c.Entries)))
	}
	return err == nil && own != nil, err
}

// commitQueue commits a cursor over batches that complete out of order:
// the cursor moves to the end of the longest run of completed offsets.
type commitQueue struct {
	mu      sync.Mutex
	cur     *broker.Cursor
	acks    *outAcks // told of each commit (downstream acks)
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
		if q.cur.Commit(q.offsets[n-1]) == nil && q.acks != nil {
			q.acks.committed(q.cur.Partition(), q.offsets[n-1]+1)
		}
		q.offsets = q.offsets[n:]
		q.done = q.done[n:]
	}
}

func (r *Runner) outputLoop(o *outRun, cur *broker.Cursor) {
	defer o.loops.Done()
	c, out := o.c, o.out
	defer func() { _ = cur.Close() }()
	log := r.log.With(zap.String("output", c.Name))
	pipelined, _ := out.(PipelinedOutput)
	recycles := false
	if rc, ok := out.(BatchRecycler); ok {
		recycles = rc.RecyclesBatches()
	}
	var sem chan struct{}
	if pipelined != nil {
		sem = make(chan struct{}, max(1, pipelined.MaxInFlight()))
	}
	q := &commitQueue{cur: cur, acks: o.acks}
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		rec, err := r.next(o, cur)
		if err != nil {
			return
		}
		if !c.Matcher.Match(rec.Tag) {
			rec.Release()
			q.push(rec.Offset)
			q.complete(rec.Offset, true)
			continue
		}
		b := Batch{Chunk: Chunk{Tag: rec.Tag, Entries: rec.Entries, Count: rec.Count}, Partition: rec.Partition, Offset: rec.Offset, Epoch: rec.Epoch, Held: rec.Held()}
		q.push(rec.Offset)
		if pipelined != nil {
			select {
			case sem <- struct{}{}:
			case <-o.loopCtx.Done():
				return
			}
			inflight.Add(1)
			pipelined.WriteAsync(o.loopCtx, b, func(err error) {
				defer inflight.Done()
				defer func() { <-sem }()
				q.complete(b.Offset, r.delivered(c, log, b, err))
				if recycles {
					rec.Release()
				}
			})
			continue
		}
		ok := r.deliver(o, log, b)
		if recycles {
			rec.Release()
		}
		if !ok {
			q.complete(b.Offset, false)
			return
		}
		q.complete(b.Offset, true)
	}
}

// next reads the next record. Once draining, a loop that finds no data
// for IdleDrain is caught up, and next returns an error that ends it.
func (r *Runner) next(o *outRun, cur *broker.Cursor) (broker.Record, error) {
	for {
		select {
		case <-o.draining:
			ctx, cancel := context.WithTimeout(o.loopCtx, r.IdleDrain)
			defer cancel()
			return cur.Next(ctx)
		default:
		}
		rec, err := cur.Next(o.runCtx)
		if err != nil && o.loopCtx.Err() == nil && o.runCtx.Err() != nil {
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
func (r *Runner) deliver(o *outRun, log *zap.Logger, b Batch) bool {
	c := o.c
	backoff := r.MinBackoff
	for attempt := 1; ; attempt++ {
		err := o.out.Write(o.loopCtx, b)
		if err == nil || IsPermanent(err) {
			return r.delivered(c, log, b, err)
		}
		c.Metrics.Error("write")
		if o.loopCtx.Err() != nil {
			return false
		}
		select {
		case <-o.draining:
			log.Warn("delivery failed while stopping; the batch stays buffered", zap.Error(err))
			return false
		default:
		}
		c.Metrics.Retries.Inc()
		wait := jitter(backoff)
		log.Warn("delivery failed, retrying", zap.Int("attempt", attempt), zap.Duration("in", wait), zap.Int("partition", b.Partition), zap.Uint64("offset", b.Offset), zap.Error(err))
		select {
		case <-time.After(wait):
		case <-o.loopCtx.Done():
			return false
		case <-o.draining:
			return false
		}
		backoff = min(backoff*2, r.MaxBackoff)
	}
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}
