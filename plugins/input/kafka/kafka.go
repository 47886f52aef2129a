package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/logship/logship/internal/ratelog"
	"github.com/logship/logship/internal/template"
	"github.com/logship/logship/pipeline"
)

// Factory registers the kafka input.
func Factory() pipeline.Factory {
	return pipeline.NewInputFactory("kafka", defaultConfig,
		func(set pipeline.Settings, cfg *Config) (pipeline.Input, error) { return New(set, cfg) })
}

// maxPollRecords bounds the messages one poll hands the input: what it
// holds between a poll and the buffer's acceptance.
const maxPollRecords = 10000

// Retries of a chunk the buffer did not store wait from retryMin, doubling,
// up to retryMax.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 10 * time.Second
)

var _ pipeline.Input = (*Input)(nil)

// Input is a kafka input: one consumer group member.
type Input struct {
	set  pipeline.Settings
	cfg  Config
	log  *zap.Logger
	rl   *ratelog.Logger
	m    *metrics
	tag  *template.Template
	opts []kgo.Opt

	cl   *kgo.Client
	emit pipeline.Emitter
	// clSet is closed once cl is set: kgo calls back (fetch offsets,
	// revocations) from its own goroutines, maybe before NewClient
	// returned.
	clSet chan struct{}

	ctx    context.Context // ends the poll and retry loops
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards parts, every partState and the counters below.
	mu           sync.Mutex
	parts        map[tp]*partState
	pendingBytes int64       // bytes of emitted chunks not acknowledged yet
	inflight     int         // chunks emitted and not acknowledged yet
	retryQ       []*chunkRef // chunks the buffer did not store, to emit again
	space        chan struct{}
	retrySig     chan struct{}

	hurryMu sync.Mutex
	hurry   context.CancelFunc // cancels the batch being emitted: a rebalance waits

	stopping atomic.Bool
	bufs     sync.Pool // *[]byte, the entries of chunks

	// pos is the emitter's, when it keeps source positions: see
	// positions.go.
	pos       pipeline.Positions
	recovered map[tp][]span          // ranges read back from the buffer at Start
	durable   map[tp]kgo.EpochOffset // durable offsets of partitions given up
	// savedFloor is the floor in positions.json (commitAndSave's callers
	// are serialised: the commit loop, then Stop after it ended).
	savedFloor []uint64
	// skipCommit makes commits no-ops: tests use it to stand for a kill
	// before the next commit.
	skipCommit atomic.Bool
}

// tp names a partition.
type tp struct {
	topic string
	part  int32
}

// partState is what the input knows of one partition it owns.
type partState struct {
	tp
	revoked bool
	// queue holds the chunks emitted, in offset order, from the oldest
	// one not acknowledged yet.
	queue    []*chunkRef
	inflight int
	// durable is the offset after the longest run of messages durable in
	// the buffer (Offset -1 until the first acknowledgement): what the
	// group's committed offset moves to.
	durable kgo.EpochOffset
	start   int64 // the first offset polled, for the lag before any ack
	hwm     int64 // the high watermark at the last fetch, -1 unknown
	// lastEnd is the end of the chunk emitted last, or where reading
	// started (-1 unknown): the prev of the next chunk's source.
	lastEnd int64
}

// chunkRef is one emitted chunk, kept until the buffer has it.
type chunkRef struct {
	st       *partState
	c        pipeline.Chunk // Entries owned by the input until done, for retries
	buf      *[]byte
	end      kgo.EpochOffset // the offset after its last message
	done     bool
	attempts int
	ack      pipeline.AckFunc
}

// New builds the input; the client connects in Start.
func New(set pipeline.Settings, cfg *Config) (*Input, error) {
	if set.Logger == nil {
		set.Logger = zap.NewNop()
	}
	if set.Metrics == nil {
		set.Metrics = pipeline.NopMetrics(pipeline.KindInput, set.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	in := &Input{set: set, cfg: *cfg, log: set.Logger, rl: ratelog.New(set.Logger, time.Minute),
		parts: map[tp]*partState{}, durable: map[tp]kgo.EpochOffset{}, space: make(chan struct{}, 1), retrySig: make(chan struct{}, 1)}
	in.tag, _ = parseTag(cfg.Tag) // Validate parsed it
	in.m = newMetrics(set)
	opts, err := clientOpts(&in.cfg, in.log)
	if err != nil {
		return nil, err
	}
	in.opts = append(opts,
		kgo.OnPartitionsAssigned(in.onAssigned),
		kgo.OnPartitionsRevoked(in.onRevoked),
		kgo.OnPartitionsLost(in.onLost),
		kgo.OnPartitionsCallbackBlocked(in.onCallbackBlocked),
		kgo.AutoCommitCallback(in.onAutoCommit),
		kgo.AdjustFetchOffsetsFn(in.adjust),
	)
	in.bufs.New = func() any { b := make([]byte, 0, 64<<10); return &b }
	return in, nil
}

// Start makes the client and starts consuming. Brokers that cannot be
// reached are not an error: the client keeps trying, and says so in the
// log.
func (in *Input) Start(ctx context.Context, emit pipeline.Emitter) error {
	if p, ok := emit.(pipeline.Positions); ok {
		in.pos = p
		in.recoverPositions(ctx)
	}
	in.clSet = make(chan struct{})
	cl, err := kgo.NewClient(in.opts...)
	if err != nil {
		return fmt.Errorf("kafka input %s: %w", in.set.Name, err)
	}
	in.cl = cl
	close(in.clSet)
	in.emit = emit
	in.ctx, in.cancel = context.WithCancel(context.Background())
	in.wg.Add(3)
	go in.pollLoop()
	go in.retryLoop()
	go in.commitLoop()
	return nil
}

// Stop stops fetching, waits until every chunk emitted is durable (or ctx
// is done), commits the offsets of what is durable, and leaves the group,
// which hands the partitions to the other members at once.
func (in *Input) Stop(ctx context.Context) error {
	if in.cl == nil || in.stopping.Swap(true) {
		return nil
	}
	in.cancel()
	in.wg.Wait()
	in.mu.Lock()
	for _, ref := range in.retryQ {
		in.abandonLocked(ref)
	}
	in.retryQ = nil
	in.mu.Unlock()
	waitErr := in.waitAcked(ctx, nil)
	if err := in.commitAndSave(ctx); err != nil {
		in.log.Warn("kafka input: commit at stop failed; what was stored since the last commit is read again at the next start", zap.Error(err))
	}
	// Leaving the group calls onRevoked, which commits again (nothing
	// new) without waiting.
	leaveCtx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout.D())
	_ = in.cl.LeaveGroupContext(leaveCtx)
	cancel()
	in.cl.Close()
	return waitErr
}

// pollLoop fetches, turns messages into chunks and emits them. With
// BlockRebalanceOnPoll, no rebalance runs between a poll and the
// AllowRebalance after its messages were emitted, so the partitions it
// emits for are owned throughout.
func (in *Input) pollLoop() {
	defer in.wg.Done()
	var scratch []byte
	for {
		if !in.waitSpace(in.ctx) {
			return
		}
		batchCtx, cancel := context.WithCancel(in.ctx)
		in.hurryMu.Lock()
		in.hurry = cancel
		in.hurryMu.Unlock()
		fs := in.cl.PollRecords(in.ctx, maxPollRecords)
		if in.ctx.Err() != nil || fs.IsClientClosed() {
			cancel()
			in.cl.AllowRebalance()
			return
		}
		fs.EachError(func(topic string, part int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			in.set.Metrics.Error("fetch")
			in.rl.Warn("fetch", "kafka input: fetch error", zap.String("topic", topic), zap.Int32("partition", part), zap.Error(err))
		})
		var rewind map[string]map[int32]kgo.EpochOffset
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			var at *kgo.Record
			scratch, at = in.processPartition(batchCtx, p, scratch)
			if at != nil {
				if rewind == nil {
					rewind = map[string]map[int32]kgo.EpochOffset{}
				}
				if rewind[at.Topic] == nil {
					rewind[at.Topic] = map[int32]kgo.EpochOffset{}
				}
				rewind[at.Topic][at.Partition] = kgo.EpochOffset{Epoch: at.LeaderEpoch, Offset: at.Offset}
			}
		})
		if len(rewind) > 0 && in.ctx.Err() == nil {
			// A rebalance is waiting: the messages not emitted are
			// fetched again (by this member if it keeps the partition).
			in.cl.SetOffsets(rewind)
		}
		cancel()
		in.hurryMu.Lock()
		in.hurry = nil
		in.hurryMu.Unlock()
		in.cl.AllowRebalance()
		in.updateLag()
	}
}

// onCallbackBlocked is told that a rebalance waits for the poll loop: the
// batch being emitted is cut short.
func (in *Input) onCallbackBlocked(context.Context, *kgo.Client) {
	in.hurryMu.Lock()
	if in.hurry != nil {
		in.hurry()
	}
	in.hurryMu.Unlock()
}

// waitSpace waits until the chunks waiting for the buffer take less than
// max_pending_bytes; false when ctx ends first.
func (in *Input) waitSpace(ctx context.Context) bool {
	for {
		in.mu.Lock()
		full := in.pendingBytes >= int64(in.cfg.MaxPendingBytes)
		in.mu.Unlock()
		if !full {
			return ctx.Err() == nil
		}
		select {
		case <-in.space:
		case <-ctx.Done():
			return false
		}
	}
}

// processPartition emits the messages of one partition of a poll as
// chunks. When ctx ends before every message was emitted it returns the
// first message not emitted.
func (in *Input) processPartition(ctx context.Context, p kgo.FetchTopicPartition, scratch []byte) ([]byte, *kgo.Record) {
	in.mu.Lock()
	st := in.parts[tp{p.Topic, p.Partition}]
	if st != nil {
		st.hwm = p.HighWatermark
		if st.start < 0 {
			st.start = p.Records[0].Offset
		}
	}
	in.mu.Unlock()
	if st == nil {
		// Not assigned: cannot happen while rebalances wait for the poll.
		in.rl.Warn("unowned", "kafka input: messages of a partition not owned, dropped (they stay in Kafka)", zap.String("topic", p.Topic), zap.Int32("partition", p.Partition))
		return scratch, nil
	}
	bp := in.bufs.Get().(*[]byte)
	var (
		entries  = (*bp)[:0]
		carry    []byte // an entry that starts the next chunk
		tag      string
		count    int
		first    int // index of the chunk's first message
		valBytes int
		bad      [4]int
	)
	// flush emits the chunk that ends with message last.
	flush := func(last int) bool {
		if count == 0 {
			return true
		}
		r := p.Records[last]
		*bp = entries
		ref := &chunkRef{st: st, c: pipeline.Chunk{Tag: tag, Entries: entries, Count: count}, buf: bp,
			end: kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}}
		if in.pos != nil {
			in.mu.Lock()
			prev := st.lastEnd
			in.mu.Unlock()
			if prev < 0 {
				prev = p.Records[first].Offset
			}
			ref.c.Source = appendSource(make([]byte, 0, 32+len(p.Topic)), p.Topic, p.Partition, span{prev: prev, end: ref.end.Offset, epoch: ref.end.Epoch})
		}
		ref.ack = func(err error) { in.acked(ref, err) }
		if !in.waitSpace(ctx) || !in.emitChunk(ctx, ref) {
			return false
		}
		in.mu.Lock()
		st.lastEnd = ref.end.Offset
		in.mu.Unlock()
		in.m.consumed(p.Topic, count, valBytes)
		bp = in.bufs.Get().(*[]byte)
		entries, count, valBytes = (*bp)[:0], 0, 0
		return true
	}
	defer func() {
		if bad[badJSON] > 0 {
			in.m.undecoded("bad_json", bad[badJSON])
			in.rl.Warn("bad_json", "kafka input: message values that are not one JSON object, kept as they are", zap.String("key", in.cfg.Key), zap.Int("count", bad[badJSON]))
		}
		if bad[badMsgpack] > 0 {
			in.m.undecoded("bad_msgpack", bad[badMsgpack])
			in.rl.Warn("bad_msgpack", "kafka input: message values that are not one msgpack map, kept as they are", zap.String("key", in.cfg.Key), zap.Int("count", bad[badMsgpack]))
		}
	}()
	maxBytes := int(in.cfg.Batch.MaxBytes)
	for i, r := range p.Records {
		if ctx.Err() != nil {
			in.bufs.Put(bp)
			return scratch, p.Records[first]
		}
		n := len(entries)
		var rec int
		var res decodeResult
		entries, rec, res = in.appendEntry(entries, r)
		bad[res]++
		scratch = in.appendTag(scratch[:0], r, entries[rec:])
		if count > 0 && (string(scratch) != tag || count >= in.cfg.Batch.MaxEvents || len(entries) > maxBytes) {
			// r starts the next chunk: set it aside, emit the others.
			carry = append(carry[:0], entries[n:]...)
			entries = entries[:n]
			if !flush(i - 1) {
				in.bufs.Put(bp)
				return scratch, p.Records[first]
			}
			entries = append(entries, carry...)
			first = i
		}
		if count == 0 && string(scratch) != tag {
			tag = string(scratch)
		}
		count++
		valBytes += len(r.Value)
	}
	if !flush(len(p.Records) - 1) {
		in.bufs.Put(bp)
		return scratch, p.Records[first]
	}
	in.bufs.Put(bp)
	return scratch, nil
}

// appendTag appends the tag of r, whose decoded record is record.
func (in *Input) appendTag(dst []byte, r *kgo.Record, record []byte) []byte {
	if h := in.cfg.TagHeader; h != "" {
		for i := range r.Headers {
			if r.Headers[i].Key == h && len(r.Headers[i].Value) > 0 {
				return append(dst, r.Headers[i].Value...)
			}
		}
	}
	if !in.tag.UsesRecord() {
		record = nil
	}
	dst = in.tag.Append(dst, r.Topic, record)
	if len(dst) == 0 {
		dst = append(dst, r.Topic...)
	}
	return dst
}

// emitChunk registers ref with its partition and emits it. It returns
// false when ctx ended first (the chunk was not emitted) or the partition
// was revoked.
func (in *Input) emitChunk(ctx context.Context, ref *chunkRef) bool {
	st := ref.st
	in.mu.Lock()
	if st.revoked {
		in.mu.Unlock()
		return false
	}
	st.queue = append(st.queue, ref)
	st.inflight++
	in.inflight++
	in.pendingBytes += int64(len(ref.c.Entries))
	in.mu.Unlock()
	err := in.emit.Emit(ctx, ref.c, ref.ack)
	switch {
	case err == nil:
		return true
	case ctx.Err() != nil:
		in.mu.Lock()
		// Not emitted: take it back. It is the newest of its partition.
		if q := st.queue; len(q) > 0 && q[len(q)-1] == ref {
			st.queue = q[:len(q)-1]
		}
		st.inflight--
		in.inflight--
		in.pendingBytes -= int64(len(ref.c.Entries))
		in.mu.Unlock()
		return false
	}
	// Refused: classified like an acknowledgement's error.
	in.acked(ref, err)
	return true
}

// acked learns the fate of a chunk. It runs on the buffer's sync
// goroutine and must not block.
func (in *Input) acked(ref *chunkRef, err error) {
	if err != nil && !pipeline.IsPermanent(err) && in.ctx.Err() != nil {
		// Stopping: not emitted again before the next start, which
		// reads it again since no commit passes it.
		in.mu.Lock()
		in.abandonLocked(ref)
		in.mu.Unlock()
		return
	}
	if err != nil && !pipeline.IsPermanent(err) {
		in.set.Metrics.Error("not_stored")
		in.rl.Warn("not_stored", "kafka input: chunk not stored, emitted again after a pause", zap.Error(err))
		in.mu.Lock()
		in.retryQ = append(in.retryQ, ref)
		in.mu.Unlock()
		notify(in.retrySig)
		return
	}
	if err != nil {
		in.set.Metrics.Dropped("permanent_error", ref.c.Count)
		in.rl.Warn("permanent", "kafka input: chunk refused for good, dropped", zap.Int("events", ref.c.Count), zap.Error(err))
	}
	st := ref.st
	in.mu.Lock()
	ref.done = true
	st.inflight--
	in.inflight--
	in.pendingBytes -= int64(len(ref.c.Entries))
	moved := false
	for len(st.queue) > 0 && st.queue[0].done {
		st.durable = st.queue[0].end
		st.queue[0] = nil
		st.queue = st.queue[1:]
		moved = true
	}
	mark := moved && !st.revoked
	off := st.durable
	in.mu.Unlock()
	in.bufs.Put(ref.buf)
	ref.c.Entries, ref.buf = nil, nil
	if mark {
		in.cl.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{st.topic: {st.part: off}})
	}
	notify(in.space)
}

// abandonLocked gives up on a chunk not stored: it stays in its
// partition's queue, so no commit passes it, and is read again by
// whoever owns the partition next.
func (in *Input) abandonLocked(ref *chunkRef) {
	ref.st.inflight--
	in.inflight--
	in.pendingBytes -= int64(len(ref.c.Entries))
	notify(in.space)
}

// retryLoop emits again the chunks the buffer did not store.
func (in *Input) retryLoop() {
	defer in.wg.Done()
	for {
		select {
		case <-in.ctx.Done():
			return
		case <-in.retrySig:
		}
		in.mu.Lock()
		q := in.retryQ
		in.retryQ = nil
		in.mu.Unlock()
		for i, ref := range q {
			in.mu.Lock()
			revoked := ref.st.revoked
			if revoked {
				in.abandonLocked(ref)
			}
			in.mu.Unlock()
			if revoked {
				continue
			}
			ref.attempts++
			wait := min(retryMin<<min(ref.attempts-1, 10), retryMax)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-in.ctx.Done():
				t.Stop()
			}
			if in.ctx.Err() == nil {
				err := in.emit.Emit(in.ctx, ref.c, ref.ack)
				if err == nil {
					continue
				}
				if in.ctx.Err() == nil {
					in.acked(ref, err)
					continue
				}
			}
			// Stopping: the rest is read again after the next start.
			in.mu.Lock()
			for _, r := range q[i:] {
				in.abandonLocked(r)
			}
			in.mu.Unlock()
			return
		}
	}
}

// onAssigned starts tracking new partitions.
func (in *Input) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for topic, parts := range assigned {
		for _, p := range parts {
			in.parts[tp{topic, p}] = &partState{tp: tp{topic, p}, durable: kgo.EpochOffset{Epoch: -1, Offset: -1}, start: -1, hwm: -1, lastEnd: -1}
			n++
		}
	}
	in.log.Info("kafka input: partitions assigned", zap.Int("partitions", n), zap.Any("assigned", assigned))
}

// onRevoked gives partitions up: it waits (at most revoke_timeout) for
// their chunks still on the way into the buffer and commits what is
// durable, so that the next owner starts where this member stopped.
func (in *Input) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	sts := in.take(revoked)
	if len(sts) == 0 && !in.stopping.Load() {
		// The end of a session that revokes nothing: commit what is
		// marked, as the client's default does.
		in.commit(ctx, cl)
		return
	}
	if !in.stopping.Load() {
		wctx, cancel := context.WithTimeout(ctx, in.cfg.RevokeTimeout.D())
		if in.waitAcked(wctx, sts) != nil {
			n := 0
			in.mu.Lock()
			for _, st := range sts {
				n += st.inflight
			}
			in.mu.Unlock()
			in.m.givenUp.Add(float64(n))
			in.log.Warn("kafka input: revoke_timeout ran out with chunks of revoked partitions not durable yet; their next owner reads them again", zap.Int("chunks", n))
		}
		cancel()
	}
	in.markDurable(sts)
	in.commit(ctx, cl)
	in.m.revoked.Add(float64(len(sts)))
	in.log.Info("kafka input: partitions revoked", zap.Int("partitions", len(sts)), zap.Any("revoked", revoked))
	in.updateLag()
}

// onLost forgets partitions this member no longer owns without a chance
// to commit (it was cut off from the group): their next owner reads what
// was not committed again.
func (in *Input) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	sts := in.take(lost)
	if len(sts) == 0 {
		return
	}
	in.m.revoked.Add(float64(len(sts)))
	in.log.Warn("kafka input: partitions lost; their next owner reads what was not committed again", zap.Int("partitions", len(sts)))
	in.updateLag()
}

// take marks the partitions revoked and stops tracking them.
func (in *Input) take(m map[string][]int32) []*partState {
	in.mu.Lock()
	defer in.mu.Unlock()
	var sts []*partState
	for topic, parts := range m {
		for _, p := range parts {
			k := tp{topic, p}
			if st := in.parts[k]; st != nil {
				st.revoked = true
				if st.durable.Offset >= 0 {
					in.durable[k] = st.durable
				}
				sts = append(sts, st)
				delete(in.parts, k)
				in.m.setLag(topic, 0)
			}
		}
	}
	return sts
}

// waitAcked waits until no chunk of sts (of every partition when sts is
// nil) waits for the buffer, or ctx is done.
func (in *Input) waitAcked(ctx context.Context, sts []*partState) error {
	for {
		in.mu.Lock()
		n := 0
		if sts == nil {
			n = in.inflight
		}
		for _, st := range sts {
			n += st.inflight
		}
		in.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d chunks not durable: %w", n, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// markDurable marks the durable offsets of sts (of every partition when
// nil) for the next commit: an acknowledgement marks its own, but may do
// so after a revoke committed.
func (in *Input) markDurable(sts []*partState) {
	in.mu.Lock()
	if sts == nil {
		for _, st := range in.parts {
			sts = append(sts, st)
		}
	}
	offs := map[string]map[int32]kgo.EpochOffset{}
	for _, st := range sts {
		if st.durable.Offset < 0 {
			continue
		}
		if offs[st.topic] == nil {
			offs[st.topic] = map[int32]kgo.EpochOffset{}
		}
		offs[st.topic][st.part] = st.durable
	}
	in.mu.Unlock()
	if len(offs) > 0 {
		in.cl.MarkCommitOffsets(offs)
	}
}

func (in *Input) commit(ctx context.Context, cl *kgo.Client) {
	if in.skipCommit.Load() {
		return
	}
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		in.m.commitErr.Inc()
		in.rl.Warn("commit", "kafka input: offset commit failed", zap.Error(err))
	}
}

// onAutoCommit counts the periodic commits that failed.
func (in *Input) onAutoCommit(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
	if err == nil && resp != nil {
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 && err == nil {
					err = fmt.Errorf("partition %s/%d: error code %d", t.Topic, p.Partition, p.ErrorCode)
				}
			}
		}
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		in.m.commitErr.Inc()
		in.rl.Warn("commit", "kafka input: offset commit failed; retried with the next one", zap.Error(err))
	}
}

// updateLag sets the lag gauge of every topic this member owns
// partitions of.
func (in *Input) updateLag() {
	in.mu.Lock()
	lag := map[string]int64{}
	for _, st := range in.parts {
		from := st.durable.Offset
		if from < 0 {
			from = st.start
		}
		if st.hwm < 0 || from < 0 {
			lag[st.topic] += 0
			continue
		}
		lag[st.topic] += max(st.hwm-from, 0)
	}
	in.mu.Unlock()
	for t, n := range lag {
		in.m.setLag(t, n)
	}
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// client returns the client from a kgo callback, once Start has set it.
func (in *Input) client() *kgo.Client {
	<-in.clSet
	return in.cl
}
