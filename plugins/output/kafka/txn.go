package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
)

// Exactly once (exactly_once: true): see the package doc, "Exactly once".
//
// Every buffer partition has a worker with a transactional client of its
// own. The worker takes the batches of its partition in offset order,
// groups those that arrive within linger (up to max_in_flight), and for a
// group: begins a transaction, produces the group's messages, commits its
// progress (the epoch and offset+1 of the group's last batch) as the
// offset of partition 0 of the progress topic in the group named like the
// transactional id, and commits the transaction. Only then are the
// batches done and may the runner's cursor move. Any failure aborts the
// transaction, reads the committed progress again and retries the batches
// it does not cover.

// txnTimeout is how long Kafka lets a transaction stay open: a process
// killed mid-transaction and never started again holds read_committed
// consumers of the partitions it wrote back for this long at most (a
// restarted one fences and aborts it at once).
const txnTimeout = 60 * time.Second

// progressMetaFormat is the metadata of a progress commit: the buffer
// epoch of the last batch committed and the buffer partition.
const progressMetaFormat = "logship/1 epoch=%d partition=%d"

// progress is how far a committed transaction got in one buffer
// partition: the epoch and the next offset (offset+1) of the last batch it
// included. The zero progress covers nothing.
type progress struct{ epoch, next uint64 }

// covers reports whether b was delivered by a committed transaction (the
// rule of the file output's state): its offset is below the next one, and
// its epoch is the recorded one, an older one of the same buffer
// incarnation (offsets are never reused within an epoch, and epochs only
// grow along a partition's log), or 0 (a record stored before the buffer
// had epochs). A batch of a newer epoch or of another incarnation (a
// recreated buffer) is not covered: it is produced.
func (p progress) covers(b pipeline.Batch) bool {
	if b.Offset >= p.next {
		return false
	}
	return b.Epoch == p.epoch || b.Epoch == 0 || (b.Epoch>>32 == p.epoch>>32 && b.Epoch < p.epoch)
}

// progressMeta is the offset commit metadata recording p's epoch.
func progressMeta(epoch uint64, partition int) string {
	return fmt.Sprintf(progressMetaFormat, epoch, partition)
}

// parseProgress reads a committed progress back: offset is the next
// buffer offset, meta what progressMeta wrote. A negative offset (nothing
// committed) is the zero progress.
func parseProgress(offset int64, meta string, partition int) (progress, error) {
	if offset < 0 {
		return progress{}, nil
	}
	var epoch uint64
	var part int
	if n, err := fmt.Sscanf(meta, progressMetaFormat, &epoch, &part); err != nil || n != 2 {
		return progress{}, fmt.Errorf("committed progress metadata %q is not logship's", meta)
	}
	if part != partition {
		return progress{}, fmt.Errorf("committed progress metadata %q is for buffer partition %d, not %d", meta, part, partition)
	}
	return progress{epoch: epoch, next: uint64(offset)}, nil
}

// TransactionalID is the transactional id, and the consumer group holding
// the progress, of the output's producer for one buffer partition.
func TransactionalID(name string, sender [6]byte, partition int) string {
	return fmt.Sprintf("logship-out.%s.%x.%d", name, sender[:], partition)
}

// errRetryAlone says that Kafka refused a batch as too large: the next
// attempt produces the messages one at a time, and drops those too large
// alone.
var errRetryAlone = errors.New("a record batch was too large")

// txnPart is the worker of one buffer partition.
type txnPart struct {
	o  *Output
	p  int
	id string
	in chan *job

	// Owned by the worker goroutine.
	cl      *kgo.Client
	topicID [16]byte
	prog    progress
	loaded  bool // prog is what Kafka has committed
	drops   []droppedRec
}

type droppedRec struct {
	r      *kgo.Record
	reason string
	err    error
}

// txnWrite hands j to its partition's worker.
func (o *Output) txnWrite(j *job) {
	w, err := o.txnWorker(j.b.Partition)
	if err != nil {
		j.end(err)
		return
	}
	select {
	case w.in <- j:
	case <-j.ctx.Done():
		j.end(j.ctx.Err())
	case <-o.ctx.Done():
		j.end(ErrStopped)
	}
}

// txnWorker returns the worker of partition p, starting it the first time.
func (o *Output) txnWorker(p int) (*txnPart, error) {
	o.txnMu.Lock()
	defer o.txnMu.Unlock()
	if w := o.txnParts[p]; w != nil {
		return w, nil
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.stopped {
		return nil, ErrStopped
	}
	w := &txnPart{o: o, p: p, id: TransactionalID(o.set.Name, o.sender, p), in: make(chan *job, o.cfg.MaxInFlight)}
	o.txnParts[p] = w
	o.wg.Add(1)
	go w.run()
	return w, nil
}

// stopTxn ends the jobs still queued once the workers are gone.
func (o *Output) stopTxn() {
	o.txnMu.Lock()
	defer o.txnMu.Unlock()
	for _, w := range o.txnParts {
		for {
			select {
			case j := <-w.in:
				j.end(ErrStopped)
				continue
			default:
			}
			break
		}
	}
}

func (w *txnPart) run() {
	o := w.o
	defer o.wg.Done()
	defer func() {
		if w.cl != nil {
			w.cl.Close()
		}
	}()
	group := make([]*job, 0, o.cfg.MaxInFlight)
	for {
		select {
		case j := <-w.in:
			group = append(group[:0], j)
		case <-o.ctx.Done():
			return
		}
		if len(group) < o.cfg.MaxInFlight {
			linger := time.NewTimer(o.cfg.Linger.D())
		collect:
			for len(group) < o.cfg.MaxInFlight {
				select {
				case j := <-w.in:
					group = append(group, j)
				case <-linger.C:
					break collect
				case <-o.ctx.Done():
					break collect
				}
			}
			linger.Stop()
		}
		w.deliver(group)
		clear(group)
	}
}

// deliver produces group in transactions until one commits, skipping the
// batches a committed transaction already covers; every job of group is
// ended when it returns.
func (w *txnPart) deliver(group []*job) {
	o := w.o
	start := time.Now()
	backoff := o.cfg.RetryMin.D()
	alone := false
	endAll := func(err error) {
		for _, j := range group {
			j.end(err)
		}
	}
	for attempt := 1; ; attempt++ {
		err := w.ready()
		if err == nil {
			group = w.skipCovered(group)
			if len(group) == 0 {
				return
			}
			err = w.transact(group, alone)
			if err == nil {
				o.m.latency.Observe(time.Since(start).Seconds())
				if o.afterCommit != nil {
					o.afterCommit(w.p)
				}
				endAll(nil)
				return
			}
		}
		w.abort()
		w.applyDrops(group)
		retryAlone := errors.Is(err, errRetryAlone) && !alone
		alone = alone || errors.Is(err, errRetryAlone)
		if ctx := group[0].ctx; ctx.Err() != nil {
			endAll(ctx.Err())
			return
		}
		if o.ctx.Err() != nil {
			endAll(ErrStopped)
			return
		}
		o.set.Metrics.Retries.Inc()
		wait := backoff/2 + rand.N(backoff/2+1)
		if retryAlone {
			wait = 0
		} else {
			backoff = min(2*backoff, o.cfg.RetryMax.D())
		}
		o.rl.Warn("txn_retry", "a transaction did not commit; it was aborted and its batches are produced again in a new one (they wait in the buffer meanwhile)",
			zap.Int("partition", w.p), zap.Int("batches", len(group)), zap.Int("attempt", attempt), zap.Duration("in", wait),
			zap.String("transactional_id", w.id), zap.Error(err))
		select {
		case <-time.After(wait):
		case <-group[0].ctx.Done():
			endAll(group[0].ctx.Err())
			return
		case <-o.ctx.Done():
			endAll(ErrStopped)
			return
		}
	}
}

// ready makes the transactional client, fencing any earlier producer with
// the same transactional id (a killed process: Kafka aborts its open
// transaction), and then reads the committed progress.
func (w *txnPart) ready() error {
	o := w.o
	if w.cl == nil {
		// Options of its own: kgo.NewClient writes into the compression
		// option's codec slice, so clients made at once must not share it.
		opts, err := o.clientOpts()
		if err != nil {
			return err
		}
		cl, err := kgo.NewClient(append(opts, kgo.TransactionalID(w.id), kgo.TransactionTimeout(txnTimeout))...)
		if err != nil {
			return err
		}
		w.cl, w.loaded = cl, false
	}
	if w.loaded {
		return nil
	}
	ctx, cancel := context.WithTimeout(o.ctx, o.cfg.ConnectTimeout.D())
	defer cancel()
	if _, _, err := w.cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("initializing the transactional producer %s: %w", w.id, err)
	}
	if w.topicID == ([16]byte{}) {
		td, err := o.adm.ListTopics(ctx, o.progressTopic)
		if err != nil {
			return fmt.Errorf("looking up the progress topic %q: %w", o.progressTopic, err)
		}
		d, ok := td[o.progressTopic]
		if !ok || d.Err != nil {
			return fmt.Errorf("progress topic %q: %w", o.progressTopic, errors.Join(ErrTopicMissing, d.Err))
		}
		w.topicID = d.ID
	}
	prog, err := w.fetchProgress(ctx)
	if err != nil {
		return err
	}
	w.prog, w.loaded = prog, true
	return nil
}

// fetchProgress reads the progress the last committed transaction
// recorded (waiting out one still completing: Kafka answers
// UNSTABLE_OFFSET_COMMIT until it is).
func (w *txnPart) fetchProgress(ctx context.Context) (progress, error) {
	o := w.o
	resps, err := o.adm.FetchOffsets(ctx, w.id)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return progress{}, nil
	}
	if err != nil {
		return progress{}, fmt.Errorf("reading the committed progress of group %s: %w", w.id, err)
	}
	r, ok := resps.Lookup(o.progressTopic, 0)
	if !ok {
		return progress{}, nil
	}
	if r.Err != nil {
		return progress{}, fmt.Errorf("reading the committed progress of group %s: %w", w.id, r.Err)
	}
	return parseProgress(r.At, r.Metadata, w.p)
}

// skipCovered ends (done) the jobs of batches a committed transaction
// delivered already, counting their events as duplicates, and returns
// the rest.
func (w *txnPart) skipCovered(group []*job) []*job {
	keep := group[:0]
	for _, j := range group {
		if w.prog.covers(j.b) {
			w.o.set.Metrics.Duplicates.Add(float64(j.b.Count))
			j.end(nil)
			continue
		}
		keep = append(keep, j)
	}
	clear(group[len(keep):])
	return keep
}

// transact produces group in one transaction with its progress.
func (w *txnPart) transact(group []*job, alone bool) error {
	o := w.o
	n := 0
	for _, j := range group {
		n += len(j.recs)
	}
	if n == 0 {
		// Every message was dropped: there is nothing to commit, and
		// the batches produce nothing again if they are read again.
		return nil
	}
	ctx, cancel := context.WithTimeout(o.ctx, o.cfg.DeliveryTimeout.D())
	defer cancel()
	// The runner giving up on the batches (its loop ends) ends the
	// attempt too: the transaction is aborted, the batches stay buffered.
	defer context.AfterFunc(group[0].ctx, cancel)()
	if err := w.cl.BeginTransaction(); err != nil {
		return err
	}
	var mu sync.Mutex
	var firstErr error
	tooLarge := false
	promise := func(r *kgo.Record, err error) {
		if err == nil {
			return
		}
		o.m.produceError(errReason(err))
		mu.Lock()
		defer mu.Unlock()
		large := errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)
		if reason, drop := dropReason(err); drop && (!large || alone) {
			w.drops = append(w.drops, droppedRec{r, reason, err})
		} else if large {
			tooLarge = true
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	for _, j := range group {
		for i := range j.recs {
			r := &j.recs[i]
			r.Context = nil // kgo keeps the context of the last Produce call here
			if alone {
				promise(r, w.cl.ProduceSync(ctx, r).FirstErr())
			} else {
				w.cl.Produce(ctx, r, promise)
			}
		}
	}
	if err := w.cl.Flush(ctx); err != nil {
		return err
	}
	mu.Lock()
	err, large := firstErr, tooLarge
	mu.Unlock()
	if large {
		return fmt.Errorf("%w: %w", errRetryAlone, err)
	}
	if err != nil {
		return err
	}
	last := group[len(group)-1].b
	if err := w.commitProgress(ctx, last); err != nil {
		return err
	}
	if err := w.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("committing the transaction: %w", err)
	}
	w.prog = progress{epoch: last.Epoch, next: last.Offset + 1}
	return nil
}

// commitProgress adds the progress up to b to the open transaction: the
// offset b.Offset+1 of partition 0 of the progress topic in the group
// w.id, with b's epoch in the metadata.
func (w *txnPart) commitProgress(ctx context.Context, b pipeline.Batch) error {
	o := w.o
	pid, epoch, err := w.cl.ProducerID(ctx)
	if err != nil {
		return err
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = w.id, pid, epoch, w.id
	addResp, err := add.RequestWith(ctx, w.cl)
	if err == nil {
		err = kerr.ErrorForCode(addResp.ErrorCode)
	}
	if err != nil {
		return fmt.Errorf("adding the progress to the transaction: %w", err)
	}
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = w.id, w.id, pid, epoch
	req.Generation = -1
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic, rt.TopicID = o.progressTopic, w.topicID // both: whichever the version sends
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition = 0
	rp.Offset = int64(b.Offset + 1)
	rp.LeaderEpoch = -1
	meta := progressMeta(b.Epoch, b.Partition)
	rp.Metadata = &meta
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, w.cl)
	if err != nil {
		return fmt.Errorf("committing the progress in the transaction: %w", err)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("committing the progress in the transaction: %w", err)
			}
		}
	}
	if len(resp.Topics) == 0 {
		return errors.New("committing the progress in the transaction: empty answer")
	}
	return nil
}

// abort ends the open transaction, if any, by aborting it; when that
// fails the client is closed, and the next attempt makes a new one whose
// initialization fences the old producer (Kafka aborts what it left
// open). Either way the progress is read again before the next attempt: a
// commit whose answer was lost may have gone through.
func (w *txnPart) abort() {
	w.loaded = false
	if w.cl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.o.cfg.ConnectTimeout.D())
	defer cancel()
	err := w.cl.AbortBufferedRecords(ctx)
	if err == nil {
		err = w.cl.EndTransaction(ctx, kgo.TryAbort)
	}
	if err != nil {
		w.o.log.Debug("aborting a transaction failed; making a new producer, which fences the old one", zap.String("transactional_id", w.id), zap.Error(err))
		w.cl.Close()
		w.cl = nil
	}
}

// applyDrops removes from the group's jobs the messages Kafka refused for
// good in the aborted attempt, counting and logging each once.
func (w *txnPart) applyDrops(group []*job) {
	if len(w.drops) == 0 {
		return
	}
	gone := make(map[*kgo.Record]bool, len(w.drops))
	for _, d := range w.drops {
		gone[d.r] = true
	}
	for _, j := range group {
		keep := j.recs[:0]
		for i := range j.recs {
			r := &j.recs[i]
			if !gone[r] {
				keep = append(keep, *r)
				continue
			}
			for _, d := range w.drops {
				if d.r == r {
					w.o.drop(d.reason, j.b, fmt.Errorf("topic %q, %d bytes: %w", r.Topic, len(r.Key)+len(r.Value), d.err))
					break
				}
			}
		}
		clear(j.recs[len(keep):])
		j.recs = keep
	}
	w.drops = w.drops[:0]
}
