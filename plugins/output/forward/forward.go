package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
)

// Factory registers the forward output.
func Factory() pipeline.Factory {
	return pipeline.NewOutputFactory("forward", defaultConfig,
		func(set pipeline.Settings, cfg *Config) (pipeline.Output, error) { return New(set, cfg) })
}

// ErrStopped is what a chunk still in flight gets when the output is
// stopped: it is not delivered and stays in the buffer.
var ErrStopped = errors.New("forward output stopped")

var compressions = map[string]forwardproto.Compression{
	"none": forwardproto.CompressNone,
	"gzip": forwardproto.CompressGzip,
	"zstd": forwardproto.CompressZstd,
}

var _ pipeline.PipelinedOutput = (*Output)(nil)

// Output is a forward output. It implements pipeline.PipelinedOutput.
type Output struct {
	set     pipeline.Settings
	cfg     Config // SelfHostname resolved
	log     *zap.Logger
	comp    forwardproto.Compression
	tlsConf *tls.Config
	m       *metrics
	sender  [6]byte
	salt    uint64 // from sender: this output's own rendezvous choices

	entries []*entry   // the configured servers; touched by Start and the resolve loop only
	lookup  LookupFunc // resolves their names
	maxPart atomic.Int32

	srvMu    sync.RWMutex
	servers  []*server          // what the entries resolve to now, by address
	draining map[string]*server // removed, waiting for their chunks in flight

	// ctx lives until Stop: dials and handshakes run under it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.RWMutex
	stopped bool
	wg      sync.WaitGroup // delivery, dial and reader goroutines

	wakeMu sync.Mutex
	wake   chan struct{} // closed (and replaced) when a server comes back

	laneMu sync.Mutex
	lanes  map[int]chan struct{} // per partition: closed once the last chunk handed in was first written

	encs   sync.Pool // *forwardproto.Encoder
	frames sync.Pool // *[]byte

	held *byteGate // max_in_flight_bytes
}

// byteGate bounds the bytes of the chunks in flight (max_in_flight_bytes).
type byteGate struct {
	mu    sync.Mutex
	limit int64
	used  int64
	freed chan struct{} // closed and replaced whenever bytes are released
}

func newByteGate(limit int64) *byteGate {
	return &byteGate{limit: limit, freed: make(chan struct{})}
}

// acquire takes n bytes, waiting while they would go past the limit and
// something is held; false when a or b ended first.
func (g *byteGate) acquire(a, b context.Context, n int64) bool {
	for {
		g.mu.Lock()
		if g.used == 0 || g.used+n <= g.limit {
			g.used += n
			g.mu.Unlock()
			return true
		}
		freed := g.freed
		g.mu.Unlock()
		select {
		case <-freed:
		case <-a.Done():
			return false
		case <-b.Done():
			return false
		}
	}
}

// release gives n bytes back.
func (g *byteGate) release(n int64) {
	g.mu.Lock()
	g.used -= n
	close(g.freed)
	g.freed = make(chan struct{})
	g.mu.Unlock()
}

// inUse is what the chunks in flight hold.
func (g *byteGate) inUse() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.used
}

// New builds the output. Connections are dialed on first use.
func New(set pipeline.Settings, cfg *Config) (*Output, error) {
	if set.Logger == nil {
		set.Logger = zap.NewNop()
	}
	if set.Metrics == nil {
		set.Metrics = pipeline.NopMetrics(pipeline.KindOutput, set.Name)
	}
	o := &Output{set: set, cfg: *cfg, log: set.Logger, lanes: map[int]chan struct{}{}, wake: make(chan struct{}),
		lookup: defaultLookup, draining: map[string]*server{}}
	o.maxPart.Store(-1)
	if o.cfg.SelfHostname == "" {
		o.cfg.SelfHostname = set.NodeName
	}
	if o.cfg.SelfHostname == "" {
		o.cfg.SelfHostname, _ = os.Hostname()
	}
	comp, ok := compressions[cfg.Compress]
	if !ok {
		return nil, fmt.Errorf("compress: %q is not one of gzip, zstd, none", cfg.Compress)
	}
	o.comp = comp
	if cfg.tlsEnabled() {
		tc, err := cfg.TLS.ClientConfig()
		if err != nil {
			return nil, err
		}
		o.tlsConf = tc
	}
	o.m = newMetrics(set)
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.entries = parseEntries(cfg.Servers)
	o.applyEntries() // the IP addresses; names are resolved by Start
	o.encs.New = func() any { return forwardproto.NewEncoder() }
	o.frames.New = func() any { return new([]byte) }
	o.held = newByteGate(int64(cfg.MaxInFlightBytes))
	return o, nil
}

// Start loads the sender id from data_dir, making it the first time.
func (o *Output) Start(context.Context) error {
	id, err := loadSenderID(o.set.DataDir, o.set.Name, o.log)
	if err != nil {
		return fmt.Errorf("forward output %s: sender id: %w", o.set.Name, err)
	}
	o.sender, o.salt = id, saltOf(id)
	if o.hasNames() {
		ok := o.resolveAll()
		if !ok || o.cfg.ResolveInterval > 0 {
			o.wg.Add(1)
			go o.resolveLoop(ok)
		}
	}
	o.log.Info("forward output ready", zap.Strings("servers", o.cfg.Servers), zap.Strings("addresses", o.Servers()), zap.String("sender_id", fmt.Sprintf("%x", id[:])),
		zap.Bool("require_ack", o.cfg.RequireAck), zap.String("compress", o.cfg.Compress), zap.Bool("tls", o.tlsConf != nil), zap.Bool("shared_key", o.cfg.SharedKey != ""))
	return nil
}

// SenderID is the id every chunk id of this output starts with.
func (o *Output) SenderID() [6]byte { return o.sender }

// MaxInFlight implements pipeline.PipelinedOutput.
func (o *Output) MaxInFlight() int { return o.cfg.MaxInFlight }

// RecyclesBatches implements pipeline.BatchRecycler: b.Entries are read
// to encode the frame (sendFast, deliver), or written out as they are
// (sendFast), always before done: a fast-sent chunk answered while its
// frame is being written (a cancelled context, a closed connection) is
// answered once the write returned.
func (o *Output) RecyclesBatches() bool { return true }

// Write delivers b and waits for the outcome; the runner uses WriteAsync.
func (o *Output) Write(ctx context.Context, b pipeline.Batch) error {
	ch := make(chan error, 1)
	o.WriteAsync(ctx, b, func(err error) { ch <- err })
	return <-ch
}

// WriteAsync implements pipeline.PipelinedOutput: it writes b itself when
// its server's connection is up and free and the partition's previous
// chunk was written (see fastSend), else it delivers b on a goroutine of
// its own; it calls done(nil) once the receiver acknowledged
// it (or, without require_ack, once it was written). Failures are retried
// until ctx ends (done(ctx.Err())) or the output is stopped
// (done(ErrStopped)). Chunks of one partition are first written in the
// order WriteAsync was called for them.
//
// WriteAsync blocks while the chunks in flight hold max_in_flight_bytes
// (until ctx ends or the output stops: done then gets the error), so that
// the caller reads no further from the buffer: what the output holds in
// memory is bounded in bytes, not only in chunks.
func (o *Output) WriteAsync(ctx context.Context, b pipeline.Batch, done func(error)) {
	if b.Partition < 0 || b.Partition > math.MaxUint16 {
		done(pipeline.Permanent(fmt.Errorf("partition %d does not fit a chunk id", b.Partition)))
		return
	}
	o.mu.RLock()
	if o.stopped {
		o.mu.RUnlock()
		done(ErrStopped)
		return
	}
	o.wg.Add(1)
	o.mu.RUnlock()
	n := int64(max(len(b.Entries), b.Held)) // the memory it pins, not only its events
	if !o.held.acquire(ctx, o.ctx, n) {
		o.wg.Done()
		if ctx.Err() != nil {
			done(ctx.Err())
		} else {
			done(ErrStopped)
		}
		return
	}
	reply := done
	done = func(err error) {
		o.held.release(n)
		reply(err)
	}
	for p := int32(b.Partition); ; {
		m := o.maxPart.Load()
		if p <= m || o.maxPart.CompareAndSwap(m, p) {
			break
		}
	}

	next := make(chan struct{})
	o.laneMu.Lock()
	prev := o.lanes[b.Partition]
	o.lanes[b.Partition] = next
	o.laneMu.Unlock()
	if laneFree(prev) && o.sendFast(ctx, b, done, next) {
		return
	}
	go o.deliver(ctx, b, done, prev, next)
}

// laneFree says whether the partition's previous chunk was written.
func laneFree(prev <-chan struct{}) bool {
	if prev == nil {
		return true
	}
	select {
	case <-prev:
		return true
	default:
		return false
	}
}

// deliver encodes b, waits for its turn in the partition, and sends it
// until it is acknowledged, ctx ends or the output stops.
func (o *Output) deliver(ctx context.Context, b pipeline.Batch, reply func(error), prev <-chan struct{}, next chan struct{}) {
	defer o.wg.Done()
	o.m.inflight.Inc()
	done := func(err error) {
		o.m.inflight.Dec()
		reply(err)
	}
	released := false
	release := func() { // lets the partition's next chunk be written
		if !released {
			released = true
			close(next)
		}
	}
	defer release()

	chunk := ""
	if o.cfg.RequireAck {
		chunk = forwardproto.EpochChunkID(o.sender, b.Epoch, uint16(b.Partition), b.Offset)
	}
	// The frame is encoded once a server is there to take it, and given
	// back once sent: a chunk waiting for its turn or for a server holds
	// only its events.
	var frame []byte
	var fp *[]byte
	defer func() {
		if fp != nil {
			o.frames.Put(fp)
		}
	}()

	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
			done(ctx.Err())
			return
		case <-o.ctx.Done():
			done(ErrStopped)
			return
		}
	}
	for sends := 0; ; {
		wake := o.wakeChan()
		s := o.pick(b.Partition)
		if s == nil {
			// Every server is down: wait until a probe brings one back.
			t := time.NewTimer(o.cfg.RetryMax.D())
			select {
			case <-wake:
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				done(ctx.Err())
				return
			case <-o.ctx.Done():
				t.Stop()
				done(ErrStopped)
				return
			}
			t.Stop()
			continue
		}
		if fp == nil {
			fp = o.frames.Get().(*[]byte)
			enc := o.encs.Get().(*forwardproto.Encoder)
			f, err := enc.AppendPackedForward((*fp)[:0], b.Tag, b.Entries, b.Count, chunk, o.comp)
			o.encs.Put(enc)
			*fp, frame = f, f
			if err != nil {
				done(pipeline.Permanent(fmt.Errorf("encode chunk: %w", err)))
				return
			}
		}
		if sends++; sends > 1 {
			o.set.Metrics.Retries.Inc()
		}
		err := s.send(ctx, chunk, frame, release)
		if err == nil {
			done(nil)
			return
		}
		switch {
		case ctx.Err() != nil:
			done(ctx.Err())
			return
		case o.ctx.Err() != nil:
			done(ErrStopped)
			return
		}
		o.log.Debug("chunk not delivered; sending it again", zap.String("server", s.addr), zap.Int("partition", b.Partition), zap.Uint64("offset", b.Offset), zap.Int("attempt", sends), zap.Error(err))
	}
}

func (o *Output) wakeChan() <-chan struct{} {
	o.wakeMu.Lock()
	defer o.wakeMu.Unlock()
	return o.wake
}

// notify wakes every chunk waiting for a server to come back.
func (o *Output) notify() {
	o.wakeMu.Lock()
	close(o.wake)
	o.wake = make(chan struct{})
	o.wakeMu.Unlock()
}

// Stop ends every delivery still in flight (done(ErrStopped): the chunks
// stay buffered), closes the connections and waits for every goroutine of
// the output.
func (o *Output) Stop(context.Context) error {
	o.mu.Lock()
	o.stopped = true
	o.mu.Unlock()
	o.cancel()
	o.srvMu.Lock()
	all := append([]*server(nil), o.servers...)
	for _, s := range o.draining {
		all = append(all, s)
	}
	o.srvMu.Unlock()
	for _, s := range all {
		s.stop(ErrStopped)
	}
	o.wg.Wait()
	return nil
}
