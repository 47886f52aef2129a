package pipeline

import (
	"container/heap"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/logship/logship/broker"
)

// AckLevel says when an input's source gets the acknowledgement of a chunk
// (the input's `ack` option): the replication level the source's ack
// stands for, as Kafka's acks setting does for a producer.
type AckLevel string

// The acknowledgement levels.
const (
	// AckLocal acknowledges a chunk once it is durable in this process's
	// buffer (per buffer.sync). It survives a kill of the process (and,
	// under sync: always, a power cut) but not the loss of the host or its
	// disk. The default.
	AckLocal AckLevel = "local"
	// AckDownstream acknowledges a chunk once every output whose match
	// covers its tag has delivered it (the receiver accepted it: an
	// aggregator has it durably, Kafka has it under its acks setting) and
	// moved its cursor past it. It survives the loss of this whole host.
	//
	// Outputs that do not match the tag are not waited for; a chunk no
	// running output matches is acknowledged once durable, as under
	// AckLocal. A batch an output refuses for good (a Permanent error: the
	// runner counts and skips it) counts as delivered, so that the source
	// does not resend it forever. An output removed by a reload is no
	// longer waited for. While a matching output cannot deliver, the ack
	// waits: the source sees backpressure (a forward client stops getting
	// acks; the input's own bounds, such as the forward input's
	// max_pending_acks, bound what waits). Acks still waiting when the
	// pipeline stops are never called: the source resends those chunks
	// (at-least-once; the receiver's dedup covers it).
	AckDownstream AckLevel = "downstream"
)

// ParseAckLevel checks an `ack` value; "" is AckLocal.
func ParseAckLevel(s string) (AckLevel, error) {
	switch AckLevel(s) {
	case "", AckLocal:
		return AckLocal, nil
	case AckDownstream:
		return AckDownstream, nil
	}
	return "", fmt.Errorf("%q is not one of local, downstream", s)
}

// ackTracker holds, per output name, the downstream acks that wait for the
// output's cursors to commit past their records. Outputs are tracked by
// name, as their cursors are: an output restarted by a reload (same name,
// new config) goes on committing where the old one stopped.
type ackTracker struct {
	mu   sync.Mutex
	outs map[string]*outAcks
	// snap is what emitters match a chunk's tag against: the running
	// outputs with their matchers.
	snap atomic.Pointer[[]outMatch]
}

type outMatch struct {
	m    *Matcher
	acks *outAcks
}

// output returns the named output's waiters, creating them.
func (t *ackTracker) output(name string, partitions int) *outAcks {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.outs == nil {
		t.outs = map[string]*outAcks{}
	}
	o := t.outs[name]
	if o == nil {
		o = &outAcks{parts: make([]partAcks, partitions)}
		t.outs[name] = o
	}
	return o
}

// publish makes outs the set emitters wait for.
func (t *ackTracker) publish(outs []*outRun) {
	s := make([]outMatch, 0, len(outs))
	for _, o := range outs {
		s = append(s, outMatch{m: o.c.Matcher, acks: o.acks})
	}
	t.snap.Store(&s)
}

// forget stops waiting for the named output (removed by a reload): what
// waits for it alone is released.
func (t *ackTracker) forget(name string) {
	t.mu.Lock()
	o := t.outs[name]
	delete(t.outs, name)
	t.mu.Unlock()
	if o == nil {
		return
	}
	for p := range o.parts {
		pa := &o.parts[p]
		pa.mu.Lock()
		pa.gone = true
		waiting := pa.waiting
		pa.waiting = nil
		pa.mu.Unlock()
		for _, e := range waiting {
			e.w.release()
		}
	}
}

// matching returns the waiters of the running outputs that match tag.
func (t *ackTracker) matching(tag string) []*outAcks {
	snap := t.snap.Load()
	if snap == nil {
		return nil
	}
	var out []*outAcks
	for _, om := range *snap {
		if om.m == nil || om.m.Match(tag) {
			out = append(out, om.acks)
		}
	}
	return out
}

// outAcks is one output's waiters, per partition.
type outAcks struct {
	parts []partAcks
}

type partAcks struct {
	mu        sync.Mutex
	committed uint64 // the output's cursor: every offset below is delivered
	gone      bool   // forgotten: wait for nothing
	waiting   ackHeap
}

// wait registers w for the record at pos; false if the output already
// committed past it (or is forgotten) and there is nothing to wait for.
func (o *outAcks) wait(pos broker.Pos, w *downstreamAck) bool {
	if pos.Partition < 0 || pos.Partition >= len(o.parts) {
		return false
	}
	pa := &o.parts[pos.Partition]
	pa.mu.Lock()
	defer pa.mu.Unlock()
	if pa.gone || pos.Offset < pa.committed {
		return false
	}
	heap.Push(&pa.waiting, ackEntry{off: pos.Offset, w: w})
	return true
}

// committed records that the output's cursor of partition p committed
// every offset below next, and releases what waited for that.
func (o *outAcks) committed(p int, next uint64) {
	if p < 0 || p >= len(o.parts) {
		return
	}
	pa := &o.parts[p]
	pa.mu.Lock()
	if next <= pa.committed {
		pa.mu.Unlock()
		return
	}
	pa.committed = next
	var rel []*downstreamAck
	for len(pa.waiting) > 0 && pa.waiting[0].off < next {
		rel = append(rel, heap.Pop(&pa.waiting).(ackEntry).w)
	}
	pa.mu.Unlock()
	for _, w := range rel {
		w.release()
	}
}

type ackEntry struct {
	off uint64
	w   *downstreamAck
}

// ackHeap is a min-heap of waiting records by offset.
type ackHeap []ackEntry

func (h ackHeap) Len() int           { return len(h) }
func (h ackHeap) Less(i, j int) bool { return h[i].off < h[j].off }
func (h ackHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ackHeap) Push(x any)        { *h = append(*h, x.(ackEntry)) }
func (h *ackHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = ackEntry{}
	*h = old[:len(old)-1]
	return e
}

// downstreamAck is the ack of one chunk emitted by an input with
// ack: downstream. Each stored piece of the chunk (stored) registers with
// every matching output; once the whole chunk is durable (seal) and every
// registration is released, the input's ack is called.
type downstreamAck struct {
	ack     AckFunc
	outs    []*outAcks
	pending atomic.Int64 // registrations not released, +1 until sealed
	fired   atomic.Bool
	start   time.Time
	e       *emitter
}

func (e *emitter) downstream(tag string, ack AckFunc) *downstreamAck {
	w := &downstreamAck{ack: ack, outs: e.r.acks.matching(tag), start: time.Now(), e: e}
	w.pending.Store(1)
	return w
}

// stored registers a durable piece of the chunk. It runs before the
// piece's durable ack reaches seal.
func (w *downstreamAck) stored(pos broker.Pos) {
	for _, o := range w.outs {
		w.pending.Add(1)
		if !o.wait(pos, w) {
			w.release()
		}
	}
}

// seal is the chunk's durable ack: an error goes to the input at once
// (the chunk was not stored: the source resends it); nil lets the
// registrations decide.
func (w *downstreamAck) seal(err error) {
	if err != nil {
		if w.fired.CompareAndSwap(false, true) {
			w.ack(err)
		}
		return
	}
	w.release()
}

func (w *downstreamAck) release() {
	if w.pending.Add(-1) != 0 {
		return
	}
	if w.fired.CompareAndSwap(false, true) {
		if obs := w.e.ackObs; obs != nil {
			obs.Observe(time.Since(w.start).Seconds())
		}
		w.ack(nil)
	}
}
