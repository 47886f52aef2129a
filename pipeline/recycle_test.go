package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// sizedInput emits one chunk per size: one event whose record carries that
// many bytes, different in every chunk.
type sizedInput struct {
	sizes []int
	wg    sync.WaitGroup
}

func (in *sizedInput) Start(ctx context.Context, emit pipeline.Emitter) error {
	for i, n := range in.sizes {
		pad := bytes.Repeat([]byte{byte(i + 1)}, n)
		rec := mpack.AppendMapHeader(nil, 1)
		rec = mpack.AppendString(rec, "pad")
		rec = mpack.AppendBin(rec, pad)
		in.wg.Add(1)
		if err := emit.Emit(ctx, pipeline.Chunk{Tag: "t", Entries: mpack.AppendEntry(nil, mpack.EventTime{Sec: 1}, rec), Count: 1}, func(error) { in.wg.Done() }); err != nil {
			return err
		}
	}
	return nil
}

func (in *sizedInput) Stop(context.Context) error { in.wg.Wait(); return nil }

// holdOutput keeps every batch it is given, b.Entries as they are (not
// copied), beside a copy taken when it was given, and completes them when
// told to.
type holdOutput struct {
	recycles bool
	mu       sync.Mutex
	held     []heldBatch
}

type heldBatch struct {
	alias, copy []byte
	held        int // Batch.Held
	done        func(error)
}

func (o *holdOutput) Start(context.Context) error                 { return nil }
func (o *holdOutput) Stop(context.Context) error                  { return nil }
func (o *holdOutput) MaxInFlight() int                            { return 4 }
func (o *holdOutput) RecyclesBatches() bool                       { return o.recycles }
func (o *holdOutput) Write(context.Context, pipeline.Batch) error { return nil }

func (o *holdOutput) WriteAsync(_ context.Context, b pipeline.Batch, done func(error)) {
	o.mu.Lock()
	o.held = append(o.held, heldBatch{alias: b.Entries, copy: append([]byte(nil), b.Entries...), held: b.Held, done: done})
	o.mu.Unlock()
}

func (o *holdOutput) batches() []heldBatch {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]heldBatch(nil), o.held...)
}

// TestRunnerRecyclesBatchesAfterDone: the runner gives a batch's memory
// back to the buffer only once done was called, and only for an output
// that says it may (BatchRecycler): batches in flight, and every batch of
// an output that keeps them, keep their bytes while later records are read.
func TestRunnerRecyclesBatchesAfterDone(t *testing.T) {
	// small, large (a read buffer of its own) and larger than a read buffer
	sizes := []int{100, 200 << 10, 5 << 10, 300 << 10, 150 << 10, 10, 70 << 10, 250 << 10, 1 << 10, 180 << 10, 90 << 10, 20 << 10}
	for _, recycles := range []bool{true, false} {
		t.Run(fmt.Sprintf("recycles=%v", recycles), func(t *testing.T) {
			buf, err := broker.Open(t.TempDir(), broker.WithPartitions(1), broker.WithSync(broker.SyncNone))
			if err != nil {
				t.Fatal(err)
			}
			defer buf.Close()
			in := &sizedInput{sizes: sizes}
			out := &holdOutput{recycles: recycles}
			r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{comp("in", pipeline.KindInput, "", in)}, nil,
				[]pipeline.Component{comp("out", pipeline.KindOutput, "**", out)})
			if err := r.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Complete the batches one at a time, oldest first, while the
			// runner reads on (up to 4 in flight); each is intact when done.
			for i := range sizes {
				var b heldBatch
				testutil.CheckFor(t, 5*time.Second, func() error {
					bs := out.batches()
					if len(bs) <= i {
						return fmt.Errorf("%d batches of %d given", len(bs), i+1)
					}
					b = bs[i]
					return nil
				})
				if !bytes.Equal(b.alias, b.copy) {
					t.Fatalf("batch %d changed while in flight", i)
				}
				b.done(nil)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := r.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			// Held says what each batch pins: its pooled read memory, more
			// than its entries for the small ones
			larger := 0
			for i, b := range out.batches() {
				if b.held < len(b.alias) {
					t.Fatalf("batch %d: Held %d, less than its %d bytes of entries", i, b.held, len(b.alias))
				}
				if b.held > len(b.alias) {
					larger++
				}
			}
			if larger == 0 {
				t.Fatal("no batch pins more than its entries: Held is not the pooled memory's")
			}
			if !recycles {
				for i, b := range out.batches() {
					if !bytes.Equal(b.alias, b.copy) {
						t.Fatalf("batch %d of an output that does not recycle changed after done", i)
					}
				}
			}
		})
	}
}

// ownInput emits chunks of one event each, of varied sizes, in pooled
// memory it hands over with them (Chunk.Own), the entries in the middle of
// it as a request's are in its frame. Tags say what the filter does.
type ownInput struct {
	n  int
	wg sync.WaitGroup
}

var ownSizes = []int{100, 200 << 10, 5 << 10, 300 << 10, 70 << 10, 10, 250 << 10, 1 << 10}

func ownTag(i int) string {
	return []string{"keep", "rewrite", "keep", "drop", "keep"}[i%5] + "." + strconv.Itoa(i)
}

func (in *ownInput) Start(ctx context.Context, emit pipeline.Emitter) error {
	go func() {
		for i := range in.n {
			rec := mpack.AppendMapHeader(nil, 1)
			rec = mpack.AppendString(rec, "pad")
			rec = mpack.AppendBin(rec, bytes.Repeat([]byte{byte(i%250 + 1)}, ownSizes[i%len(ownSizes)]))
			e := mpack.AppendEntry(nil, mpack.EventTime{Sec: 1}, rec)
			own := broker.GetBuffer(len(e) + 13)
			entries := (*own)[13 : 13+len(e)]
			copy(entries, e)
			in.wg.Add(1)
			if err := emit.Emit(ctx, pipeline.Chunk{Tag: ownTag(i), Entries: entries, Count: 1, Own: own}, func(error) { in.wg.Done() }); err != nil {
				in.wg.Done()
				broker.PutBuffer(own)
				return
			}
		}
	}()
	return nil
}

func (in *ownInput) Stop(context.Context) error { in.wg.Wait(); return nil }

// rewriteFilter copies the entries of rewrite.* chunks and drops drop.*.
type rewriteFilter struct{}

func (rewriteFilter) Filter(c pipeline.Chunk) (pipeline.Chunk, error) {
	if c.Own != nil {
		return c, errors.New("a filter was given Own")
	}
	if strings.HasPrefix(c.Tag, "drop.") {
		return pipeline.Chunk{Tag: c.Tag}, nil
	}
	return pipeline.Chunk{Tag: c.Tag, Entries: append([]byte(nil), c.Entries...), Count: c.Count}, nil
}

// checkOutput checks every batch's bytes against what its tag says.
type checkOutput struct {
	mu   sync.Mutex
	got  int
	errs []string
}

func (o *checkOutput) Start(context.Context) error                 { return nil }
func (o *checkOutput) Stop(context.Context) error                  { return nil }
func (o *checkOutput) MaxInFlight() int                            { return 4 }
func (o *checkOutput) RecyclesBatches() bool                       { return true }
func (o *checkOutput) Write(context.Context, pipeline.Batch) error { return nil }

func (o *checkOutput) WriteAsync(_ context.Context, b pipeline.Batch, done func(error)) {
	_, num, _ := strings.Cut(b.Tag, ".")
	i, _ := strconv.Atoi(num)
	err := mpack.ForEachEntry(b.Entries, func(_ mpack.EventTime, rec []byte) error {
		_, h, err := mpack.ReadMapHeader(rec)
		if err != nil {
			return err
		}
		_, kn, err := mpack.ReadString(rec[h:])
		if err != nil {
			return err
		}
		pad, _, err := mpack.ReadString(rec[h+kn:])
		if err != nil {
			return err
		}
		if len(pad) != ownSizes[i%len(ownSizes)] || len(bytes.Trim(pad, string([]byte{byte(i%250 + 1)}))) != 0 {
			return fmt.Errorf("%d bytes of pad, not all %d", len(pad), i%250+1)
		}
		return nil
	})
	o.mu.Lock()
	o.got++
	if err != nil {
		o.errs = append(o.errs, b.Tag+": "+err.Error())
	}
	o.mu.Unlock()
	done(nil)
}

// TestEmitOwnedMemory: chunks whose memory the input hands over reach the
// output intact, whether the buffer kept that memory (read right behind the
// writer), a filter copied the entries, or dropped them, while the memory
// of delivered batches is reused for later ones.
func TestEmitOwnedMemory(t *testing.T) {
	buf, err := broker.Open(t.TempDir(), broker.WithPartitions(2), broker.WithSync(broker.SyncAlways))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	const n = 300
	in := &ownInput{n: n}
	out := &checkOutput{}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{comp("in", pipeline.KindInput, "", in)},
		[]pipeline.Component{comp("f", pipeline.KindFilter, "{rewrite,drop}.**", rewriteFilter{})},
		[]pipeline.Component{comp("out", pipeline.KindOutput, "**", out)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := n - n/5 // drop.* never reach the buffer
	testutil.CheckFor(t, 20*time.Second, func() error {
		out.mu.Lock()
		defer out.mu.Unlock()
		if out.got < want {
			return fmt.Errorf("%d of %d batches delivered", out.got, want)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if len(out.errs) > 0 || out.got != want {
		t.Fatalf("%d batches (want %d), %d wrong: %v", out.got, want, len(out.errs), out.errs[:min(len(out.errs), 5)])
	}
	if st := buf.Stats(); st.TailReads == 0 {
		t.Fatal("no batch was read from the memory handed over")
	}
}
