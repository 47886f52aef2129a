package forward

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
	fwdin "github.com/logship/logship/plugins/input/forward"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a receiver's emitter: it stores nothing but what arrived per
// tag, and acknowledges at once.
type recorder struct {
	mu     sync.Mutex
	events int
	byTag  map[string][]int // tag -> event count of every chunk that came
	hold   bool             // keep chunks unstored (and unacked) until fail
	// holdAfter > 0 sets hold once that many chunks are stored.
	holdAfter int
	stored    int // chunks stored
	held      []pipeline.AckFunc
	failed    error // from fail on: every chunk is refused
}

func newRecorder() *recorder { return &recorder{byTag: map[string][]int{}} }

func (r *recorder) Emit(_ context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	r.mu.Lock()
	switch {
	case r.failed != nil:
		r.mu.Unlock()
		ack(r.failed)
		return nil
	case r.hold:
		r.held = append(r.held, ack)
		r.mu.Unlock()
		return nil
	}
	r.events += c.Count
	r.byTag[c.Tag] = append(r.byTag[c.Tag], c.Count)
	r.stored++
	if r.holdAfter > 0 && r.stored >= r.holdAfter {
		r.hold = true
	}
	r.mu.Unlock()
	ack(nil)
	return nil
}

// holding returns how many chunks wait, unstored.
func (r *recorder) holding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

// fail refuses every held and later chunk: they are never stored or acked.
func (r *recorder) fail(err error) {
	r.mu.Lock()
	r.failed = err
	held := r.held
	r.held = nil
	r.mu.Unlock()
	for _, ack := range held {
		ack(err)
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events
}

func (r *recorder) tags() map[string][]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]int{}
	for k, v := range r.byTag {
		out[k] = append([]int(nil), v...)
	}
	return out
}

// receiver starts our own forward input as a real receiver.
func receiver(t *testing.T, listen string, mod func(*fwdin.Config), em pipeline.Emitter) *fwdin.Input {
	t.Helper()
	cfg := fwdin.Factory().NewConfig().(*fwdin.Config)
	cfg.Listen, cfg.Heartbeat, cfg.SelfHostname = listen, false, "receiver"
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	in, err := fwdin.New(pipeline.Settings{Name: "recv", Type: "forward", DataDir: t.TempDir(), Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "recv")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background(), em); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Stop(context.Background()) })
	return in
}

// newOutput builds and starts a forward output with test-friendly timings.
func newOutput(t testing.TB, dataDir string, log *zap.Logger, mod func(*Config)) *Output {
	t.Helper()
	cfg := defaultConfig()
	cfg.RetryMin, cfg.RetryMax = conftypes.Duration(10*time.Millisecond), conftypes.Duration(100*time.Millisecond)
	cfg.ConnectTimeout = conftypes.Duration(2 * time.Second)
	cfg.SelfHostname = "sender"
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	o, err := New(pipeline.Settings{Name: "fwd", Type: "forward", DataDir: dataDir, Logger: log, Metrics: pipeline.NopMetrics(pipeline.KindOutput, "fwd")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Stop(context.Background()) })
	return o
}

// tagOf names a batch by its place, so receivers can tell what arrived.
func tagOf(p int, off uint64) string { return fmt.Sprintf("t.%d.%d", p, off) }

// makeEntries returns n entries of about size bytes each.
func makeEntries(n, size int) []byte {
	pad := make([]byte, max(0, size-40))
	for i := range pad {
		pad[i] = 'a' + byte(i%26)
	}
	var e, rec []byte
	for i := range n {
		rec = mpack.AppendMapHeader(rec[:0], 2)
		rec = mpack.AppendString(rec, "seq")
		rec = mpack.AppendInt(rec, int64(i))
		rec = mpack.AppendString(rec, "log")
		rec = mpack.AppendStringBytes(rec, pad)
		e = mpack.AppendEntry(e, mpack.EventTime{Sec: 1_700_000_000 + uint32(i), Nsec: 5}, rec)
	}
	return e
}

func batch(p int, off uint64, n int) pipeline.Batch {
	return pipeline.Batch{Chunk: pipeline.Chunk{Tag: tagOf(p, off), Entries: makeEntries(n, 60), Count: n}, Partition: p, Offset: off}
}

// batches makes perPartition batches of n events in each of partitions.
func batches(partitions, perPartition, n int) []pipeline.Batch {
	var bs []pipeline.Batch
	for i := range perPartition {
		for p := range partitions {
			bs = append(bs, batch(p, uint64(100+i), n))
		}
	}
	return bs
}

// result is the outcome of one batch.
type result struct {
	b   pipeline.Batch
	err error
}

// drive hands batches to the output as the runner does: per partition in
// order, at most MaxInFlight at once. It returns a channel of outcomes.
func drive(ctx context.Context, o *Output, bs []pipeline.Batch) <-chan result {
	out := make(chan result, len(bs))
	byPart := map[int][]pipeline.Batch{}
	for _, b := range bs {
		byPart[b.Partition] = append(byPart[b.Partition], b)
	}
	for _, part := range byPart {
		go func() {
			sem := make(chan struct{}, o.MaxInFlight())
			for _, b := range part {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					out <- result{b, ctx.Err()}
					continue
				}
				o.WriteAsync(ctx, b, func(err error) {
					out <- result{b, err}
					<-sem
				})
			}
		}()
	}
	return out
}

// deliverAll drives bs and fails unless every one is delivered within d.
func deliverAll(t *testing.T, o *Output, bs []pipeline.Batch, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	res := drive(ctx, o, bs)
	for range bs {
		r := <-res
		if r.err != nil {
			t.Fatalf("batch %s: %v", r.b.Tag, r.err)
		}
	}
}

// checkAllArrived fails unless every batch arrived, whole, at one of the
// receivers at least once.
func checkAllArrived(t *testing.T, bs []pipeline.Batch, recs ...*recorder) {
	t.Helper()
	got := map[string][]int{}
	for _, r := range recs {
		for tag, counts := range r.tags() {
			got[tag] = append(got[tag], counts...)
		}
	}
	var missing []string
	for _, b := range bs {
		counts := got[b.Tag]
		if len(counts) == 0 {
			missing = append(missing, b.Tag)
			continue
		}
		for _, n := range counts {
			if n != b.Count {
				t.Fatalf("%s arrived with %d events, sent %d", b.Tag, n, b.Count)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Fatalf("%d of %d batches never arrived: %v", len(missing), len(bs), missing)
	}
}

// Fake receiver modes.
const (
	ackNow     = iota // ack every chunk at once
	ackNever          // read but never ack
	ackReverse        // ack in groups of 8, last first
	noRead            // accept, never read (TCP backpressure)
	silent            // close the first connection at once, then accept and say nothing (no HELO)
)

type fakeReq struct {
	tag      string
	count    int
	chunk    string
	hasChunk bool
}

// fakeServer is a minimal forward receiver with controllable acks, for
// the cases our own input is too well-behaved to show.
type fakeServer struct {
	ln    net.Listener
	mode  atomic.Int32
	mu    sync.Mutex
	reqs  []fakeReq
	conns map[net.Conn]struct{}
	seen  atomic.Int32 // connections accepted
	quit  chan struct{}
	wg    sync.WaitGroup
}

func newFakeServer(t *testing.T, mode int) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{ln: ln, conns: map[net.Conn]struct{}{}, quit: make(chan struct{})}
	f.mode.Store(int32(mode))
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *fakeServer) addr() string { return f.ln.Addr().String() }

func (f *fakeServer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.seen.Add(1)
		f.mu.Lock()
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		f.wg.Add(1)
		go f.serve(c)
	}
}

func (f *fakeServer) serve(c net.Conn) {
	defer f.wg.Done()
	defer c.Close()
	switch f.mode.Load() {
	case noRead:
		<-f.quit // the client's frames fill the socket buffers and stall
		return
	case silent:
		if f.seen.Load() > 1 {
			<-f.quit // a handshake that never comes: like a black hole
		}
		return
	}
	dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
	var held []string
	for {
		req, err := dec.Next()
		if err != nil {
			return
		}
		r := fakeReq{tag: req.Tag, count: req.Count, chunk: string(req.Chunk), hasChunk: req.HasChunk}
		f.mu.Lock()
		f.reqs = append(f.reqs, r)
		f.mu.Unlock()
		if !r.hasChunk {
			continue
		}
		switch f.mode.Load() {
		case ackNow:
			if _, err := c.Write(forwardproto.AppendAck(nil, []byte(r.chunk), false)); err != nil {
				return
			}
		case ackReverse:
			held = append(held, r.chunk)
			if len(held) == 8 {
				var out []byte
				for i := len(held) - 1; i >= 0; i-- {
					out = forwardproto.AppendAck(out, []byte(held[i]), false)
				}
				held = held[:0]
				if _, err := c.Write(out); err != nil {
					return
				}
			}
		}
	}
}

func (f *fakeServer) requests() []fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeReq(nil), f.reqs...)
}

func (f *fakeServer) close() {
	close(f.quit)
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// expectNoResult fails if any outcome arrives within d.
func expectNoResult(t *testing.T, res <-chan result, d time.Duration) {
	t.Helper()
	select {
	case r := <-res:
		t.Fatalf("batch %s finished (%v) though it was never acknowledged", r.b.Tag, r.err)
	case <-time.After(d):
	}
}

// waitResults collects n outcomes within d.
func waitResults(t *testing.T, res <-chan result, n int, d time.Duration) []result {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	var out []result
	for len(out) < n {
		select {
		case r := <-res:
			out = append(out, r)
		case <-timer.C:
			t.Fatalf("only %d of %d batches finished within %s", len(out), n, d)
		}
	}
	return out
}
