package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
)

// fastSend is a chunk that WriteAsync's caller wrote itself on a
// connection already up, with no goroutine of its own: the connection's
// reader answers it when the ack arrives, close when the connection fails,
// a timer when the ack takes longer than ack_timeout, and the context when
// it ends. Whatever fails is sent again by a deliver goroutine, as any
// retry. This saves a goroutine and two goroutine wake-ups per chunk, which
// is most of the output's cost for small chunks (synchronous senders).
type fastSend struct {
	o     *Output
	c     *conn
	ctx   context.Context
	b     pipeline.Batch
	done  func(error)
	chunk string
	sent  time.Time
	timer *time.Timer
	stop  func() bool // the context.AfterFunc
	once  atomic.Bool
	// written is done once sendFast no longer writes: the frame may be
	// sent from b.Entries themselves, which must not be given back (done)
	// while a write still reads them.
	written sync.WaitGroup
}

// noFastSend turns sendFast off (tests and benchmarks of the deliver path).
var noFastSend bool

// fastWrote, when set (tests), runs once sendFast's write returned.
var fastWrote func()

// sendFast writes b on the current connection of its server when that
// needs no waiting (a connection is up, its write lock is free) and
// returns true: from then on the outcome reaches done through finish. It
// returns false, having written nothing, when the chunk must take the
// deliver goroutine. The caller counted b in o.wg and owns next, the
// partition's lane, which is closed once the frame was written.
func (o *Output) sendFast(ctx context.Context, b pipeline.Batch, done func(error), next chan struct{}) bool {
	if noFastSend || !o.cfg.RequireAck || ctx.Err() != nil {
		return false
	}
	s := o.pick(b.Partition)
	if s == nil {
		return false
	}
	s.mu.Lock()
	c := s.cur
	ok := c != nil && !c.oneShot && !s.stopped
	s.mu.Unlock()
	if !ok {
		return false
	}
	fp := o.frames.Get().(*[]byte)
	defer o.frames.Put(fp)
	chunk := forwardproto.EpochChunkID(o.sender, b.Epoch, uint16(b.Partition), b.Offset)
	// Uncompressed on plain TCP, the entries go out from where they are,
	// between the request's head and tail, in one writev: a copy of the
	// chunk fewer. Compressed or over TLS, the frame is built whole.
	var frame []byte
	var bufs net.Buffers
	if _, tcp := c.nc.(*net.TCPConn); tcp && o.comp == forwardproto.CompressNone {
		around, at := forwardproto.AppendPackedForwardAround((*fp)[:0], b.Tag, len(b.Entries), b.Count, chunk)
		*fp = around
		bufs = net.Buffers{around[:at], b.Entries, around[at:]}
	} else {
		enc := o.encs.Get().(*forwardproto.Encoder)
		f, err := enc.AppendPackedForward((*fp)[:0], b.Tag, b.Entries, b.Count, chunk, o.comp)
		o.encs.Put(enc)
		*fp, frame = f, f
		if err != nil {
			return false // deliver reports it
		}
	}
	// Another partition's chunk may be being written on the connection:
	// wait for it here (a frame takes microseconds) rather than hand the
	// chunk to a goroutine.
	select {
	case c.wlock <- struct{}{}:
	case <-c.closed:
		return false
	case <-ctx.Done():
		return false
	}
	f := &fastSend{o: o, c: c, ctx: ctx, b: b, done: done, chunk: chunk, sent: time.Now()}
	f.written.Add(1)
	o.m.inflight.Inc()
	// The ack timer and the context hook are set before the waiter is
	// registered (under c.mu, which the goroutines answering it take too):
	// from then on the ack may come, and finish stops them.
	timeout := o.cfg.AckTimeout.D()
	f.timer = time.AfterFunc(timeout, func() {
		c.close(&opError{"ack_timeout", fmt.Errorf("no ack for chunk %s within %s", chunk, timeout)}, true)
	})
	f.stop = context.AfterFunc(ctx, func() {
		_ = c.nc.SetWriteDeadline(time.Unix(1, 0)) // interrupts a write under way
		c.unregister(chunk, waiter{f: f})
		f.end(ctx.Err(), false)
	})
	if err := c.register(chunk, waiter{f: f}); err != nil {
		f.written.Done()
		<-c.wlock
		close(next)
		f.finish(err) // closed meanwhile: sent again by deliver
		return true
	}
	if ctx.Err() != nil { // the hook answers
		f.written.Done()
		<-c.wlock
		close(next)
		return true
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
	var err error
	if bufs != nil {
		_, err = bufs.WriteTo(c.nc)
	} else {
		_, err = c.nc.Write(frame)
	}
	if fastWrote != nil {
		fastWrote()
	}
	f.written.Done()
	<-c.wlock
	close(next)
	if err != nil {
		if ctx.Err() != nil {
			c.close(fmt.Errorf("write interrupted: %w", ctx.Err()), false)
		} else {
			c.close(&opError{"write", err}, true) // answers f: sent again
		}
	}
	return true
}

// finish is called once the chunk is acknowledged (nil) or failed on its
// connection; later calls do nothing.
func (f *fastSend) finish(err error) { f.end(err, true) }

// end is finish; stop says whether to unhook the context (not from the
// hook itself).
func (f *fastSend) end(err error, stop bool) {
	if !f.once.CompareAndSwap(false, true) {
		return
	}
	f.written.Wait() // a hook or a close may answer while the frame is being written
	f.timer.Stop()
	if stop {
		f.stop()
	}
	o := f.o
	o.m.inflight.Dec()
	if err == nil {
		o.m.acks.Inc()
		o.m.latency.Observe(time.Since(f.sent).Seconds())
		f.c.delivered()
		f.done(nil)
		o.wg.Done()
		return
	}
	switch {
	case f.ctx.Err() != nil:
		f.done(f.ctx.Err())
		o.wg.Done()
	case o.ctx.Err() != nil || errors.Is(err, ErrStopped):
		f.done(ErrStopped)
		o.wg.Done()
	default:
		// Sent again by a deliver goroutine, which takes over o.wg; the
		// chunk keeps its place (it was written in order once).
		o.set.Metrics.Retries.Inc()
		next := make(chan struct{})
		go o.deliver(f.ctx, f.b, f.done, nil, next)
	}
}
